"""Transformers T5Gemma 2 checkpoints to and from keras-encdec.

Import reads a local folder written by
`transformers.T5Gemma2ForConditionalGeneration.save_pretrained` (5.23 keys:
`model.encoder.layers...`, `model.encoder.vision_tower.embeddings...`) or
laid out as the published checkpoints are (`model.encoder.text_model...`,
`...vision_tower.vision_model...`): names are compared after removing the
`text_model.` and `vision_model.` infixes. Export writes the 5.23 layout,
which transformers loads with the same logits; a round trip is
bit-identical. Only JSON and safetensors are read.

The one token table is stored once (`model.encoder.embed_tokens`); the
decoder's copy and the tied LM head, when a file has them, are skipped.
"""

import logging

import numpy as np

from keras_encdec.convert.safetensors_io import CheckpointError
from keras_encdec.convert.safetensors_io import SafetensorsReader
from keras_encdec.convert.safetensors_io import SafetensorsWriter
from keras_encdec.convert.safetensors_io import read_json_config
from keras_encdec.convert.transformers_t5gemma import _ACTIVATIONS
from keras_encdec.convert.transformers_t5gemma import _HF_ACTIVATIONS
from keras_encdec.convert.transformers_t5gemma import _heads_in
from keras_encdec.convert.transformers_t5gemma import _heads_in_back
from keras_encdec.convert.transformers_t5gemma import _heads_out
from keras_encdec.convert.transformers_t5gemma import _heads_out_back
from keras_encdec.convert.transformers_t5gemma import _identity
from keras_encdec.convert.transformers_t5gemma import _to_numpy
from keras_encdec.convert.transformers_t5gemma import _transpose
from keras_encdec.convert.transformers_t5gemma import checkpoint_dtype
from keras_encdec.convert.weight_mapping import WeightAssigner
from keras_encdec.convert.weight_mapping import check_all_assigned
from keras_encdec.convert.transformers_t5gemma2_vision import vision_kwargs
from keras_encdec.convert.transformers_t5gemma2_vision import vision_weight_map

logger = logging.getLogger(__name__)

CONFIG_FILE = "config.json"
MODEL_TYPE = "t5gemma2"
TIED_COPIES = (
    "model.decoder.embed_tokens.weight",
    "model.decoder.embed_tokens.eoi_embedding",
    "lm_head.out_proj.weight",
)
VISION_PREFIXES = ("model.encoder.vision_tower.", "model.encoder.multi_modal_projector.")
_INFIXES = ("text_model.", "vision_model.")


def read_config(folder):
    """Loads and checks a transformers T5Gemma 2 `config.json`."""
    path, config = read_json_config(folder, CONFIG_FILE)
    if config.get("model_type") != MODEL_TYPE:
        raise CheckpointError(
            f"'{path}' is not a T5Gemma 2 config. Received: "
            f"model_type={config.get('model_type')!r}. Expected {MODEL_TYPE!r}."
        )
    for side in ("encoder", "decoder"):
        if not isinstance(config.get(side), dict):
            raise CheckpointError(f"'{path}' has no '{side}' section.")
    if not isinstance(config["encoder"].get("text_config"), dict):
        raise CheckpointError(f"'{path}' has no 'encoder.text_config' section.")
    return config


def _rope(module, side):
    """`(local_base, global_base, global_linear_factor)` of one stack."""
    params = module.get("rope_parameters") or {}
    local = params.get("sliding_attention") or {}
    full = params.get("full_attention") or {}
    if local.get("rope_type", "default") != "default":
        raise CheckpointError(
            f"Only default RoPE on sliding layers is supported. Received: "
            f"{side} sliding_attention rope_type={local.get('rope_type')!r}."
        )
    full_type = full.get("rope_type", "default")
    if full_type not in ("default", "linear"):
        raise CheckpointError(
            "Full-attention RoPE must be 'default' or 'linear'. Received: "
            f"{side} rope_type={full_type!r}."
        )
    factor = float(full.get("factor", 1.0)) if full_type == "linear" else 1.0
    return (
        float(local.get("rope_theta", 10000.0)),
        float(full.get("rope_theta", 1000000.0)),
        factor,
    )


