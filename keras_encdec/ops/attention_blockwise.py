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

Masks and the fully masked row follow `attention.dot_product_attention`
(impl `"dense"`) exactly: a row whose every key is masked gets the uniform
average of all `S` values, with the matching gradient.
"""

from keras import ops

from keras_encdec.ops.mask_rule import window_from_options

MASKED_LOGIT = -1e30
# A row maximum below this means every key of the row was masked.
_FULLY_MASKED_THRESHOLD = -1e29
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

    def __init__(self, query, key, value, sched, window, key_padding_mask,
                 query_offset):
        batch, query_length, num_heads, head_dim = query.shape
        key_length, num_kv_heads = key.shape[1], key.shape[2]
        self.batch = ops.shape(query)[0]
        self.shape = (query_length, key_length, num_heads, num_kv_heads,
                      num_heads // num_kv_heads, head_dim)
        nqb, bq = sched.num_query_blocks, sched.block_q
        nkb, bk = sched.num_key_blocks, sched.block_k
        groups = num_heads // num_kv_heads
        self.sched, self.window = sched, window
        self.query = ops.reshape(
            _pad_axis1(query, nqb * bq),
            (self.batch, nqb, bq, num_kv_heads, groups, head_dim),
        )  # [B, nqb, bq, K, G, H]
        block_shape = (self.batch, nkb, bk, num_kv_heads, head_dim)
        self.key = ops.reshape(_pad_axis1(key, nkb * bk), block_shape)
        self.value = ops.reshape(_pad_axis1(value, nkb * bk), block_shape)
        real_keys = ops.arange(nkb * bk, dtype="int32") < key_length
        valid = ops.broadcast_to(real_keys[None], (self.batch, nkb * bk))
        if key_padding_mask is not None:
            padding = _pad_axis1(ops.cast(key_padding_mask, "bool"), nkb * bk)
            valid = ops.logical_and(valid, padding)
        self.valid = ops.reshape(valid, (self.batch, nkb, bk))
        offset = ops.cast(query_offset, "int32")
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
        visible = self.window.visible(q, k)
        valid = ops.take(self.valid, index, axis=1)  # [B, nqb, bk]
        mask = ops.logical_and(visible[None], valid[:, :, None, :])
        mask = mask[:, :, None, None]  # [B, nqb, 1, 1, bq, bk]
        query = self.query if query is None else query
        logits = ops.einsum("bnqkgh,bnckh->bnkgqc", query, key)
        return index, key, value, mask, logits


def _capped_logits(logits, scale, soft_cap):
    logits = ops.cast(logits, "float32") * scale
    if soft_cap is not None:
        logits = ops.tanh(logits / soft_cap) * soft_cap
    return logits


def _forward(blocks, scale, soft_cap, out_dtype):
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
    fully_masked = row_max < _FULLY_MASKED_THRESHOLD  # [B, n, K, G, q]
    # Dense attention gives a fully masked row the mean of all S values.
    key_length = blocks.shape[1]
    value_mean = ops.sum(
        ops.cast(blocks.value, "float32"), axis=(1, 2)
    ) / key_length  # [B, K, H]
    out = ops.where(
        fully_masked[..., None],
        value_mean[:, None, :, None, None, :],
        acc / row_sum[..., None],
    )
    log_sum_exp = ops.where(
        fully_masked, -MASKED_LOGIT, row_max + ops.log(row_sum)
    )
    return _unblock_queries(blocks, out, out_dtype), log_sum_exp


def _unblock_queries(blocks, x, dtype):
    """`[B, nqb, K, G, bq, H]` -> `[B, T, N, H]`."""
    query_length, _, num_heads, _, _, head_dim = blocks.shape
    sched = blocks.sched
    x = ops.transpose(x, (0, 1, 4, 2, 3, 5))  # [B, nqb, bq, K, G, H]
    x = ops.reshape(
        x, (blocks.batch, sched.num_query_blocks * sched.block_q, num_heads,
            head_dim)
    )
    return ops.cast(x[:, :query_length], dtype)


def _backward(blocks, out, log_sum_exp, upstream, scale, soft_cap, dtypes):
    sched = blocks.sched
    query_length, key_length, num_heads, num_kv, groups, head_dim = (
        blocks.shape
    )
    batch, nqb, bq = blocks.batch, sched.num_query_blocks, sched.block_q
    nkb, bk = sched.num_key_blocks, sched.block_k

    def block_queries(x):  # [B, T, N, H] -> [B, nqb, bq, K, G, H] float32
        x = _pad_axis1(ops.cast(x, "float32"), nqb * bq)
        return ops.reshape(x, (batch, nqb, bq, num_kv, groups, head_dim))

    d_out = block_queries(upstream)
    # delta = rowsum(dO * O): [B, nqb, K, G, bq]
    delta = ops.transpose(
        ops.sum(d_out * block_queries(out), axis=-1), (0, 1, 3, 4, 2)
    )
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
    # Fully masked rows read every value with weight 1 / S.
    fully_masked = log_sum_exp > -_FULLY_MASKED_THRESHOLD  # [B, n, K, G, q]
    masked_d_out = ops.where(
        ops.transpose(fully_masked, (0, 1, 4, 2, 3))[..., None], d_out, 0.0
    )
    d_value_uniform = ops.sum(masked_d_out, axis=(1, 2, 4)) / key_length
    d_query = ops.reshape(d_query, (batch, nqb * bq, num_heads, head_dim))
    d_key = ops.reshape(d_key, (batch, nkb * bk, num_kv, head_dim))
    d_value = ops.reshape(d_value, (batch, nkb * bk, num_kv, head_dim))
    d_value = d_value[:, :key_length] + d_value_uniform[:, None]
    return (
        ops.cast(d_query[:, :query_length], dtypes[0]),
        ops.cast(d_key[:, :key_length], dtypes[1]),
        ops.cast(d_value, dtypes[2]),
    )


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
    for name, size in (("block_q", block_q), ("block_k", block_k)):
        if not isinstance(size, int) or size < 1:
            raise ValueError(f"{name} must be a positive int. Received: "
                             f"{name}={size!r}.")
    window = window_from_options(causal, sliding_window)
    sched = _Schedule(query.shape[1], key.shape[1], window, block_q, block_k)
    dtypes = (query.dtype, key.dtype, value.dtype)

    @ops.custom_gradient
    def attend(query, key, value):
        blocks = _Blocks(query, key, value, sched, window, key_padding_mask,
                         query_offset)
        out, log_sum_exp = _forward(blocks, scale, soft_cap, query.dtype)

        def grad(*args, upstream=None):
            if upstream is None:
                (upstream,) = args
            return _backward(blocks, out, log_sum_exp, upstream, scale,
                             soft_cap, dtypes)

        return out, grad

    return attend(query, key, value)


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

