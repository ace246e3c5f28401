"""Flash attention in Pallas (`impl="pallas"`): JAX only, GPU and TPU.

Forward and backward kernels in the style of
`jax.experimental.pallas.ops.gpu.attention`, extended with what T5Gemma
needs, all fused: Gemma 2's logit soft-cap (and its derivative), the causal
and two-sided sliding windows, key padding, grouped-query attention (a key
head serves `num_heads / num_kv_heads` query heads through the block index
maps) and a query offset for decode steps. Each program visits only the key
blocks (forward, dQ) or query blocks (dK/dV) that its window can reach.

Masks come from a `MaskRule`: its `KeyWindow` on positions and its codes
(key padding and segment ids folded into one int per query and per key).
`pallas_part` returns one key set's normalized output and log-sum-exp (see
`attention_parts`), differentiable in both (a log-sum-exp cotangent enters
as `delta - d_lse`); fully masked rows are filled in
`attention_parts.combine_parts`.

The kernels run on a head-major layout (`[B, N, T, H]`, transposed in
`pallas_attention`) with 2-D tiles only, so the same code lowers through
Triton on GPU (`lax.platform_dependent` passes Triton compiler params; newer
JAX would default to Mosaic GPU) and through Mosaic on TPU, where each
program keeps one head's whole key/value (forward, dQ) or query/gradient
(dK/dV) sequence in VMEM: fine at T = S = 4096, head dim 256 (see
`tools/check_tpu_kernels.py`, a deviceless compile check), too much VMEM
for very long sequences.

Interpret mode: with the environment variable
`KERAS_ENCDEC_PALLAS_INTERPRET=1` the kernels run through
`pallas_call(interpret=True)` on any JAX platform (CPU tests); it is slow
and `impl=None` never picks it.
"""

import functools

import jax
import jax.numpy as jnp
from jax import lax
from jax.experimental import pallas as pl

from keras_encdec.ops.softmax_parts import FULLY_MASKED_THRESHOLD
from keras_encdec.ops.softmax_parts import MASKED_LOGIT
from keras_encdec.ops.softmax_parts import combine_parts
from keras_encdec.ops.mask_rule import PAD_CODE
from keras_encdec.ops.mask_rule import MaskRule
from keras_encdec.ops.mask_rule import visible
from keras_encdec.ops.mask_rule import window_from_options
from keras_encdec.utils import dispatch

INTERPRET_ENV = dispatch.INTERPRET_ENV
DEFAULT_BLOCK_Q = 64
DEFAULT_BLOCK_K = 64
TPU_BLOCK_Q = 128
TPU_BLOCK_K = 128


def interpret_mode():
    """Whether `KERAS_ENCDEC_PALLAS_INTERPRET=1` asks for interpret mode."""
    return dispatch.pallas_interpret()


def _next_power_of_2(n):
    return 1 << max(n - 1, 0).bit_length()


def _tpu_vmem_limit(limit, query, padded_queries, padded_keys, head_dim):
    """Scoped VMEM for the whole-sequence blocks (double-buffered) + slack."""
    if limit is not None:
        return int(limit)
    itemsize = jnp.dtype(query.dtype).itemsize
    whole = 2 * max(padded_queries, padded_keys) * head_dim * itemsize
    return int(2 * whole + 16 * 2**20)  # two arrays, two buffers each


def _mask(query_positions, key_positions, query_codes, key_codes, cfg):
    """Visible (query, key) pairs; all arguments broadcast to one 2-D tile."""
    return visible(cfg.window, query_positions, key_positions, query_codes,
                   key_codes)


def _logits(a, b, cfg):
    """Scaled (and soft-capped) float32 logits `a @ b.T`."""
    s = pl.dot(a, b, trans_b=True).astype(jnp.float32) * cfg.scale
    if cfg.soft_cap is not None:
        s = jnp.tanh(s / cfg.soft_cap) * cfg.soft_cap
    return s


def _key_block_range(first_query, cfg):
    """`[lower, upper)` key blocks that queries `first_query + [0, bq)` see."""
    lower, upper = 0, cfg.num_key_blocks
    if cfg.keys_before is not None:
        first = jnp.maximum(first_query - cfg.keys_before, 0)
        lower = lax.div(first, cfg.block_k)
    if cfg.keys_after is not None:
        last = first_query + (cfg.block_q - 1) + cfg.keys_after
        upper = jnp.minimum(lax.div(last, cfg.block_k) + 1, upper)
    return lower, upper