def backbone_kwargs_from_config(config, text_only=False):
    """Maps a transformers T5Gemma 2 config dict to `T5Gemma2Backbone`
    kwargs (without the vision tower when `text_only`)."""
    encoder, decoder = config["encoder"]["text_config"], config["decoder"]
    kwargs = {} if text_only else vision_kwargs(config["encoder"])
    for side, module in (("encoder", encoder), ("decoder", decoder)):
        if module.get("attention_bias"):
            raise CheckpointError(
                f"attention_bias=True is not supported. Received it in the "
                f"{side} config."
            )
        kwargs.update(
            {
                f"{side}_intermediate_dim": module["intermediate_size"],
                f"{side}_num_layers": module["num_hidden_layers"],
                f"{side}_num_heads": module["num_attention_heads"],
                f"{side}_num_kv_heads": module["num_key_value_heads"],
                f"{side}_head_dim": module["head_dim"],
                f"{side}_layer_types": list(module["layer_types"]),
                f"{side}_sliding_window": module.get("sliding_window"),
                f"{side}_query_pre_attn_scalar": module["query_pre_attn_scalar"],
            }
        )
    for name in ("hidden_size", "vocab_size", "rms_norm_eps"):
        if encoder[name] != decoder[name]:
            raise CheckpointError(
                f"Encoder and decoder {name} differ: {encoder[name]} vs "
                f"{decoder[name]}. T5Gemma 2 shares them."
            )
    rope = _rope(encoder, "encoder")
    if _rope(decoder, "decoder") != rope:
        raise CheckpointError(
            "Encoder and decoder RoPE settings differ: "
            f"{_rope(encoder, 'encoder')} vs {_rope(decoder, 'decoder')}."
        )
    activation = decoder.get("hidden_activation", "gelu_pytorch_tanh")
    eoi = config.get("eoi_token_index", config["encoder"].get("eoi_token_index"))
    image = config.get(
        "image_token_index", config["encoder"].get("image_token_index")
    )
    kwargs.update(
        {
            "vocabulary_size": decoder["vocab_size"],
            "hidden_dim": decoder["hidden_size"],
            "rope_local_wavelength": rope[0],
            "rope_global_wavelength": rope[1],
            "rope_scaling_factor": rope[2],
            "final_logit_soft_cap": decoder.get("final_logit_softcapping"),
            "attention_logit_soft_cap": decoder.get("attn_logit_softcapping"),
            "eoi_token_index": eoi,
            "image_token_index": image,
            "rms_norm_eps": decoder["rms_norm_eps"],
            "hidden_activation": _ACTIVATIONS.get(activation, activation),
            "dropout_rate": config.get("dropout_rate", 0.0),
            "attention_dropout": config.get("attention_dropout", 0.0),
            "initializer_range": decoder.get("initializer_range", 0.02),
        }
    )
    return kwargs


