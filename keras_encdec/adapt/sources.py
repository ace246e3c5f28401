"""Decoder-only Gemma 2 checkpoints, read through one interface.

`open_source(x)` accepts a keras-hub `GemmaBackbone` / `GemmaCausalLM` (with
Gemma 2 settings), a keras-hub preset name or folder, or a local transformers
`Gemma2ForCausalLM` folder (config.json + safetensors), and returns a
`GemmaSource`:

- `config`: the architecture, as a dict with the keys of `CONFIG_KEYS`
  (already in `T5GemmaBackbone` terms: real FFN width, query scalar, ...);
- `tensor(role, layer)`: `(name, transform)`, the source tensor holding one
  weight and the layout change that brings it to keras-encdec's layout;
- `names()` / `read(name)`: every tensor name, and one tensor as numpy.

Which model is "the source": a keras-hub object is taken as the network it
actually computes. keras-hub 0.32's `GemmaDecoderBlock` hard-codes
`query_head_dim_normalize=True` for its attention, so the attention scale is
`head_dim ** -0.5` whatever the backbone flag says; we read the flag from the
attention layers, so the adapted model computes what the source computes.
keras-hub's sliding window keeps keys with `|q - k| <= W - 1` on top of its
causal mask, i.e. `q - W < k <= q`: the same keys as transformers' Gemma 2
(`k > q - W`), so both source kinds map `W` to our `sliding_window` as is.
Only JSON, safetensors and keras-hub's own classes are loaded: no code
from a checkpoint is run. The readers live in `keras_hub_source` and
`transformers_source`.
"""

import json
import os

from keras_encdec.convert.safetensors_io import CheckpointError

TOKENIZER_FILE = "tokenizer.model"
SLIDING, FULL = "sliding_attention", "full_attention"
CONFIG_KEYS = (
    "vocabulary_size", "hidden_dim", "intermediate_dim", "num_layers",
    "num_heads", "num_kv_heads", "head_dim", "layer_types", "sliding_window",
    "attention_logit_soft_cap", "final_logit_soft_cap",
    "query_pre_attn_scalar", "rope_max_wavelength", "rms_norm_eps",
    "hidden_activation", "tie_word_embeddings", "dtype",
)
# Per-layer weight roles, in keras-encdec's layout.
ATTENTION_ROLES = ("query", "key", "value", "output")
NORM_ROLES = ("pre_attention_norm", "post_attention_norm", "pre_ffw_norm",
              "post_ffw_norm")
MLP_ROLES = ("gate", "up", "down")
LAYER_ROLES = ATTENTION_ROLES + NORM_ROLES + MLP_ROLES
GLOBAL_ROLES = ("embedding", "final_norm", "lm_head")


class AdaptationError(ValueError):
    """A source cannot be adapted (wrong architecture, mismatched pair)."""


def identity(w):
    return w


def transpose(w):
    return w.T


class GemmaSource:
    """One decoder-only Gemma 2 checkpoint (see the module docstring).

    Args:
        description: str. Names the source in messages.
        config: dict. Architecture, keys `CONFIG_KEYS`.
        tensors: dict. `(role, layer or None) -> (name, transform)`.
        read: callable. `read(name) -> np.ndarray`.
        tokenizer_proto: bytes or None. The SentencePiece model.
    """

    def __init__(self, description, config, tensors, read, tokenizer_proto):
        self.description = description
        self.config = config
        self._tensors = tensors
        self.read = read
        self.tokenizer_proto = tokenizer_proto

    def names(self):
        return [name for name, _ in self._tensors.values()]

    def tensor(self, role, layer=None):
        return self._tensors[(role, layer)]

    def has(self, role, layer=None):
        return (role, layer) in self._tensors

    def __repr__(self):
        return f"GemmaSource({self.description})"


def open_source(source):
    """Returns a `GemmaSource` for any accepted source value.

    Args:
        source: a keras-hub `GemmaBackbone` or `GemmaCausalLM`, a keras-hub
            preset name or folder, a transformers `Gemma2ForCausalLM`
            folder, or a `GemmaSource`.

    Examples:

    >>> import keras_hub
    >>> backbone = keras_hub.models.GemmaBackbone(
    ...     vocabulary_size=32, num_layers=2, num_query_heads=2,
    ...     num_key_value_heads=1, hidden_dim=16, intermediate_dim=64,
    ...     head_dim=8, use_post_ffw_norm=True, use_post_attention_norm=True,
    ...     attention_logit_soft_cap=50.0, final_logit_soft_cap=30.0,
    ...     use_sliding_window_attention=True, sliding_window_size=4)
    >>> open_source(backbone).config["intermediate_dim"]
    32
    """
    if isinstance(source, GemmaSource):
        return source
    import keras_hub

    from keras_encdec.adapt.keras_hub_source import from_keras_hub
    from keras_encdec.adapt.keras_hub_source import from_keras_hub_preset
    from keras_encdec.adapt.transformers_source import from_transformers_folder

    if isinstance(source, keras_hub.models.CausalLM):
        tokenizer = getattr(source.preprocessor, "tokenizer", None)
        return from_keras_hub(source.backbone, tokenizer, type(source).__name__)
    if isinstance(source, keras_hub.models.Backbone):
        return from_keras_hub(source, None, type(source).__name__)
    if not isinstance(source, (str, os.PathLike)):
        raise TypeError(
            "A source must be a keras-hub GemmaBackbone/GemmaCausalLM, a "
            "keras-hub preset name or folder, or a transformers Gemma2 "
            f"folder. Received: {type(source).__name__}."
        )
    source = os.fspath(source)
    if os.path.isdir(source):
        config = read_json(os.path.join(source, "config.json"))
        if "model_type" in config:
            return from_transformers_folder(source, config)
        return from_keras_hub_preset(source, config)
    if os.path.sep in source or source.startswith(".") or (
        "://" not in source
        and source not in keras_hub.models.GemmaBackbone.presets
    ):
        raise CheckpointError(
            f"Source {source!r} is not an existing folder, and not a keras-hub "
            "Gemma preset name. Expected a keras-hub preset name (e.g. "
            "'gemma2_2b_en'), a keras-hub preset folder or a transformers "
            "Gemma2ForCausalLM folder."
        )
    return from_keras_hub_preset(source, None)


def read_json(path):
    try:
        with open(path) as f:
            return json.load(f)
    except OSError as e:
        raise CheckpointError(
            f"Missing '{os.path.basename(path)}' in "
            f"'{os.path.dirname(path)}': not a checkpoint folder."
        ) from e
    except json.JSONDecodeError as e:
        raise CheckpointError(f"Corrupt JSON in '{path}': {e}.") from e