def _iota(shape, axis):
    return lax.broadcasted_iota(jnp.int32, shape, axis)


# Kernel layout (head-major, legal for Triton and Mosaic alike): q/o/do are
# `[bq or Tp, H]` tiles of `[B, N, Tp, H]`, k/v `[bk or Sp, H]` tiles of
# `[B, K, Sp, H]`. Per-query scalars (lse, delta) are rows `[1, bq]` of
# `[B, N, Tp // bq, 1, bq]`, key codes rows `[1, bk]` of `[B, Sp // bk, 1,
# bk]` and query codes rows `[1, bq]` of `[B, Tp // bq, 1, bq]` (a `[L, 1]`
# column would take 128 lanes per entry in TPU memory); kernels that need a
# column transpose the tile. The query offset is a `[1, 1]` int32 array.


def _column(row):
    """`[1, n]` -> `[n, 1]`: a lane-aligned transpose of copies of the row
    (Mosaic rejects the reshape, Triton the slice; the max is exact)."""
    wide = jnp.transpose(jnp.broadcast_to(row, (128, row.shape[1])))
    return jnp.max(wide, axis=1, keepdims=True)


def _row(column):
    """`[n, 1]` -> `[1, n]`, likewise."""
    wide = jnp.transpose(jnp.broadcast_to(column, (column.shape[0], 128)))
    return jnp.max(wide, axis=0, keepdims=True)


def _forward_kernel(offset_ref, qcode_ref, kcode_ref, q_ref, k_ref, v_ref,
                    o_ref, lse_ref, *, cfg):
    q = q_ref[...]  # [bq, H]
    qcode = _column(qcode_ref[...])  # [bq, 1]
    bq, bk = cfg.block_q, cfg.block_k
    first_query = offset_ref[0, 0] + pl.program_id(0) * bq
    qpos = first_query + _iota((bq, bk), 0)

    def body(j, carry):
        acc, row_max, row_sum = carry
        start = pl.multiple_of(j * bk, bk)
        keys = pl.ds(start, bk)
        s = _logits(q, k_ref[keys, :], cfg)
        mask = _mask(qpos, start + _iota((bq, bk), 1), qcode, kcode_ref[j],
                     cfg)
        s = jnp.where(mask, s, MASKED_LOGIT)
        new_max = jnp.maximum(row_max, jnp.max(s, axis=1, keepdims=True))
        p = jnp.exp(s - new_max)
        correction = jnp.exp(row_max - new_max)
        v = v_ref[keys, :]
        acc = acc * correction + pl.dot(p.astype(v.dtype), v)
        return acc, new_max, row_sum * correction + jnp.sum(
            p, axis=1, keepdims=True)

    init = (jnp.zeros(q.shape, jnp.float32),
            jnp.full((bq, 1), MASKED_LOGIT, jnp.float32),
            jnp.zeros((bq, 1), jnp.float32))
    lower, upper = _key_block_range(first_query, cfg)
    acc, row_max, row_sum = lax.fori_loop(lower, upper, body, init)
    fully_masked = row_max < FULLY_MASKED_THRESHOLD
    row_sum = jnp.where(row_sum == 0, 1.0, row_sum)
    o_ref[...] = (acc / row_sum).astype(o_ref.dtype)
    lse_ref[...] = _row(jnp.where(fully_masked, -MASKED_LOGIT,
                                  row_max + jnp.log(row_sum)))


def _dlogits(capped, mask, lse, dp, delta, cfg):
    """Probabilities and scaled logit gradients (any consistent layout)."""
    p = jnp.exp(jnp.where(mask, capped, MASKED_LOGIT) - lse)
    ds = p * (dp - delta)
    if cfg.soft_cap is not None:
        ds = ds * (1.0 - jnp.square(capped / cfg.soft_cap))
    return p, ds * cfg.scale