def config_from_backbone(backbone, dtype="float32"):
    """Builds a transformers T5Gemma 2 config dict for `backbone`."""
    rope = {
        "sliding_attention": {
            "rope_type": "default",
            "rope_theta": backbone.rope_local_wavelength,
        },
        "full_attention": {
            "rope_type": "default",
            "rope_theta": backbone.rope_global_wavelength,
        },
    }
    if backbone.rope_scaling_factor != 1.0:
        rope["full_attention"].update(
            rope_type="linear", factor=backbone.rope_scaling_factor
        )
    modules = {}
    for side in ("encoder", "decoder"):
        get = lambda name: getattr(backbone, f"{side}_{name}")  # noqa: E731
        modules[side] = {
            "model_type": f"t5gemma2_{'text' if side == 'encoder' else side}",
            "vocab_size": backbone.vocabulary_size,
            "hidden_size": backbone.hidden_dim,
            "intermediate_size": get("intermediate_dim"),
            "num_hidden_layers": get("num_layers"),
            "num_attention_heads": get("num_heads"),
            "num_key_value_heads": get("num_kv_heads"),
            "head_dim": get("head_dim"),
            "layer_types": list(get("layer_types")),
            "sliding_window": get("sliding_window"),
            "attn_logit_softcapping": backbone.attention_logit_soft_cap,
            "final_logit_softcapping": backbone.final_logit_soft_cap,
            "query_pre_attn_scalar": get("query_pre_attn_scalar")
            or get("head_dim"),
            "rope_parameters": {k: dict(v) for k, v in rope.items()},
            "rms_norm_eps": backbone.rms_norm_eps,
            "hidden_activation": _HF_ACTIVATIONS.get(
                backbone.hidden_activation, backbone.hidden_activation
            ),
            "attention_bias": False,
            "initializer_range": backbone.initializer_range,
            "pad_token_id": 0,
            "eos_token_id": 1,
            "bos_token_id": 2,
        }
    encoder = {
        "model_type": "t5gemma2_encoder",
        "text_config": modules["encoder"],
        "eoi_token_index": backbone.eoi_token_index,
        "image_token_index": backbone.image_token_index,
        "mm_tokens_per_image": backbone.mm_tokens_per_image,
    }
    vision = backbone.vision_config
    if vision is not None:
        encoder["vision_config"] = {
            "model_type": "siglip_vision_model",
            "image_size": vision["image_size"],
            "patch_size": vision["patch_size"],
            "hidden_size": vision["hidden_dim"],
            "num_hidden_layers": vision["num_layers"],
            "num_attention_heads": vision["num_heads"],
            "intermediate_size": vision["intermediate_dim"],
            "layer_norm_eps": vision["layer_norm_epsilon"],
            "hidden_act": "gelu_pytorch_tanh",
            "num_channels": 3,
            "vision_use_head": False,
        }
    return {
        "architectures": ["T5Gemma2ForConditionalGeneration"],
        "model_type": MODEL_TYPE,
        "encoder": encoder,
        "decoder": modules["decoder"],
        "is_encoder_decoder": True,
        "tie_word_embeddings": True,
        "vocab_size": backbone.vocabulary_size,
        "dropout_rate": backbone.dropout_rate,
        "attention_dropout": backbone.attention_dropout,
        "eoi_token_index": backbone.eoi_token_index,
        "image_token_index": backbone.image_token_index,
        "pad_token_id": 0,
        "eos_token_id": 1,
        "bos_token_id": 2,
        "decoder_start_token_id": 2,
        "dtype": dtype,
    }


def canonical_name(name):
    """A checkpoint key without the `text_model.` / `vision_model.` infixes
    (the 5.23 `save_pretrained` layout)."""
    for infix in _INFIXES:
        name = name.replace(infix, "")
    return name


def weight_map(backbone):
    """Yields `(variable, hf_name, to_keras, to_hf)` for every text weight
    (5.23 key names); the encoder's only for a `T5Gemma2EncoderModel`."""
    embedding = backbone.token_embedding
    yield embedding.embeddings, "model.encoder.embed_tokens.weight", (
        _identity
    ), _identity
    yield embedding.eoi_embedding, "model.encoder.embed_tokens.eoi_embedding", (
        _identity
    ), _identity
    sides = [("encoder", backbone.encoder_layers, backbone.encoder_norm)]
    if hasattr(backbone, "decoder_layers"):
        sides.append(("decoder", backbone.decoder_layers, backbone.decoder_norm))
    for side, layers, norm in sides:
        yield norm.scale, f"model.{side}.norm.weight", _identity, _identity
        for i, layer in enumerate(layers):
            prefix = f"model.{side}.layers.{i}"
            attention = layer.self_attention
            heads, kv_heads = attention.num_heads, attention.num_kv_heads
            head_dim = attention.head_dim
            base = f"{prefix}.self_attn"
            for dense, name, count in (
                (attention.query_dense, "q_proj", heads),
                (attention.key_dense, "k_proj", kv_heads),
                (attention.value_dense, "v_proj", kv_heads),
            ):
                yield dense.kernel, f"{base}.{name}.weight", _heads_in(
                    count, head_dim
                ), _heads_in_back
            yield attention.output_dense.kernel, f"{base}.o_proj.weight", (
                _heads_out(heads, head_dim)
            ), _heads_out_back
            for norm_layer, name in (
                (attention.query_norm, "q_norm"),
                (attention.key_norm, "k_norm"),
                (layer.pre_self_attention_norm, "pre_self_attn_layernorm"),
                (layer.post_self_attention_norm, "post_self_attn_layernorm"),
                (layer.pre_ffw_norm, "pre_feedforward_layernorm"),
                (layer.post_ffw_norm, "post_feedforward_layernorm"),
            ):
                hf_name = (
                    f"{base}.{name}.weight"
                    if name.endswith("_norm")
                    else f"{prefix}.{name}.weight"
                )
                yield norm_layer.scale, hf_name, _identity, _identity
            for dense, name in (
                (layer.mlp.gating, "gate_proj"),
                (layer.mlp.gating_2, "up_proj"),
                (layer.mlp.linear, "down_proj"),
            ):
                yield dense.kernel, f"{prefix}.mlp.{name}.weight", (
                    _transpose
                ), _transpose


