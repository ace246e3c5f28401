"""The tied LM head of a cached decoder pass on XLA's CPU backend.

A decode step multiplies a few rows `h [R, D]` by the tied `[V, D]` token
table transposed. Written as `h @ table.T`, XLA's CPU runtime (YNNPACK)
packs the table, transposed, into 256 KiB scratch blocks on every step (32
a step for an 8192 x 256 table); written as
`table @ h.T` (`[V, R]`, the table's rows in memory order) and transposed
after an optimization barrier (without it XLA folds the transpose back into
the product), it streams the table once. Per step of a 16-step loop, 4
rows, medians (`python tools/probe_lm_head_orientation.py`, BENCHMARKS.md,
eighth session): 8192 x 256 0.41 -> 0.32 ms, 262144 x 640 50.5 -> 46.0 ms;
with 1 and 16 rows it is as fast or faster too. The same products, summed
by another kernel: logits can differ in the last bits.

Used by `EncDecGenerationMixin.call_decoder_with_cache` for one position
per row (decode steps; a longer prefill's `[rows, V]` logits would need a
transposed copy as large) on JAX with a CPU default backend, for a plain
tied table (no quantization, LoRA, reverse dtype or layer soft-cap);
everywhere else the embedding layer's own reverse call runs.
"""

import keras
from keras import ops

from keras_encdec.utils import dispatch


def applies(embedding):
    """Whether `embedding` (a `ReversibleEmbedding`) takes this path."""
    if keras.backend.backend() != "jax":
        return False
    return (
        dispatch.device_kind() == "cpu"
        and getattr(embedding, "tie_weights", False)
        and getattr(embedding, "reverse_dtype", None) is None
        and getattr(embedding, "logit_soft_cap", None) is None
        and embedding.quantization_mode is None
        and not getattr(embedding, "lora_enabled", False)
    )


def logits(embedding, hidden_states):
    """`embedding(hidden_states, reverse=True)` as `table @ h.T`, transposed.

    Args:
        embedding: a layer for which `applies(embedding)` holds.
        hidden_states: tensor `[..., D]` in the layer's compute dtype.

    Returns:
        tensor `[..., V]`, the layer's reverse projection.
    """
    import jax

    # The layer's top-level call rounds the table to its compute dtype
    # (Keras' autocast scope); `generate` calls it at top level.
    table = ops.cast(embedding.embeddings, embedding.compute_dtype)
    vocab_size, dim = table.shape
    lead = tuple(ops.shape(hidden_states)[:-1])
    rows = ops.reshape(ops.cast(hidden_states, table.dtype), (-1, dim))
    by_vocab = jax.lax.dot_general(table, rows, (((1,), (1,)), ((), ())))
    by_vocab = jax.lax.optimization_barrier(by_vocab)  # [V, R]
    return ops.reshape(ops.transpose(by_vocab), lead + (vocab_size,))
