"""Shared types of adaptation sources: `GemmaSource`, roles, errors.

`keras_hub_source` and `transformers_source` build `GemmaSource` objects;
`sources.open_source` picks the right reader.
"""

import json
import os

from keras_encdec.convert.safetensors_io import CheckpointError
from keras_encdec.errors import AdaptationError  # noqa: F401 (public)

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