def full_weight_map(backbone):
    """Text weights, then vision weights when the backbone has them."""
    yield from weight_map(backbone)
    if backbone.vision_encoder is not None:
        yield from vision_weight_map(backbone)


def load_transformers_weights(
    backbone, folder, extra_mapping=(), model=None, skip=()
):
    """Streams a transformers T5Gemma 2 checkpoint into `backbone`.

    `extra_mapping` adds `(variable, hf_name, to_keras, to_hf)` entries (a
    classifier head) of `model` (defaults to `backbone`), whose weights
    must then all be assigned; `skip` names tensors left unread."""
    reader = SafetensorsReader(folder)
    names = {}
    for key in reader.keys():
        name = canonical_name(key)
        if name in names:
            raise CheckpointError(
                f"Checkpoint keys '{names[name]}' and '{key}' name the same "
                "weight."
            )
        names[name] = key
    ignored = [name for name in TIED_COPIES + tuple(skip) if name in names]
    vision = []
    if backbone.vision_encoder is None:
        vision = [name for name in names if name.startswith(VISION_PREFIXES)]
        if vision:
            logger.info(
                "Skipping %d vision tensors: this backbone is text-only.",
                len(vision),
            )
    mapping = list(full_weight_map(backbone)) + list(extra_mapping)
    with WeightAssigner(
        lambda name: reader.get(names[name]),
        names,
        total=len(mapping),
        description="Loading transformers T5Gemma 2",
        ignored_sources=ignored + vision,
    ) as assign:
        for variable, name, to_keras, _ in mapping:
            assign(variable, name, to_keras)
    check_all_assigned((model or backbone).weights, assign)


def export_transformers_weights(backbone, folder, max_shard_bytes=2 * 1024**3):
    """Streams `backbone`'s weights into transformers safetensors shards."""
    from tqdm.auto import tqdm

    mapping = list(full_weight_map(backbone))
    with SafetensorsWriter(folder, max_shard_bytes) as writer:
        for variable, name, _, to_hf in tqdm(
            mapping, desc="Exporting to transformers", unit="tensor", leave=False
        ):
            writer.add(name, to_hf(np.asarray(_to_numpy(variable))))


def load_backbone(cls, folder, load_weights=True, text_only=False, **kwargs):
    """Builds `cls` from a transformers T5Gemma 2 folder (without its vision
    tower when `text_only`)."""
    config = read_config(folder)
    if load_weights:
        SafetensorsReader(folder)  # Fail on missing weights before building.
    backbone_kwargs = backbone_kwargs_from_config(config, text_only=text_only)
    backbone_kwargs.update(kwargs)
    if backbone_kwargs.get("dtype") is None:
        backbone_kwargs["dtype"] = checkpoint_dtype(folder, config)
    backbone = cls(**backbone_kwargs)
    if load_weights:
        load_transformers_weights(backbone, folder)
    return backbone
