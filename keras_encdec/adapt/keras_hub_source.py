"""keras-hub Gemma 2 and Gemma 3 models and presets as adaptation sources.

keras-hub objects are taken as the network they actually compute (see
`keras_encdec.adapt.sources`): the attention scale, the sliding windows and
(Gemma 3) the RoPE wavelengths are read from the attention layers, not from
the backbone flags.
"""

import logging
import os

import numpy as np
from keras import ops

from keras_encdec.adapt.source_types import FULL
from keras_encdec.adapt.source_types import GEMMA2
from keras_encdec.adapt.source_types import GEMMA3
from keras_encdec.adapt.source_types import SLIDING
from keras_encdec.adapt.source_types import AdaptationError
from keras_encdec.adapt.source_types import GemmaSource
from keras_encdec.adapt.source_types import gemma2_extras
from keras_encdec.adapt.source_types import identity
from keras_encdec.convert.safetensors_io import CheckpointError

logger = logging.getLogger(__name__)
# keras-hub backbone class -> (family, tokenizer class name).
BACKBONES = {
    "GemmaBackbone": (GEMMA2, "GemmaTokenizer"),
    "Gemma3Backbone": (GEMMA3, "Gemma3Tokenizer"),
}


def to_numpy(variable):
    """A Keras variable's value as numpy, keeping bfloat16 (via ml_dtypes)."""
    if str(variable.dtype) == "bfloat16":
        import ml_dtypes

        value = ops.convert_to_numpy(ops.cast(variable.value, "float32"))
        return value.astype(ml_dtypes.bfloat16)
    return ops.convert_to_numpy(variable.value)


def heads_first_to_middle(w):
    """keras-hub `(heads, d, h)` -> ours `(d, heads, h)` (and back)."""
    return np.transpose(w, (1, 0, 2))


def _preset_backbone_class(preset, config):
    """The keras-hub backbone class name a preset folder or name holds."""
    import keras_hub

    if config is not None:
        class_name = config.get("class_name")
        if class_name not in BACKBONES:
            raise AdaptationError(
                f"'{preset}' holds a keras-hub {class_name!r}, not a Gemma 2 "
                "GemmaBackbone or a Gemma 3 Gemma3Backbone. Only these "
                "checkpoints can be adapted."
            )
        if not os.path.exists(os.path.join(preset, "model.weights.h5")):
            raise CheckpointError(
                f"Missing 'model.weights.h5' in keras-hub preset '{preset}'."
            )
        return class_name
    if preset in keras_hub.models.Gemma3Backbone.presets:
        return "Gemma3Backbone"
    return "GemmaBackbone"


def from_keras_hub_preset(preset, config):
    """Loads a keras-hub Gemma 2 or Gemma 3 preset (folder or name, with
    `config` its `config.json` or None for a name) as a source."""
    import keras_hub

    class_name = _preset_backbone_class(preset, config)
    backbone = getattr(keras_hub.models, class_name).from_preset(preset)
    tokenizer_class = getattr(keras_hub.models, BACKBONES[class_name][1])
    tokenizer = None
    try:
        tokenizer = tokenizer_class.from_preset(preset)
    except Exception as e:  # A preset may legitimately lack a tokenizer.
        logger.warning("No tokenizer in preset '%s' (%s).", preset, e)
    return from_keras_hub(backbone, tokenizer, f"keras-hub preset {preset!r}")


def _check_gemma2(backbone, description):
    missing = [
        flag for flag in ("use_post_attention_norm", "use_post_ffw_norm",
                          "use_sliding_window_attention")
        if not getattr(backbone, flag)
    ]
    if backbone.attention_logit_soft_cap is None:
        missing.append("attention_logit_soft_cap")
    if missing:
        raise AdaptationError(
            f"The {description} is not a Gemma 2 model (Gemma 1?): it lacks "
            f"{missing}. Gemma 2 has post-attention and post-FFW norms, "
            "attention soft-caps and sliding-window layers."
        )


def _check_gemma3(backbone, description):
    missing = [
        flag for flag in ("use_post_attention_norm", "use_post_ffw_norm",
                          "use_query_key_norm")
        if not getattr(backbone, flag)
    ]
    if missing:
        raise AdaptationError(
            f"The {description} is a Gemma3Backbone without {missing}; "
            "Gemma 3 (and T5Gemma 2) has post-attention and post-FFW norms "
            "and query/key norms."
        )
    if backbone.is_embedding_model or backbone.use_bidirectional_attention:
        raise AdaptationError(
            f"The {description} is a bidirectional (embedding) Gemma 3, not "
            "a causal language model."
        )
    if backbone.vision_encoder is not None:
        logger.info(
            "The %s has a vision encoder; only its text model is used.",
            description,
        )


def _one_value(values, what, description):
    if len(values) != 1:
        raise AdaptationError(
            f"The {description} uses several {what} {sorted(values)}; the "
            "adapted model has one."
        )
    return values.pop()


