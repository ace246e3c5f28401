"""Dense attention with one softmax over several key sets.

`dense_attention_parts` is the reference path of
`keras_encdec.ops.dot_product_attention` and of the merged attention: it
materializes the scores (`"dense"` impl, and the default at small sizes
except on torch without soft-cap or dropout, where `"sdpa"` runs).
"""

import keras
from keras import ops

from keras_encdec.ops import attention_dense_jax
from keras_encdec.ops.attention_decode import one_query_attention_parts
from keras_encdec.ops.softmax_parts import MASKED_LOGIT


def check_heads(query, key):
    num_heads, num_kv_heads = query.shape[-2], key.shape[-2]
    if num_heads % num_kv_heads:
        raise ValueError(
            "The number of query heads must be a multiple of the number of "
            f"key/value heads. Received: num_heads={num_heads}, "
            f"num_kv_heads={num_kv_heads}."
        )


def _concatenate_keys(query, key):
    """Whether copying keys and values costs less than probability slices."""
    length = query.shape[1]
    return isinstance(length, int) and (
        length * query.shape[-2] >= 2 * key.shape[-2] * key.shape[-1]
    )


def concatenate_parts(parts, batch):
    """One `(key, value, mask)` holding every part's keys in order."""
    masks = [ops.broadcast_to(m, (batch,) + tuple(ops.shape(m)[1:]))
             for _, _, m in parts]
    return (ops.concatenate([k for k, _, _ in parts], axis=1),
            ops.concatenate([v for _, v, _ in parts], axis=1),
            ops.concatenate(masks, axis=-1))


def _visible_rows(parts):
    """`[batch or 1, T]` bool: whether a query row sees any key."""
    visible = None
    for _, _, mask in parts:
        row = ops.any(mask, axis=-1)
        visible = row if visible is None else ops.logical_or(visible, row)
    return visible


def _logit_bias(mask):
    """`[B or 1, 1, T, 1, S]` float32: 0 where `mask [B or 1, T, S]` is
    true, `MASKED_LOGIT` where not. A float32 logit (|x| < 1e22) plus -1e30
    is -1e30 exactly."""
    return ops.where(mask, 0.0, MASKED_LOGIT)[:, None, :, None, :]


def dense_attention_parts(query, parts, *, scale, soft_cap=None,
                          probabilities_dropout=None):
    """Reference attention with ONE softmax over several key sets.

    Materializes `[T, S1 + S2 + ...]` scores: the logits of every part are
    concatenated, masked, soft-maxed together and split again. One query
    (`T = 1`, a decode step) without dropout runs
    `attention_decode.one_query_attention_parts` on JAX and TensorFlow.
    When the probabilities are larger than the keys and values (`T *
    num_heads >= 2 * num_kv_heads * head_dim`, e.g. training), the key sets
    are concatenated first instead (as transformers does): one score
    matrix, no copy of each probability slice. One float32 key set without
    dropout on JAX with a CPU default backend runs
    `attention_dense_jax.grouped_attention`: the same products, with a
    gradient XLA's CPU runtime runs without transposed copies of the
    scores.

    Args:
        query: tensor. `[batch, T, num_heads, head_dim]`.
        parts: list of `(key, value, mask)`: key/value `[batch, S_i,
            num_kv_heads, head_dim]`, mask a bool `[batch or 1, T, S_i]`.
        scale: float. Multiplies the query-key logits.
        soft_cap: float or None. `tanh(x / c) * c` on the scaled logits.
            Defaults to `None`.
        probabilities_dropout: callable or None. Defaults to `None`.

    Returns:
        A tensor `[batch, T, num_heads, head_dim]` in `query.dtype`.
    """
    for key, _, _ in parts:
        check_heads(query, key)
    if (query.shape[1] == 1 and probabilities_dropout is None
            and keras.backend.backend() != "torch"):
        return one_query_attention_parts(query, parts, scale=scale,
                                         soft_cap=soft_cap)
    if len(parts) > 1 and _concatenate_keys(query, parts[0][0]):
        parts = [concatenate_parts(parts, ops.shape(query)[0])]
    num_heads, head_dim = query.shape[-2], query.shape[-1]
    num_kv_heads = parts[0][0].shape[-2]
    groups = num_heads // num_kv_heads
    batch, query_length = ops.shape(query)[0], ops.shape(query)[1]
    # float32/64: the scale (and 1 / soft_cap) multiply the small query, not
    # the `[T, S]` logits (rounding-level change, one pass fewer each way).
    # Half precision keeps the fp32 logit scaling.
    fold = keras.backend.standardize_dtype(query.dtype) in (
        "float32", "float64")
    # The masks are added to the logits as a -1e30 bias (below), which
    # leaves the logits' values as a select would, and saves the backward a
    # select over the `[B, K, T, G, S]` gradient (T5Gemma 2's merged
    # attention fwd+bwd 1.05-1.14x on jax; BENCHMARKS.md, ninth session). A
    # query row that sees no key is zeroed instead, so that, as with a
    # select, its uniform probabilities send no gradient to its query nor
    # to the keys (`attention_blockwise_test.py` checks both gradients).
    visible = ops.cast(_visible_rows(parts), query.dtype)[:, :, None, None]
    if fold:
        visible = visible * (scale if soft_cap is None else scale / soft_cap)
    query = ops.multiply(query, visible)
    query = ops.reshape(
        query, (batch, query_length, num_kv_heads, groups, head_dim)
    )
    if len(parts) == 1 and attention_dense_jax.applies(
            query, parts[0][0], parts[0][1], probabilities_dropout):
        key, value, mask = parts[0]
        output = attention_dense_jax.grouped_attention(
            query, key, value, _logit_bias(mask), soft_cap)
        return ops.reshape(output,
                           (batch, query_length, num_heads, head_dim))
    logits, lengths = [], []
    for key, _, mask in parts:
        # `bktgs` is the order the batched matmul emits (no transpose copy).
        part = ops.cast(ops.einsum("btkgh,bskh->bktgs", query, key), "float32")
        if not fold:
            part = part * scale
            if soft_cap is not None:
                part = part / soft_cap
        if soft_cap is not None:
            part = ops.tanh(part) * soft_cap
        logits.append(part + _logit_bias(mask))
        lengths.append(ops.shape(key)[1])
    logits = logits[0] if len(parts) == 1 else ops.concatenate(logits, -1)
    probabilities = ops.softmax(logits, axis=-1)  # [B, K, T, G, sum S_i]
    probabilities = ops.cast(probabilities, parts[0][1].dtype)
    if probabilities_dropout is not None:
        probabilities = probabilities_dropout(probabilities)
    output, start = 0, 0
    for (_, value, _), length in zip(parts, lengths):
        weights = probabilities[..., start:start + length]
        start = start + length
        output = output + ops.einsum("bktgs,bskh->btkgh", weights, value)
    return ops.reshape(output, (batch, query_length, num_heads, head_dim))