def _dkdv_kernel(offset_ref, qcode_ref, kcode_ref, q_ref, k_ref, v_ref,
                 do_ref, lse_ref, delta_ref, dk_ref, dv_ref, *, cfg):
    # Key-major: tiles are `[bk, bq]` (transposed logits), so lse and delta
    # broadcast as rows and every dot is a plain or `trans_b` product.
    k, v = k_ref[...], v_ref[...]  # [bk, H]
    kcode = _column(kcode_ref[...])  # [bk, 1]
    bk, bq = cfg.block_k, cfg.block_q
    offset = offset_ref[0, 0]
    first_key = pl.program_id(0) * bk
    kpos = first_key + _iota((bk, bq), 0)

    def body(i, carry):
        dk, dv = carry
        start = pl.multiple_of(i * bq, bq)
        rows = pl.ds(start, bq)
        q, do = q_ref[rows, :], do_ref[rows, :]
        mask = _mask(offset + start + _iota((bk, bq), 1), kpos,
                     qcode_ref[i], kcode, cfg)
        dp = pl.dot(v, do, trans_b=True).astype(jnp.float32)
        p, ds = _dlogits(_logits(k, q, cfg), mask, lse_ref[i], dp,
                         delta_ref[i], cfg)
        dv = dv + pl.dot(p.astype(do.dtype), do)
        dk = dk + pl.dot(ds.astype(q.dtype), q)
        return dk, dv

    # Query blocks that can see this key block: q in [k0 - after, k1 + before].
    lower, upper = 0, cfg.num_query_blocks
    if cfg.keys_after is not None:
        first = jnp.maximum(first_key - cfg.keys_after - offset, 0)
        lower = lax.div(first, bq)
    if cfg.keys_before is not None:
        last = first_key + (bk - 1) + cfg.keys_before - offset
        upper = jnp.minimum(lax.div(jnp.maximum(last + bq, 0), bq), upper)
    zeros = jnp.zeros(k.shape, jnp.float32)
    dk, dv = lax.fori_loop(lower, upper, body, (zeros, zeros))
    dk_ref[...] = dk.astype(dk_ref.dtype)
    dv_ref[...] = dv.astype(dv_ref.dtype)


def _dq_kernel(offset_ref, qcode_ref, kcode_ref, q_ref, k_ref, v_ref, do_ref,
               lse_ref, delta_ref, dq_ref, *, cfg):
    q, do = q_ref[...], do_ref[...]  # [bq, H]
    qcode = _column(qcode_ref[...])  # [bq, 1]
    lse, delta = _column(lse_ref[...]), _column(delta_ref[...])  # [bq, 1]
    bq, bk = cfg.block_q, cfg.block_k
    first_query = offset_ref[0, 0] + pl.program_id(0) * bq
    qpos = first_query + _iota((bq, bk), 0)

    def body(j, dq):
        start = pl.multiple_of(j * bk, bk)
        keys = pl.ds(start, bk)
        k = k_ref[keys, :]
        mask = _mask(qpos, start + _iota((bq, bk), 1), qcode, kcode_ref[j],
                     cfg)
        dp = pl.dot(do, v_ref[keys, :], trans_b=True).astype(jnp.float32)
        _, ds = _dlogits(_logits(q, k, cfg), mask, lse, dp, delta, cfg)
        return dq + pl.dot(ds.astype(k.dtype), k)

    lower, upper = _key_block_range(first_query, cfg)
    dq = lax.fori_loop(lower, upper, body, jnp.zeros(q.shape, jnp.float32))
    dq_ref[...] = dq.astype(dq_ref.dtype)


class _Config:
    """Static kernel parameters (hashable: a `custom_vjp` nondiff arg)."""

    def __init__(self, **kwargs):
        self.__dict__.update(kwargs)
        self._key = tuple(sorted(kwargs.items()))

    def __hash__(self):
        return hash(self._key)

    def __eq__(self, other):
        return isinstance(other, _Config) and self._key == other._key


