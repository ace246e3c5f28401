"""keras-hub Gemma 2 models and presets as adaptation sources.

keras-hub objects are taken as the network they actually compute (see
`keras_encdec.adapt.sources`): the attention scale and the sliding windows
are read from the attention layers, not from the backbone flags.
"""

import logging
import os

import numpy as np
from keras import ops

from keras_encdec.adapt.source_types import FULL
from keras_encdec.adapt.source_types import SLIDING
from keras_encdec.adapt.source_types import AdaptationError
from keras_encdec.adapt.source_types import GemmaSource
from keras_encdec.adapt.source_types import identity
from keras_encdec.convert.safetensors_io import CheckpointError
from keras_encdec.errors import log_missing_tokenizer

logger = logging.getLogger(__name__)


def to_numpy(variable):
    """A Keras variable's value as numpy, keeping bfloat16 (via ml_dtypes)."""
    if str(variable.dtype) == "bfloat16":
        import ml_dtypes

        value = ops.convert_to_numpy(ops.cast(variable.value, "float32"))
        return value.astype(ml_dtypes.bfloat16)
    return ops.convert_to_numpy(variable.value)


def _heads_first_to_middle(w):
    """keras-hub `(heads, d, h)` -> ours `(d, heads, h)`."""
    return np.transpose(w, (1, 0, 2))


def from_keras_hub_preset(preset, config):
    import keras_hub

    if config is not None:
        class_name = config.get("class_name")
        if class_name != "GemmaBackbone":
            raise AdaptationError(
                f"'{preset}' holds a keras-hub {class_name!r}, not a Gemma 2 "
                "GemmaBackbone. Only Gemma 2 checkpoints can be adapted."
            )
        if not os.path.exists(os.path.join(preset, "model.weights.h5")):
            raise CheckpointError(
                f"Missing 'model.weights.h5' in keras-hub preset '{preset}'."
            )
    backbone = keras_hub.models.GemmaBackbone.from_preset(preset)
    tokenizer = None
    if os.path.isdir(preset) and not os.path.exists(
        os.path.join(preset, "tokenizer.json")
    ):
        log_missing_tokenizer(preset)  # A preset may lack a tokenizer.
    else:
        tokenizer = keras_hub.models.GemmaTokenizer.from_preset(preset)
    return from_keras_hub(backbone, tokenizer, f"keras-hub preset {preset!r}")


def from_keras_hub(backbone, tokenizer=None, description="keras-hub model"):
    """Wraps a keras-hub Gemma 2 `GemmaBackbone` (checked) as a source."""
    import keras_hub

    if not isinstance(backbone, keras_hub.models.GemmaBackbone):
        raise AdaptationError(
            f"The {description} is a {type(backbone).__name__}, not a Gemma 2 "
            "GemmaBackbone. Only Gemma 2 checkpoints can be adapted."
        )
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
    blocks = backbone.transformer_layers
    attention = blocks[0].attention
    epsilons = {backbone.layer_norm.epsilon} | {
        norm.epsilon for block in blocks for norm in (
            block.pre_attention_norm, block.post_attention_norm,
            block.pre_ffw_norm, block.post_ffw_norm)
    }
    if len(epsilons) != 1:
        raise AdaptationError(
            f"The {description} uses several norm epsilons {sorted(epsilons)}"
            "; T5Gemma has one `rms_norm_eps`."
        )
    windows = {b.attention.sliding_window_size for b in blocks
               if b.attention.use_sliding_window_attention}
    if attention.query_head_dim_normalize:
        scalar = backbone.head_dim
    else:
        scalar = backbone.hidden_dim // backbone.num_query_heads
    config = {
        "vocabulary_size": backbone.vocabulary_size,
        "hidden_dim": backbone.hidden_dim,
        # keras-hub stores twice the real FFN width.
        "intermediate_dim": backbone.intermediate_dim // 2,
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
        "rope_max_wavelength": 10000.0,  # keras-hub Gemma hard-codes it.
        "rms_norm_eps": epsilons.pop(),
        "hidden_activation": "gelu_approximate",
        "tie_word_embeddings": True,
        "dtype": backbone.dtype_policy.name,
    }
    variables = {}
    tensors = {}

    def add(key, variable, transform=identity):
        variables[variable.path] = variable
        tensors[key] = (variable.path, transform)

    add(("embedding", None), backbone.token_embedding.embeddings)
    add(("final_norm", None), backbone.layer_norm.scale)
    for i, block in enumerate(blocks):
        attn = block.attention
        add(("query", i), attn.query_dense.kernel, _heads_first_to_middle)
        add(("key", i), attn.key_dense.kernel, _heads_first_to_middle)
        add(("value", i), attn.value_dense.kernel, _heads_first_to_middle)
        add(("output", i), attn.output_dense.kernel)
        add(("pre_attention_norm", i), block.pre_attention_norm.scale)
        add(("post_attention_norm", i), block.post_attention_norm.scale)
        add(("pre_ffw_norm", i), block.pre_ffw_norm.scale)
        add(("post_ffw_norm", i), block.post_ffw_norm.scale)
        add(("gate", i), block.gating_ffw.kernel)
        add(("up", i), block.gating_ffw_2.kernel)
        add(("down", i), block.ffw_linear.kernel)
    proto = None if tokenizer is None else tokenizer.proto
    return GemmaSource(
        description, config, tensors,
        lambda name: to_numpy(variables[name]), proto,
    )
