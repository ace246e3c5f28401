"""Attention for one query position: a decode step over a KV cache.

`one_query_attention_parts` is what `attention.dense_attention_parts` runs
for a single query on the compiled backends (JAX, TensorFlow).
"""

from keras import ops

from keras_encdec.ops.softmax_parts import MASKED_LOGIT


def one_query_attention_parts(query, parts, *, scale, soft_cap=None):
    """`dense_attention_parts` for one query position (a decode step).

    Computes the same attention as `dense_attention_parts` (float32
    products and sums, so equal up to float rounding) with broadcast
    products and reductions over the keys' own `[batch, S, kv_heads,
    head_dim]` layout. Compiled (JAX, TensorFlow), this reads a KV cache in
    place: the matmul form makes XLA transpose every key and value tensor
    (a whole static cache) and the output projection kernel on every
    step. Torch keeps the matmul form (eager matmuls are faster there).

    Args:
        query: tensor. `[batch, 1, num_heads, head_dim]`.
        parts: list of `(key, value, mask)` as in `dense_attention_parts`.
        scale: float. Multiplies the query-key logits.
        soft_cap: float or None. Defaults to `None`.

    Returns:
        A tensor `[batch, 1, num_heads, head_dim]` in `query.dtype`.

    Examples:

    >>> import numpy as np
    >>> q = np.random.rand(2, 1, 4, 8).astype("float32")
    >>> kv = np.random.rand(2, 5, 2, 8).astype("float32")
    >>> mask = np.ones((1, 1, 5), bool)
    >>> out = one_query_attention_parts(q, [(kv, kv, mask)], scale=0.3)
    >>> tuple(out.shape)
    (2, 1, 4, 8)
    """
    num_heads, head_dim = query.shape[-2], query.shape[-1]
    num_kv_heads = parts[0][0].shape[-2]
    batch, dtype = ops.shape(query)[0], query.dtype
    query = ops.cast(query, "float32")
    query = ops.reshape(
        query, (batch, 1, num_kv_heads, num_heads // num_kv_heads, head_dim)
    )
    logits, lengths = [], []
    for key, _, mask in parts:
        key = ops.cast(key, "float32")[:, :, :, None, :]
        part = ops.sum(query * key, axis=-1) * scale  # [B, S, K, G]
        if soft_cap is not None:
            part = ops.tanh(part / soft_cap) * soft_cap
        logits.append(ops.where(mask[:, 0, :, None, None], part,
                                MASKED_LOGIT))
        lengths.append(ops.shape(key)[1])
    logits = logits[0] if len(parts) == 1 else ops.concatenate(logits, 1)
    probabilities = ops.softmax(logits, axis=1)[..., None]  # [B, S, K, G, 1]
    output, start = 0, 0
    for (_, value, _), length in zip(parts, lengths):
        weights = probabilities[:, start:start + length]
        start = start + length
        value = ops.cast(value, "float32")[:, :, :, None, :]
        output = output + ops.sum(weights * value, axis=1)  # [B, K, G, H]
    output = ops.reshape(output, (batch, 1, num_heads, head_dim))
    return ops.cast(output, dtype)