def _specs(cfg, names):
    """BlockSpecs over grid `(block, batch, head)` for each named input.

    A leading `+` picks the tile of the grid's block index, else the whole
    (padded) sequence of the batch row and head.
    """
    bq, bk, g = cfg.block_q, cfg.block_k, cfg.groups
    tp, sp, hp = cfg.padded_queries, cfg.padded_keys, cfg.head_dim
    nq, nk = cfg.num_query_blocks, cfg.num_key_blocks
    specs = {
        "offset": ((1, 1), lambda i, b, n: (0, 0)),
        "kcode": ((None, nk, 1, bk), lambda i, b, n: (b, 0, 0, 0)),
        "+kcode": ((None, None, 1, bk), lambda i, b, n: (b, i, 0, 0)),
        "qcode": ((None, nq, 1, bq), lambda i, b, n: (b, 0, 0, 0)),
        "+qcode": ((None, None, 1, bq), lambda i, b, n: (b, i, 0, 0)),
        "q": ((None, None, tp, hp), lambda i, b, n: (b, n, 0, 0)),
        "+q": ((None, None, bq, hp), lambda i, b, n: (b, n, i, 0)),
        "kv": ((None, None, sp, hp), lambda i, b, n: (b, n // g, 0, 0)),
        "+kv": ((None, None, bk, hp), lambda i, b, n: (b, n // g, i, 0)),
        "+kv_per_head": ((None, None, bk, hp), lambda i, b, n: (b, n, i, 0)),
        "rows": ((None, None, nq, 1, bq), lambda i, b, n: (b, n, 0, 0, 0)),
        "+rows": ((None, None, None, 1, bq),
                  lambda i, b, n: (b, n, i, 0, 0)),
    }
    return [pl.BlockSpec(*specs[name]) for name in names]


def _call(kernel, cfg, grid_blocks, in_names, out_names, out_shapes, *args):
    """`pallas_call` on grid `(grid_blocks, batch, heads)`.

    Lowers through Mosaic on TPU and through Triton elsewhere (newer JAX
    defaults GPU kernels to Mosaic GPU, which these kernels do not target).
    """
    call = functools.partial(
        pl.pallas_call, functools.partial(kernel, cfg=cfg),
        grid=(grid_blocks, cfg.batch, cfg.num_heads),
        in_specs=_specs(cfg, in_names), out_specs=_specs(cfg, out_names),
        out_shape=out_shapes)
    if interpret_mode():
        return call(interpret=True)(*args)
    from jax.experimental.pallas import tpu as pltpu
    from jax.experimental.pallas import triton as pltriton

    tpu_params = pltpu.CompilerParams(
        dimension_semantics=("parallel",) * 3,
        vmem_limit_bytes=cfg.tpu_vmem_limit_bytes)
    return lax.platform_dependent(
        *args,
        tpu=lambda *a: call(compiler_params=tpu_params)(*a),
        default=lambda *a: call(
            compiler_params=pltriton.CompilerParams())(*a))


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def _flash(cfg, q, k, v, offset, qcode, kcode):
    return _flash_forward(cfg, q, k, v, offset, qcode, kcode)[0]


def _flash_forward(cfg, q, k, v, offset, qcode, kcode):
    """q `[B, N, Tp, H]`, k/v `[B, K, Sp, H]`, codes `[B, blocks, 1, tile]`.

    Returns `(out [B, N, Tp, H], lse [B, N, Tp])`: 0 and `MASKED_LOGIT` on
    rows that see no key. Saves lse as `[B, N, Tp]` (dense in TPU memory,
    unlike the rows), `+1e30` on those rows so the backward's
    probabilities are 0 there.
    """
    rows = jax.ShapeDtypeStruct((cfg.batch, cfg.num_heads,
                                 cfg.num_query_blocks, 1, cfg.block_q),
                                jnp.float32)
    out, lse = _call(_forward_kernel, cfg, cfg.num_query_blocks,
                     ["offset", "+qcode", "kcode", "+q", "kv", "kv"],
                     ["+q", "+rows"],
                     [jax.ShapeDtypeStruct(q.shape, q.dtype), rows],
                     offset, qcode, kcode, q, k, v)
    lse = lse.reshape(q.shape[:3])
    fully_masked = lse > -FULLY_MASKED_THRESHOLD
    out = jnp.where(fully_masked[..., None], 0, out)
    public_lse = jnp.where(fully_masked, MASKED_LOGIT, lse)
    return (out, public_lse), (q, k, v, offset, qcode, kcode, out, lse)


def _flash_backward(cfg, residuals, cotangents):
    q, k, v, offset, qcode, kcode, out, lse = residuals
    d_out, d_lse = cotangents
    heads, groups = cfg.num_heads, cfg.groups
    delta = jnp.sum(d_out.astype(jnp.float32) * out.astype(jnp.float32), -1)
    delta = delta - d_lse.astype(jnp.float32)
    rows_shape = (cfg.batch, heads, cfg.num_query_blocks, 1, cfg.block_q)
    lse_rows, delta_rows = lse.reshape(rows_shape), delta.reshape(rows_shape)
    do = d_out.astype(q.dtype)
    per_head = jax.ShapeDtypeStruct(
        (cfg.batch, heads, cfg.padded_keys, cfg.head_dim), jnp.float32)
    dk, dv = _call(_dkdv_kernel, cfg, cfg.num_key_blocks,
                   ["offset", "qcode", "+kcode", "q", "+kv", "+kv", "q",
                    "rows", "rows"],
                   ["+kv_per_head", "+kv_per_head"], [per_head, per_head],
                   offset, qcode, kcode, q, k, v, do, lse_rows, delta_rows)
    (dq,) = _call(_dq_kernel, cfg, cfg.num_query_blocks,
                  ["offset", "+qcode", "kcode", "+q", "kv", "kv", "+q",
                   "+rows", "+rows"],
                  ["+q"], [jax.ShapeDtypeStruct(q.shape, q.dtype)],
                  offset, qcode, kcode, q, k, v, do, lse_rows, delta_rows)

    def per_kv_head(x):  # [B, N, ...] -> [B, K, ...]
        return x.reshape((x.shape[0], heads // groups, groups)
                         + x.shape[2:]).sum(axis=2)

    return (dq, per_kv_head(dk).astype(k.dtype),
            per_kv_head(dv).astype(v.dtype), None, None, None)


_flash.defvjp(_flash_forward, _flash_backward)


def pallas_attention(query, key, value, *, scale, soft_cap=None, causal=False,
                     sliding_window=None, key_padding_mask=None,
                     query_offset=0, query_segment_ids=None,
                     key_segment_ids=None, block_q=None, block_k=None,
                     tpu_vmem_limit_bytes=None):
    """Flash attention with the semantics of `dot_product_attention`.

    Args:
        query: jax array. `[batch, T, num_heads, head_dim]`.
        key: jax array. `[batch, S, num_kv_heads, head_dim]`.
        value: jax array. `[batch, S, num_kv_heads, head_dim]`.
        scale: float. Multiplies the query-key logits.
        soft_cap: float or None. `tanh(x / c) * c`. Defaults to `None`.
        causal: bool. Hide keys after the query. Defaults to `False`.
        sliding_window: int, `(left, right)` or None. Causal, two-sided or
            asymmetric window. Defaults to `None`.
        key_padding_mask: array or None. `[batch, S]`, true on real keys.
            Defaults to `None`.
        query_offset: int or int scalar array. Absolute position of the
            first query. Defaults to `0`.
        query_segment_ids: int tensor or None. `[batch, T]`, non-negative
            segment ids of the queries (sequence packing): a key is visible
            only from queries of its own segment. Given together with
            `key_segment_ids`. Defaults to `None`.
        key_segment_ids: int tensor or None. `[batch, S]`, non-negative
            segment ids of the keys. Defaults to `None`.
        block_q, block_k, tpu_vmem_limit_bytes: tiles, see `pallas_part`.

    Returns:
        An array `[batch, T, num_heads, head_dim]` in `query.dtype`.

    Examples:

    >>> import numpy as np, os
    >>> os.environ[INTERPRET_ENV] = "1"
    >>> x = np.random.rand(1, 20, 2, 8).astype("float32")
    >>> out = pallas_attention(x, x[:, :, :1], x[:, :, :1], scale=0.3,
    ...                        causal=True, block_q=16, block_k=16)
    >>> tuple(out.shape)
    (1, 20, 2, 8)
    """
    rule = MaskRule(window=window_from_options(causal, sliding_window),
                    key_padding_mask=key_padding_mask,
                    query_offset=query_offset,
                    query_segment_ids=query_segment_ids,
                    key_segment_ids=key_segment_ids)
    result = pallas_part(query, key, value, rule, scale=scale,
                         soft_cap=soft_cap, block_q=block_q, block_k=block_k,
                         tpu_vmem_limit_bytes=tpu_vmem_limit_bytes)
    return combine_parts([result], [value], query.dtype)


def pallas_part(query, key, value, rule, *, scale, soft_cap=None,
                block_q=None, block_k=None, tpu_vmem_limit_bytes=None):
    """One key set's `(out, lse)` (see `attention_parts`) in Pallas.

    Args:
        query: jax array. `[batch, T, num_heads, head_dim]`.
        key: jax array. `[batch, S, num_kv_heads, head_dim]`.
        value: jax array. `[batch, S, num_kv_heads, head_dim]`.
        rule: MaskRule. Which keys each query sees.
        scale: float. Multiplies the query-key logits.
        soft_cap: float or None. `tanh(x / c) * c`. Defaults to `None`.
        block_q: int or None. Query tile: a power of 2 >= 16 on GPU, a
            multiple of 8 (best 128) on TPU. Defaults to `DEFAULT_BLOCK_Q`
            (`TPU_BLOCK_Q` when the default device is a TPU).
        block_k: int or None. Key tile, likewise. Defaults to
            `DEFAULT_BLOCK_K` (`TPU_BLOCK_K` on TPU).
        tpu_vmem_limit_bytes: int or None. Mosaic's scoped VMEM limit for
            the kernels on TPU. Defaults to `None`: enough for the whole
            key/value (forward, dQ) or query (dK/dV) sequence of one head
            that each program keeps in VMEM.

    Returns:
        `(out [batch, T, num_heads, head_dim], lse [batch, T, num_heads])`,
        float32.
    """
    batch, query_length, num_heads, head_dim = query.shape
    key_length, num_kv_heads = key.shape[1], key.shape[2]
    on_tpu = dispatch.device_kind() == "tpu"
    if block_q is None:
        block_q = TPU_BLOCK_Q if on_tpu else DEFAULT_BLOCK_Q
    if block_k is None:
        block_k = TPU_BLOCK_K if on_tpu else DEFAULT_BLOCK_K
    # Triton dots need tiles of at least 16 rows.
    block_q = min(block_q, max(16, _next_power_of_2(query_length)))
    block_k = min(block_k, max(16, _next_power_of_2(key_length)))
    num_query_blocks = -(-query_length // block_q)
    num_key_blocks = -(-key_length // block_k)
    padded_head_dim = _next_power_of_2(head_dim)
    window = rule.window
    # The static part of the rule; the kernels get the codes as arrays.
    cfg = _Config(
        scale=float(scale), soft_cap=soft_cap,
        window=window, keys_before=window.left,
        keys_after=window.right, block_q=block_q, block_k=block_k,
        num_query_blocks=num_query_blocks, num_key_blocks=num_key_blocks,
        padded_queries=num_query_blocks * block_q,
        padded_keys=num_key_blocks * block_k, head_dim=padded_head_dim,
        num_heads=num_heads, groups=num_heads // num_kv_heads,
        key_length=key_length, batch=batch,
        tpu_vmem_limit_bytes=_tpu_vmem_limit(
            tpu_vmem_limit_bytes, query, num_query_blocks * block_q,
            num_key_blocks * block_k, padded_head_dim))

    def pad(x, length):  # [B, L, N, H] -> head-major [B, N, Lp, Hp]
        x = jnp.pad(x, ((0, 0), (0, length - x.shape[1]), (0, 0),
                        (0, padded_head_dim - head_dim)))
        return jnp.transpose(x, (0, 2, 1, 3))

    query_codes, key_codes = rule.full_codes(batch, query_length, key_length)
    if query_codes is None:
        query_codes = jnp.zeros((batch, query_length), jnp.int32)
        key_codes = jnp.zeros((batch, key_length), jnp.int32)
    # Keys past S get PAD_CODE: never visible.
    key_codes = jnp.pad(jnp.asarray(key_codes, jnp.int32),
                        ((0, 0), (0, cfg.padded_keys - key_length)),
                        constant_values=PAD_CODE)
    key_codes = key_codes.reshape(batch, num_key_blocks, 1, block_k)
    query_codes = jnp.pad(jnp.asarray(query_codes, jnp.int32),
                          ((0, 0), (0, cfg.padded_queries - query_length)))
    query_codes = query_codes.reshape(batch, num_query_blocks, 1, block_q)
    offset = jnp.reshape(jnp.asarray(rule.query_offset, jnp.int32), (1, 1))
    out, lse = _flash(cfg, pad(query, cfg.padded_queries),
                      pad(key, cfg.padded_keys), pad(value, cfg.padded_keys),
                      offset, query_codes, key_codes)
    out = jnp.transpose(out, (0, 2, 1, 3))[:, :query_length, :, :head_dim]
    lse = jnp.transpose(lse, (0, 2, 1))[:, :query_length]
    return out.astype(jnp.float32), lse
