"""Blockwise attention in `keras.ops` (`impl="xla"`): never holds `[T, S]`.

Online softmax over key blocks (FlashAttention-2 in plain tensor ops), with a
custom gradient that recomputes each block's logits on the backward pass, so
what autodiff keeps is `query`, `key`, `value`, the output and one float32
log-sum-exp per query: linear in the sequence lengths. It runs on JAX, PyTorch
and TensorFlow through `keras.ops.custom_gradient` and `keras.ops.fori_loop`.

Schedule. Queries are cut into `nqb` blocks of `block_q`, keys into `nkb`
blocks of `block_k` (both zero-padded; padded keys are masked). Every step `j`
processes, for all query blocks at once, key block `start[n] + j` of query
block `n`. With a sliding window, `start[n]` is the first key block that
query block `n` can see and the step count covers only the window, so the
cost grows as `T x (W + block)` instead of `T x S`. Without a window (or when
the window spans every key block) there is one query block and the loop
walks all key blocks. Peak extra memory is `T x block_k` logits per head.

Masks come from a `MaskRule` (window, padding and segment codes, offset).
`blockwise_part` returns the normalized output and the log-sum-exp of one
key set (see `attention_parts`), differentiable in both: a log-sum-exp
cotangent enters the backward pass as `delta - d_lse`. Fully masked rows
are filled in `attention_parts.combine_parts`.
"""

from keras import ops

from keras_encdec.ops.softmax_parts import FULLY_MASKED_THRESHOLD
from keras_encdec.ops.softmax_parts import MASKED_LOGIT
from keras_encdec.ops.softmax_parts import combine_parts
from keras_encdec.ops.mask_rule import MaskRule
from keras_encdec.ops.mask_rule import window_from_options
DEFAULT_BLOCK_Q = 256
DEFAULT_BLOCK_K = 256