def _gemma3_rope(blocks, description):
    """Source config keys for the per-layer RoPE of a keras-hub Gemma 3."""
    rope = {}
    for kind, sliding in (("global", False), ("local", True)):
        attention = [b.attention for b in blocks
                     if b.attention.use_sliding_window_attention == sliding]
        rope[kind] = (
            _one_value({a.rope_wavelength for a in attention},
                       f"{kind} RoPE wavelengths", description),
            _one_value({a.rope_scaling_factor for a in attention},
                       f"{kind} RoPE scaling factors", description),
        ) if attention else None
    rope["global"] = rope["global"] or rope["local"]
    rope["local"] = rope["local"] or rope["global"]
    return {
        "rope_max_wavelength": rope["global"][0],
        "rope_scaling_factor": rope["global"][1],
        "rope_local_max_wavelength": rope["local"][0],
        "rope_local_scaling_factor": rope["local"][1],
        "family": GEMMA3,
        "use_query_key_norm": True,
    }


def from_keras_hub(backbone, tokenizer=None, description="keras-hub model"):
    """Wraps a keras-hub `GemmaBackbone` (Gemma 2 settings) or
    `Gemma3Backbone` (text) as a source, after checking it."""
    import keras_hub

    if isinstance(backbone, keras_hub.models.Gemma3Backbone):
        family = GEMMA3
        _check_gemma3(backbone, description)
    elif isinstance(backbone, keras_hub.models.GemmaBackbone):
        family = GEMMA2
        _check_gemma2(backbone, description)
    else:
        raise AdaptationError(
            f"The {description} is a {type(backbone).__name__}, not a Gemma 2 "
            "GemmaBackbone or a Gemma 3 Gemma3Backbone. Only Gemma 2 and "
            "Gemma 3 checkpoints can be adapted."
        )
    blocks = backbone.transformer_layers
    attention = blocks[0].attention
    norms = [backbone.layer_norm] + [
        norm for block in blocks for norm in (
            block.pre_attention_norm, block.post_attention_norm,
            block.pre_ffw_norm, block.post_ffw_norm)
    ]
    if family == GEMMA3:
        norms += [n for b in blocks
                  for n in (b.attention.query_norm, b.attention.key_norm)]
    epsilon = _one_value({norm.epsilon for norm in norms}, "norm epsilons",
                         description)
    windows = {b.attention.sliding_window_size for b in blocks
               if b.attention.use_sliding_window_attention}
    if attention.query_head_dim_normalize:
        scalar = backbone.head_dim
    else:
        scalar = backbone.hidden_dim // backbone.num_query_heads
    config = {
        "vocabulary_size": backbone.vocabulary_size,
        "hidden_dim": backbone.hidden_dim,
        # keras-hub's Gemma 2 stores twice the real FFN width.
        "intermediate_dim": backbone.intermediate_dim // (
            2 if family == GEMMA2 else 1),
        "num_layers": backbone.num_layers,
        "num_heads": backbone.num_query_heads,
        "num_kv_heads": backbone.num_key_value_heads,
        "head_dim": backbone.head_dim,
        "layer_types": [
            SLIDING if b.attention.use_sliding_window_attention else FULL
            for b in blocks
        ],
        "sliding_window": windows.pop() if windows else None,
        "attention_logit_soft_cap": backbone.attention_logit_soft_cap,
        "final_logit_soft_cap": backbone.final_logit_soft_cap,
        "query_pre_attn_scalar": scalar,
        "rms_norm_eps": epsilon,
        "hidden_activation": "gelu_approximate",
        "tie_word_embeddings": True,
        "dtype": backbone.dtype_policy.name,
    }
    if family == GEMMA2:  # keras-hub's Gemma 2 hard-codes its wavelength.
        config.update(rope_max_wavelength=10000.0, **gemma2_extras(10000.0))
    else:
        config.update(_gemma3_rope(blocks, description))
    variables = {}
    tensors = {}

    def add(key, variable, transform=identity):
        variables[variable.path] = variable
        tensors[key] = (variable.path, transform)

    add(("embedding", None), backbone.token_embedding.embeddings)
    add(("final_norm", None), backbone.layer_norm.scale)
    for i, block in enumerate(blocks):
        attn = block.attention
        add(("query", i), attn.query_dense.kernel, heads_first_to_middle)
        add(("key", i), attn.key_dense.kernel, heads_first_to_middle)
        add(("value", i), attn.value_dense.kernel, heads_first_to_middle)
        add(("output", i), attn.output_dense.kernel)
        add(("pre_attention_norm", i), block.pre_attention_norm.scale)
        add(("post_attention_norm", i), block.post_attention_norm.scale)
        add(("pre_ffw_norm", i), block.pre_ffw_norm.scale)
        add(("post_ffw_norm", i), block.post_ffw_norm.scale)
        add(("gate", i), block.gating_ffw.kernel)
        add(("up", i), block.gating_ffw_2.kernel)
        add(("down", i), block.ffw_linear.kernel)
        if family == GEMMA3:
            add(("query_norm", i), attn.query_norm.scale)
            add(("key_norm", i), attn.key_norm.scale)
    proto = None if tokenizer is None else tokenizer.proto
    return GemmaSource(
        description, config, tensors,
        lambda name: to_numpy(variables[name]), proto,
    )
