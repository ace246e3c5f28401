"""keras-hub `T5Gemma2Backbone` config.json to `T5Gemma2Backbone` kwargs.

See `keras_hub_t5gemma2` (which loads the weights) for the differences
between keras-hub's and this package's numerics.
"""

import logging

from keras_encdec.convert import keras_hub_t5gemma
from keras_encdec.convert.keras_hub_t5gemma import _dtype_name
from keras_encdec.convert.safetensors_io import CheckpointError

logger = logging.getLogger(__name__)

CLASS_NAME = "T5Gemma2Backbone"
GLOBAL_ROPE_BASE = 1_000_000.0  # Hard-coded in keras-hub's backbone.

# keras-hub stack key -> our stack key (prefixed `encoder_` / `decoder_`).
_STACK_KEYS = {
    "intermediate_dim": "intermediate_dim",
    "num_layers": "num_layers",
    "num_attention_heads": "num_heads",
    "num_key_value_heads": "num_kv_heads",
    "head_dim": "head_dim",
    "layer_types": "layer_types",
}
# keras-hub model-wide key -> our key.
_MODEL_KEYS = {
    "vocabulary_size": "vocabulary_size",
    "final_logit_softcapping": "final_logit_soft_cap",
    "attn_logit_softcapping": "attention_logit_soft_cap",
    "rms_norm_eps": "rms_norm_eps",
    "hidden_activation": "hidden_activation",
    "dropout_rate": "dropout_rate",
    "attention_dropout": "attention_dropout",
    "initializer_range": "initializer_range",
    "eoi_token_index": "eoi_token_index",
}
# keras-hub's constructor defaults for optional keys.
_HUB_DEFAULTS = {
    "dropout_rate": 0.0,
    "rms_norm_eps": 1e-6,
    "query_pre_attn_scalar": 1.0,
    "attention_bias": False,
    "hidden_activation": "gelu_approximate",
    "tie_word_embeddings": True,
    "initializer_range": 0.02,
    "attention_dropout": 0.0,
    "sliding_window": None,
    "cross_attention_hidden_size": None,
    "attn_logit_softcapping": None,
    "final_logit_softcapping": None,
    "rope_max_wavelength": 10000.0,
    "global_rope_scaling_factor": 1.0,
    "encoder_rope_max_wavelength": None,
    "encoder_global_rope_scaling_factor": None,
    "use_query_key_norm": True,
    "vision_encoder": None,
    "eoi_token_index": 256000,
}
_OTHER_KEYS = {"name", "trainable", "dtype", "encoder_hidden_dim", "decoder_hidden_dim"}


def read_config(folder):
    """Loads a keras-hub `T5Gemma2Backbone` `config.json`; returns its
    `"config"` dict."""
    return keras_hub_t5gemma.read_config(folder, CLASS_NAME)


def _require(condition, message):
    if not condition:
        raise CheckpointError(message)


def _shared_value(config, name, encoder_name):
    """A keras-hub setting with an optional encoder override, which must be
    unset or equal (this package has one per model)."""
    value, encoder_value = config[name], config[encoder_name]
    _require(
        encoder_value is None or encoder_value == value,
        f"The keras-hub preset sets {encoder_name}={encoder_value!r} and "
        f"{name}={value!r}. keras-encdec's T5Gemma 2 uses one value for "
        "both stacks; expected them equal (or the encoder one unset).",
    )
    return value


def _vision_kwargs(vision, hidden_dim):
    """Our `vision_config` / `mm_tokens_per_image` from keras-hub's
    serialized `Gemma3VisionEncoder`."""
    _require(
        isinstance(vision, dict)
        and vision.get("class_name") == "Gemma3VisionEncoder",
        "Unsupported keras-hub vision encoder. Received: "
        f"{vision.get('class_name') if isinstance(vision, dict) else vision!r}. "
        "Expected a serialized 'Gemma3VisionEncoder'.",
    )
    v = vision["config"]
    _require(
        v["output_dim"] == hidden_dim,
        f"The vision encoder's output_dim ({v['output_dim']}) must equal the "
        f"text width ({hidden_dim}).",
    )
    tokens_per_side = v["image_size"] // v["patch_size"] // v["pool_size"]
    return {
        "vision_config": {
            "image_size": v["image_size"],
            "patch_size": v["patch_size"],
            "hidden_dim": v["hidden_dim"],
            "num_layers": v["num_layers"],
            "num_heads": v["num_heads"],
            "intermediate_dim": v["intermediate_dim"],
            "layer_norm_epsilon": v.get("layer_norm_epsilon", 1e-6),
        },
        "mm_tokens_per_image": tokens_per_side**2,
    }


def backbone_kwargs_from_config(config, text_only=False):
    """Maps a keras-hub `T5Gemma2Backbone` config dict to our
    `T5Gemma2Backbone` kwargs (`dtype` included; no vision tower when
    `text_only`)."""
    known = (
        {f"{s}_{k}" for s in ("encoder", "decoder") for k in _STACK_KEYS}
        | set(_HUB_DEFAULTS)
        | set(_MODEL_KEYS)
        | _OTHER_KEYS
    )
    unknown = sorted(set(config) - known)
    _require(
        not unknown,
        f"Unsupported keras-hub T5Gemma2Backbone settings: {unknown}. "
        f"Expected only these keys: {sorted(known)}.",
    )
    config = {**_HUB_DEFAULTS, **config}
    width = config["encoder_hidden_dim"]
    cross = config["cross_attention_hidden_size"] or width
    _require(
        width == config["decoder_hidden_dim"] == cross,
        "T5Gemma 2 shares one width. Received: encoder_hidden_dim="
        f"{width}, decoder_hidden_dim={config['decoder_hidden_dim']}, "
        f"cross_attention_hidden_size={cross}.",
    )
    for name, expected in (
        ("attention_bias", False),
        ("use_query_key_norm", True),
        ("tie_word_embeddings", True),
    ):
        _require(
            config[name] == expected,
            f"Unsupported keras-hub setting {name}={config[name]!r}. "
            f"Expected {expected!r} (as every published T5Gemma 2).",
        )
    kwargs = {"hidden_dim": width}
    for side in ("encoder", "decoder"):
        for hub_key, key in _STACK_KEYS.items():
            kwargs[f"{side}_{key}"] = config[f"{side}_{hub_key}"]
        kwargs[f"{side}_sliding_window"] = config["sliding_window"]
        kwargs[f"{side}_query_pre_attn_scalar"] = config["query_pre_attn_scalar"]
    for hub_key, key in _MODEL_KEYS.items():
        kwargs[key] = config[hub_key]
    kwargs["rope_local_wavelength"] = _shared_value(
        config, "rope_max_wavelength", "encoder_rope_max_wavelength"
    )
    kwargs["rope_global_wavelength"] = GLOBAL_ROPE_BASE
    kwargs["rope_scaling_factor"] = _shared_value(
        config, "global_rope_scaling_factor", "encoder_global_rope_scaling_factor"
    ) or 1.0
    if config["attn_logit_softcapping"] is not None:
        logger.warning(
            "The keras-hub preset sets attn_logit_softcapping=%s. keras-hub "
            "applies it; transformers and keras-encdec ignore it, so logits "
            "differ from keras-hub's (they match transformers').",
            config["attn_logit_softcapping"],
        )
    if config["vision_encoder"] is not None and not text_only:
        kwargs.update(_vision_kwargs(config["vision_encoder"], width))
    kwargs["dtype"] = _dtype_name(config.get("dtype"))
    return kwargs
