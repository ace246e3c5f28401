"""Shared types of adaptation sources: `GemmaSource`, roles, errors.

`keras_hub_source`, `transformers_source` and `gguf_source` build
`GemmaSource` objects for Gemma 2 and Gemma 3; `sources.open_source` picks
the right reader.
"""

import json
import os

from keras_encdec.convert.safetensors_io import CheckpointError
from keras_encdec.errors import AdaptationError  # noqa: F401 (public)
from keras_encdec.convert.transformers_blocks import heads_in  # noqa: F401
from keras_encdec.convert.transformers_blocks import heads_out  # noqa: F401

TOKENIZER_FILE = "tokenizer.model"
SLIDING, FULL = "sliding_attention", "full_attention"
CONFIG_KEYS = (
    "vocabulary_size", "hidden_dim", "intermediate_dim", "num_layers",
    "num_heads", "num_kv_heads", "head_dim", "layer_types", "sliding_window",
    "attention_logit_soft_cap", "final_logit_soft_cap",
    "query_pre_attn_scalar", "rope_max_wavelength", "rms_norm_eps",
    "hidden_activation", "tie_word_embeddings", "dtype",
    # Gemma 3 (Gemma 2 sources: False, rope_max_wavelength, 1.0, 1.0).
    "family", "use_query_key_norm", "rope_local_max_wavelength",
    "rope_scaling_factor", "rope_local_scaling_factor",
)
GEMMA2, GEMMA3 = "gemma2", "gemma3"
FAMILY_NAMES = {GEMMA2: "Gemma 2", GEMMA3: "Gemma 3"}
# Per-layer weight roles, in keras-encdec's layout.
ATTENTION_ROLES = ("query", "key", "value", "output")
NORM_ROLES = ("pre_attention_norm", "post_attention_norm", "pre_ffw_norm",
              "post_ffw_norm")
QK_NORM_ROLES = ("query_norm", "key_norm")  # Gemma 3 only, `[head_dim]`.
MLP_ROLES = ("gate", "up", "down")
LAYER_ROLES = ATTENTION_ROLES + NORM_ROLES + MLP_ROLES
GEMMA3_LAYER_ROLES = LAYER_ROLES + QK_NORM_ROLES
GLOBAL_ROLES = ("embedding", "final_norm", "lm_head")


def identity(w):
    return w


def transpose(w):
    return w.T


def gemma2_extras(rope_max_wavelength):
    """The Gemma 3 config keys, as a Gemma 2 source fills them."""
    return {
        "family": GEMMA2,
        "use_query_key_norm": False,
        "rope_local_max_wavelength": rope_max_wavelength,
        "rope_scaling_factor": 1.0,
        "rope_local_scaling_factor": 1.0,
    }


def gemma3_layer_types(num_layers, pattern=6):
    """Gemma 3's default layout: `pattern - 1` sliding layers, then one
    full-attention layer, repeated."""
    return [SLIDING if (i + 1) % pattern else FULL for i in range(num_layers)]


class GemmaSource:
    """One decoder-only Gemma 2 or Gemma 3 checkpoint (text), as weights by
    role plus config.

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

    def read_role(self, role, layer=None):
        """One weight, read and brought to keras-encdec's layout."""
        name, transform = self.tensor(role, layer)
        return transform(self.read(name))

    def has(self, role, layer=None):
        return (role, layer) in self._tensors

    @property
    def family(self):
        """`"gemma2"` or `"gemma3"`."""
        return self.config["family"]

    def __repr__(self):
        return f"GemmaSource({self.description})"


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