def _ceil_div(a, b):
    return -(-a // b)


class _Schedule:
    """Static block layout for one call (all sizes are Python ints)."""

    def __init__(self, query_length, key_length, window, block_q, block_k):
        self.block_k = min(block_k, key_length)
        self.num_key_blocks = _ceil_div(key_length, self.block_k)
        self.steps = self.num_key_blocks
        self.keys_before = None  # None: every query starts at key block 0.
        if window.bounded:
            # Keys visible from a query block [q0, q0 + block_q):
            # [q0 - left, q0 + block_q - 1 + right].
            keys_before = window.left
            block = min(block_q, query_length)
            span = block + window.left + window.right
            steps = _ceil_div(span - 1, self.block_k) + 1
            if steps < self.num_key_blocks:
                self.steps = steps
                self.keys_before = keys_before
        self.block_q = (
            query_length if self.keys_before is None
            else min(block_q, query_length)
        )
        self.num_query_blocks = _ceil_div(query_length, self.block_q)


def _pad_axis1(x, length):
    pad = length - x.shape[1]
    if pad == 0:
        return x
    widths = [(0, 0)] * len(x.shape)
    widths[1] = (0, pad)
    return ops.pad(x, widths)


class _Blocks:
    """Blocked tensors and masks shared by the forward and backward loops."""

    def __init__(self, query, key, value, sched, rule):
        batch, query_length, num_heads, head_dim = query.shape
        key_length, num_kv_heads = key.shape[1], key.shape[2]
        self.batch = ops.shape(query)[0]
        self.shape = (query_length, key_length, num_heads, num_kv_heads,
                      num_heads // num_kv_heads, head_dim)
        nqb, bq = sched.num_query_blocks, sched.block_q
        nkb, bk = sched.num_key_blocks, sched.block_k
        groups = num_heads // num_kv_heads
        self.sched, self.rule = sched, rule
        self.query = ops.reshape(
            _pad_axis1(query, nqb * bq),
            (self.batch, nqb, bq, num_kv_heads, groups, head_dim),
        )  # [B, nqb, bq, K, G, H]
        block_shape = (self.batch, nkb, bk, num_kv_heads, head_dim)
        self.key = ops.reshape(_pad_axis1(key, nkb * bk), block_shape)
        self.value = ops.reshape(_pad_axis1(value, nkb * bk), block_shape)
        # Zero-padded keys past S are never visible.
        real_keys = ops.arange(nkb * bk, dtype="int32") < key_length
        self.real = ops.reshape(real_keys, (nkb, bk))
        query_codes, key_codes = rule.full_codes(self.batch, query_length,
                                                 key_length)
        self.query_codes = self.key_codes = None
        if query_codes is not None:
            self.query_codes = ops.reshape(
                _pad_axis1(query_codes, nqb * bq), (self.batch, nqb, bq))
            self.key_codes = ops.reshape(
                _pad_axis1(key_codes, nkb * bk), (self.batch, nkb, bk))
        offset = ops.cast(rule.query_offset, "int32")
        block_starts = ops.arange(nqb, dtype="int32") * bq + offset  # [nqb]
        self.query_positions = (
            block_starts[:, None] + ops.arange(bq, dtype="int32")[None]
        )  # [nqb, bq]
        if sched.keys_before is None:
            self.starts = ops.zeros((nqb,), "int32")
        else:
            first = ops.floor_divide(block_starts - sched.keys_before, bk)
            self.starts = ops.clip(first, 0, nkb - sched.steps)

    def step(self, j, query=None):
        """Key/value blocks, masked scaled logits inputs for step `j`."""
        bk = self.sched.block_k
        index = self.starts + j  # [nqb]
        key = ops.take(self.key, index, axis=1)  # [B, nqb, bk, K, H]
        value = ops.take(self.value, index, axis=1)
        key_positions = (
            index[:, None] * bk + ops.arange(bk, dtype="int32")[None]
        )  # [nqb, bk]
        q = self.query_positions[:, :, None]  # [nqb, bq, 1]
        k = key_positions[:, None, :]  # [nqb, 1, bk]
        real = ops.take(self.real, index, axis=0)[:, None, :]  # [nqb, 1, bk]
        if self.query_codes is None:
            mask = ops.logical_and(self.rule.visible(q, k), real)[None]
        else:
            key_codes = ops.take(self.key_codes, index, axis=1)
            mask = self.rule.visible(
                q[None], k[None], self.query_codes[:, :, :, None],
                key_codes[:, :, None, :])  # [B, nqb, bq, bk]
            mask = ops.logical_and(mask, real[None])
        mask = mask[:, :, None, None]  # [B|1, nqb, 1, 1, bq, bk]
        query = self.query if query is None else query
        logits = ops.einsum("bnqkgh,bnckh->bnkgqc", query, key)
        return index, key, value, mask, logits


def _capped_logits(logits, scale, soft_cap):
    logits = ops.cast(logits, "float32") * scale
    if soft_cap is not None:
        logits = ops.tanh(logits / soft_cap) * soft_cap
    return logits


def _forward(blocks, scale, soft_cap):
    sched = blocks.sched
    batch = blocks.batch
    _, _, _, num_kv, groups, head_dim = blocks.shape
    nqb, bq = sched.num_query_blocks, sched.block_q
    stats_shape = (batch, nqb, num_kv, groups, bq)

    def body(j, carry):
        row_max, row_sum, acc = carry
        _, _, value, mask, logits = blocks.step(j)
        logits = _capped_logits(logits, scale, soft_cap)
        logits = ops.where(mask, logits, MASKED_LOGIT)  # [B,n,K,G,q,c]
        new_max = ops.maximum(row_max, ops.max(logits, axis=-1))
        probs = ops.exp(logits - new_max[..., None])
        correction = ops.exp(row_max - new_max)
        row_sum = row_sum * correction + ops.sum(probs, axis=-1)
        update = ops.einsum(
            "bnkgqc,bnckh->bnkgqh", ops.cast(probs, value.dtype), value
        )
        acc = acc * correction[..., None] + ops.cast(update, "float32")
        return new_max, row_sum, acc

    init = (
        ops.full(stats_shape, MASKED_LOGIT, "float32"),
        ops.zeros(stats_shape, "float32"),
        ops.zeros(stats_shape + (head_dim,), "float32"),
    )
    row_max, row_sum, acc = ops.fori_loop(0, sched.steps, body, init)
    fully_masked = row_max < FULLY_MASKED_THRESHOLD  # [B, n, K, G, q]
    out = ops.where(fully_masked[..., None], 0.0,
                    acc / ops.where(fully_masked, 1.0, row_sum)[..., None])
    log_sum_exp = ops.where(fully_masked, MASKED_LOGIT,
                            row_max + ops.log(row_sum))
    return out, log_sum_exp


def _unblock_queries(blocks, x):
    """`[B, nqb, K, G, bq, ...]` -> `[B, T, N, ...]` (`...`: H or none)."""
    query_length, _, num_heads = blocks.shape[:3]
    sched = blocks.sched
    tail = tuple(x.shape[5:])
    x = ops.transpose(x, (0, 1, 4, 2, 3) + tuple(range(5, len(x.shape))))
    x = ops.reshape(
        x, (blocks.batch, sched.num_query_blocks * sched.block_q, num_heads)
        + tail)
    return x[:, :query_length]


def _backward(blocks, out, log_sum_exp, d_out, d_lse, scale, soft_cap,
              dtypes):
    sched = blocks.sched
    query_length, key_length, num_heads, num_kv, groups, head_dim = (
        blocks.shape
    )
    batch, nqb, bq = blocks.batch, sched.num_query_blocks, sched.block_q
    nkb, bk = sched.num_key_blocks, sched.block_k

    def block_queries(x):  # [B, T, N, H] -> [B, nqb, bq, K, G, H] float32
        x = _pad_axis1(ops.cast(x, "float32"), nqb * bq)
        return ops.reshape(x, (batch, nqb, bq, num_kv, groups, head_dim))

    def block_rows(x):  # [B, T, N] -> [B, nqb, K, G, bq]
        x = ops.reshape(_pad_axis1(x, nqb * bq),
                        (batch, nqb, bq, num_kv, groups))
        return ops.transpose(x, (0, 1, 3, 4, 2))

    # delta = rowsum(dO * O) - dLSE: [B, nqb, K, G, bq]
    delta = block_rows(ops.sum(ops.cast(d_out, "float32") * out, axis=-1)
                       - ops.cast(d_lse, "float32"))
    d_out = block_queries(d_out)
    # Rows that saw no key: +inf-like lse makes every probability 0.
    log_sum_exp = block_rows(ops.where(
        log_sum_exp < FULLY_MASKED_THRESHOLD, -MASKED_LOGIT, log_sum_exp))
    query = ops.cast(blocks.query, "float32")

    def body(j, carry):
        d_query, d_key, d_value = carry
        index, key, value, mask, logits = blocks.step(j)
        key, value = ops.cast(key, "float32"), ops.cast(value, "float32")
        capped = _capped_logits(logits, scale, soft_cap)
        probs = ops.exp(
            ops.where(mask, capped, MASKED_LOGIT) - log_sum_exp[..., None]
        )  # [B, n, K, G, q, c]; 0 where masked
        d_probs = ops.einsum("bnqkgh,bnckh->bnkgqc", d_out, value)
        d_logits = probs * (d_probs - delta[..., None])
        if soft_cap is not None:
            d_logits = d_logits * (1.0 - ops.square(capped / soft_cap))
        d_logits = d_logits * scale
        d_query = d_query + ops.einsum(
            "bnkgqc,bnckh->bnqkgh", d_logits, key
        )
        # Scatter per-query-block key gradients to their key blocks.
        one_hot = ops.one_hot(index, nkb, dtype="float32")  # [nqb, nkb]
        d_key_blocks = ops.einsum("bnkgqc,bnqkgh->bnckh", d_logits, query)
        d_value_blocks = ops.einsum("bnkgqc,bnqkgh->bnckh", probs, d_out)
        d_key = d_key + ops.einsum("bnckh,nm->bmckh", d_key_blocks, one_hot)
        d_value = d_value + ops.einsum(
            "bnckh,nm->bmckh", d_value_blocks, one_hot
        )
        return d_query, d_key, d_value

    kv_shape = (batch, nkb, bk, num_kv, head_dim)
    init = (
        ops.zeros_like(d_out),
        ops.zeros(kv_shape, "float32"),
        ops.zeros(kv_shape, "float32"),
    )
    d_query, d_key, d_value = ops.fori_loop(0, sched.steps, body, init)
    d_query = ops.reshape(d_query, (batch, nqb * bq, num_heads, head_dim))
    d_key = ops.reshape(d_key, (batch, nkb * bk, num_kv, head_dim))
    d_value = ops.reshape(d_value, (batch, nkb * bk, num_kv, head_dim))
    return (
        ops.cast(d_query[:, :query_length], dtypes[0]),
        ops.cast(d_key[:, :key_length], dtypes[1]),
        ops.cast(d_value[:, :key_length], dtypes[2]),
    )


def blockwise_part(query, key, value, rule, *, scale, soft_cap=None,
                   block_q=DEFAULT_BLOCK_Q, block_k=DEFAULT_BLOCK_K):
    """One key set's `(out, lse)` (see `attention_parts`), float32.

    Args:
        query: tensor. `[batch, T, num_heads, head_dim]`, static `T`.
        key: tensor. `[batch, S, num_kv_heads, head_dim]`, static `S`.
        value: tensor. `[batch, S, num_kv_heads, head_dim]`.
        rule: MaskRule. Which keys each query sees.
        scale: float. Multiplies the query-key logits.
        soft_cap: float or None. Defaults to `None`.
        block_q: int. Query block size (used with a bounded window).
            Defaults to `DEFAULT_BLOCK_Q`.
        block_k: int. Key block size. Defaults to `DEFAULT_BLOCK_K`.

    Returns:
        `(out [batch, T, num_heads, head_dim], lse [batch, T, num_heads])`.
    """
    for name, size in (("block_q", block_q), ("block_k", block_k)):
        if not isinstance(size, int) or size < 1:
            raise ValueError(f"{name} must be a positive int. Received: "
                             f"{name}={size!r}.")
    sched = _Schedule(query.shape[1], key.shape[1], rule.window, block_q,
                      block_k)
    dtypes = (query.dtype, key.dtype, value.dtype)
    head_dim = query.shape[-1]

    # keras' custom_gradient takes one output: pack [out, lse] on the last
    # axis, float32.
    @ops.custom_gradient
    def attend(query, key, value):
        blocks = _Blocks(query, key, value, sched, rule)
        out, log_sum_exp = _forward(blocks, scale, soft_cap)
        out = _unblock_queries(blocks, out)  # [B, T, N, H]
        log_sum_exp = _unblock_queries(blocks, log_sum_exp)  # [B, T, N]
        packed = ops.concatenate([out, log_sum_exp[..., None]], axis=-1)

        def grad(*args, upstream=None):
            if upstream is None:
                (upstream,) = args
            return _backward(blocks, out, log_sum_exp, upstream[..., :-1],
                             upstream[..., -1], scale, soft_cap, dtypes)

        return packed, grad

    packed = attend(query, key, value)
    return packed[..., :head_dim], packed[..., head_dim]


def blockwise_attention(
    query,
    key,
    value,
    *,
    scale,
    soft_cap=None,
    causal=False,
    sliding_window=None,
    key_padding_mask=None,
    query_offset=0,
    query_segment_ids=None,
    key_segment_ids=None,
    block_q=DEFAULT_BLOCK_Q,
    block_k=DEFAULT_BLOCK_K,
):
    """Memory-linear attention with the semantics of `dot_product_attention`.

    Args:
        query: tensor. `[batch, T, num_heads, head_dim]`, static `T`.
        key: tensor. `[batch, S, num_kv_heads, head_dim]`, static `S`.
        value: tensor. `[batch, S, num_kv_heads, head_dim]`.
        scale: float. Multiplies the query-key logits.
        soft_cap: float or None. `tanh(x / c) * c` on the scaled logits.
            Defaults to `None`.
        causal: bool. Hide keys after the query. Defaults to `False`.
        sliding_window: int, `(left, right)` or None. Causal, two-sided or
            asymmetric window (see `keras_encdec.ops.attention`). Defaults
            to `None`.
        key_padding_mask: tensor or None. `[batch, S]`, true on real keys.
            Defaults to `None`.
        query_offset: int or int scalar tensor. Absolute position of the
            first query. Defaults to `0`.
        query_segment_ids: int tensor or None. `[batch, T]`, non-negative
            segment ids of the queries (sequence packing): a key is visible
            only from queries of its own segment. Given together with
            `key_segment_ids`. Defaults to `None`.
        key_segment_ids: int tensor or None. `[batch, S]`, non-negative
            segment ids of the keys. Defaults to `None`.
        block_q: int. Query block size (used with a sliding window).
            Defaults to `DEFAULT_BLOCK_Q`.
        block_k: int. Key block size. Defaults to `DEFAULT_BLOCK_K`.

    Returns:
        A tensor `[batch, T, num_heads, head_dim]` in `query.dtype`.

    Examples:

    >>> import numpy as np
    >>> q = np.random.rand(1, 6, 2, 4).astype("float32")
    >>> kv = np.random.rand(1, 6, 1, 4).astype("float32")
    >>> out = blockwise_attention(q, kv, kv, scale=0.5, causal=True,
    ...                           sliding_window=2, block_q=2, block_k=2)
    >>> tuple(out.shape)
    (1, 6, 2, 4)
    """
    rule = MaskRule(window=window_from_options(causal, sliding_window),
                    key_padding_mask=key_padding_mask,
                    query_offset=query_offset,
                    query_segment_ids=query_segment_ids,
                    key_segment_ids=key_segment_ids)
    result = blockwise_part(query, key, value, rule, scale=scale,
                            soft_cap=soft_cap, block_q=block_q,
                            block_k=block_k)
    return combine_parts([result], [value], query.dtype)


def blockwise_cost_fraction(query_length, key_length, causal, sliding_window,
                            block_q=DEFAULT_BLOCK_Q, block_k=DEFAULT_BLOCK_K):
    """Fraction of the `T x S` logits that `blockwise_attention` computes.

    Examples:

    >>> round(blockwise_cost_fraction(4096, 4096, True, 512), 3)
    0.25
    """
    sched = _Schedule(query_length, key_length,
                      window_from_options(causal, sliding_window), block_q,
                      block_k)
    computed = (sched.num_query_blocks * sched.block_q * sched.steps
                * sched.block_k)
    return computed / float(query_length * key_length)

