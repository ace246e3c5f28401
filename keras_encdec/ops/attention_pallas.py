"""Flash attention in Pallas (`impl="pallas"`): JAX only, GPU (Triton).

Forward and backward kernels in the style of
`jax.experimental.pallas.ops.gpu.attention`, extended with what T5Gemma
needs, all fused: Gemma 2's logit soft-cap (and its derivative), the causal
and two-sided sliding windows, key padding, grouped-query attention (a key
head serves `num_heads / num_kv_heads` query heads through the block index
maps) and a query offset for decode steps. Each program visits only the key
blocks (forward, dQ) or query blocks (dK/dV) that its window can reach.

Semantics equal `dot_product_attention(impl="dense")`, including a fully
masked row (it reads the mean of all values).

Interpret mode: with the environment variable
`KERAS_ENCDEC_PALLAS_INTERPRET=1` the kernels run through
`pallas_call(interpret=True)` on any JAX platform (CPU tests); it is slow
and `impl=None` never picks it. On TPU these Triton-style kernels do not
lower; use `impl="xla"` there.
"""

import functools
import os

import jax
import jax.numpy as jnp
from jax import lax
from jax.experimental import pallas as pl

MASKED_LOGIT = -1e30
_FULLY_MASKED_THRESHOLD = -1e29
INTERPRET_ENV = "KERAS_ENCDEC_PALLAS_INTERPRET"
DEFAULT_BLOCK_Q = 64
DEFAULT_BLOCK_K = 64


def interpret_mode():
    """Whether `KERAS_ENCDEC_PALLAS_INTERPRET=1` asks for interpret mode."""
    return os.environ.get(INTERPRET_ENV, "0") == "1"


def unavailable_reason(query, key):
    """Why the kernel cannot run here (JAX backend assumed), or `None`."""
    del query, key
    platform = jax.default_backend()
    if interpret_mode() or platform == "gpu":
        return None
    return (
        "impl='pallas' needs a GPU (Triton kernels); JAX runs on "
        f"{platform}. Set {INTERPRET_ENV}=1 to run it in Pallas interpret "
        "mode (slow; for tests), or use impl='xla'"
    )


def _next_power_of_2(n):
    return 1 << max(n - 1, 0).bit_length()


def _visible(query_positions, key_positions, causal, window):
    q, k = query_positions[:, None], key_positions[None, :]
    if causal:
        mask = k <= q
        if window is not None:
            mask = jnp.logical_and(mask, k > q - window)
        return mask
    if window is not None:
        return jnp.abs(q - k) <= window
    return jnp.ones((q.shape[0], k.shape[1]), jnp.bool_)


def _logits(q, k, cfg):
    """Scaled (and soft-capped) float32 logits `[block_q, block_k]`."""
    s = pl.dot(q, k, trans_b=True).astype(jnp.float32) * cfg.scale
    if cfg.soft_cap is not None:
        s = jnp.tanh(s / cfg.soft_cap) * cfg.soft_cap
    return s


def _key_block_range(query_positions, cfg):
    """`[lower, upper)` key blocks a query block can see."""
    lower, upper = 0, cfg.num_key_blocks
    if cfg.keys_before is not None:
        first = jnp.maximum(jnp.min(query_positions) - cfg.keys_before, 0)
        lower = lax.div(first, cfg.block_k)
    if cfg.keys_after is not None:
        last = jnp.max(query_positions) + cfg.keys_after
        upper = jnp.minimum(lax.div(last, cfg.block_k) + 1, upper)
    return lower, upper


def _forward_kernel(qpos_ref, valid_ref, q_ref, k_ref, v_ref, o_ref, lse_ref,
                    *, cfg):
    q, qpos = q_ref[...], qpos_ref[...]  # [bq, H], [bq]
    bq, bk = q.shape[0], cfg.block_k

    def body(j, carry):
        acc, row_max, row_sum = carry
        keys = pl.ds(j * bk, bk)
        s = _logits(q, k_ref[keys, :], cfg)
        kpos = j * bk + jnp.arange(bk)
        mask = jnp.logical_and(_visible(qpos, kpos, cfg.causal, cfg.window),
                               valid_ref[keys][None, :] != 0)
        s = jnp.where(mask, s, MASKED_LOGIT)
        new_max = jnp.maximum(row_max, jnp.max(s, axis=1))
        p = jnp.exp(s - new_max[:, None])
        correction = jnp.exp(row_max - new_max)
        v = v_ref[keys, :]
        acc = acc * correction[:, None] + pl.dot(p.astype(v.dtype), v)
        return acc, new_max, row_sum * correction + jnp.sum(p, axis=1)

    init = (jnp.zeros(q.shape, jnp.float32),
            jnp.full((bq,), MASKED_LOGIT, jnp.float32),
            jnp.zeros((bq,), jnp.float32))
    lower, upper = _key_block_range(qpos, cfg)
    acc, row_max, row_sum = lax.fori_loop(lower, upper, body, init)
    fully_masked = row_max < _FULLY_MASKED_THRESHOLD
    row_sum = jnp.where(row_sum == 0, 1.0, row_sum)
    o_ref[...] = (acc / row_sum[:, None]).astype(o_ref.dtype)
    lse_ref[...] = jnp.where(fully_masked, -MASKED_LOGIT,
                             row_max + jnp.log(row_sum))


def _probs_and_dlogits(q, k, v, do, lse, delta, mask, cfg):
    capped = _logits(q, k, cfg)
    p = jnp.exp(jnp.where(mask, capped, MASKED_LOGIT) - lse[:, None])
    dp = pl.dot(do, v, trans_b=True).astype(jnp.float32)
    ds = p * (dp - delta[:, None])
    if cfg.soft_cap is not None:
        ds = ds * (1.0 - jnp.square(capped / cfg.soft_cap))
    return p, ds * cfg.scale


def _dkdv_kernel(qpos_ref, valid_ref, q_ref, k_ref, v_ref, do_ref, lse_ref,
                 delta_ref, dk_ref, dv_ref, *, cfg):
    k, v = k_ref[...], v_ref[...]  # [bk, H]
    bk, bq = k.shape[0], cfg.block_q
    kpos = pl.program_id(0) * bk + jnp.arange(bk)
    valid = valid_ref[...] != 0
    offset = jnp.min(qpos_ref[pl.ds(0, bq)])

    def body(i, carry):
        dk, dv = carry
        rows = pl.ds(i * bq, bq)
        q, do = q_ref[rows, :], do_ref[rows, :]
        mask = jnp.logical_and(
            _visible(qpos_ref[rows], kpos, cfg.causal, cfg.window),
            valid[None, :])
        p, ds = _probs_and_dlogits(q, k, v, do, lse_ref[rows],
                                   delta_ref[rows], mask, cfg)
        dv = dv + pl.dot(p.astype(do.dtype), do, trans_a=True)
        dk = dk + pl.dot(ds.astype(q.dtype), q, trans_a=True)
        return dk, dv

    # Query blocks that can see this key block: q in [k0 - after, k1 + before].
    lower, upper = 0, cfg.num_query_blocks
    if cfg.keys_after is not None:
        first = jnp.maximum(jnp.min(kpos) - cfg.keys_after - offset, 0)
        lower = lax.div(first, bq)
    if cfg.keys_before is not None:
        last = jnp.max(kpos) + cfg.keys_before - offset
        upper = jnp.minimum(lax.div(jnp.maximum(last + bq, 0), bq), upper)
    zeros = jnp.zeros(k.shape, jnp.float32)
    dk, dv = lax.fori_loop(lower, upper, body, (zeros, zeros))
    dk_ref[...] = dk.astype(dk_ref.dtype)
    dv_ref[...] = dv.astype(dv_ref.dtype)


def _dq_kernel(qpos_ref, valid_ref, q_ref, k_ref, v_ref, do_ref, lse_ref,
               delta_ref, dq_ref, *, cfg):
    q, do, qpos = q_ref[...], do_ref[...], qpos_ref[...]
    lse, delta, bk = lse_ref[...], delta_ref[...], cfg.block_k

    def body(j, dq):
        keys = pl.ds(j * bk, bk)
        k = k_ref[keys, :]
        kpos = j * bk + jnp.arange(bk)
        mask = jnp.logical_and(_visible(qpos, kpos, cfg.causal, cfg.window),
                               valid_ref[keys][None, :] != 0)
        _, ds = _probs_and_dlogits(q, k, v_ref[keys, :], do, lse, delta,
                                   mask, cfg)
        return dq + pl.dot(ds.astype(k.dtype), k)

    lower, upper = _key_block_range(qpos, cfg)
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


def _specs(cfg, batch_block, names):
    """BlockSpecs over grid `(block, batch, head)` for each named input."""
    bq, bk, g = cfg.block_q, cfg.block_k, cfg.groups
    tp, sp, hp = cfg.padded_queries, cfg.padded_keys, cfg.head_dim
    whole = dict(
        qpos=pl.BlockSpec((tp,), lambda i, b, n: (0,)),
        valid=pl.BlockSpec((None, sp), lambda i, b, n: (b, 0)),
        q=pl.BlockSpec((None, tp, None, hp), lambda i, b, n: (b, 0, n, 0)),
        kv=pl.BlockSpec((None, sp, None, hp),
                        lambda i, b, n: (b, 0, n // g, 0)),
        row=pl.BlockSpec((None, None, tp), lambda i, b, n: (b, n, 0)),
    )
    blocked = dict(
        qpos=pl.BlockSpec((bq,), lambda i, b, n: (i,)),
        valid=pl.BlockSpec((None, bk), lambda i, b, n: (b, i)),
        q=pl.BlockSpec((None, bq, None, hp), lambda i, b, n: (b, i, n, 0)),
        kv=pl.BlockSpec((None, bk, None, hp),
                        lambda i, b, n: (b, i, n // g, 0)),
        kv_per_head=pl.BlockSpec((None, bk, None, hp),
                                 lambda i, b, n: (b, i, n, 0)),
        row=pl.BlockSpec((None, None, bq), lambda i, b, n: (b, n, i)),
    )
    return [blocked[name[1:]] if name[0] == "+" else whole[name]
            for name in names]


def _call(kernel, cfg, grid_blocks, in_names, out_names, out_shapes, *args):
    batch, heads = args[2].shape[0], cfg.num_heads
    return pl.pallas_call(
        functools.partial(kernel, cfg=cfg),
        grid=(grid_blocks, batch, heads),
        in_specs=_specs(cfg, batch, in_names),
        out_specs=_specs(cfg, batch, out_names),
        out_shape=out_shapes,
        interpret=interpret_mode(),
    )(*args)


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def _flash(cfg, q, k, v, qpos, valid):
    return _flash_forward(cfg, q, k, v, qpos, valid)[0]


def _flash_forward(cfg, q, k, v, qpos, valid):
    batch = q.shape[0]
    lse_shape = jax.ShapeDtypeStruct((batch, cfg.num_heads,
                                      cfg.padded_queries), jnp.float32)
    out, lse = _call(_forward_kernel, cfg, cfg.num_query_blocks,
                     ["+qpos", "valid", "+q", "kv", "kv"], ["+q", "+row"],
                     [jax.ShapeDtypeStruct(q.shape, q.dtype), lse_shape],
                     qpos, valid, q, k, v)
    fully_masked = jnp.transpose(lse > -_FULLY_MASKED_THRESHOLD, (0, 2, 1))
    value_mean = jnp.sum(v.astype(jnp.float32), axis=1) / cfg.key_length
    value_mean = jnp.repeat(value_mean, cfg.groups, axis=1)  # [B, N, H]
    out = jnp.where(fully_masked[..., None], value_mean[:, None].astype(
        out.dtype), out)
    return out, (q, k, v, qpos, valid, out, lse)


def _flash_backward(cfg, residuals, d_out):
    q, k, v, qpos, valid, out, lse = residuals
    batch, heads = q.shape[0], cfg.num_heads
    delta = jnp.sum(d_out.astype(jnp.float32) * out.astype(jnp.float32), -1)
    delta = jnp.transpose(delta, (0, 2, 1))  # [B, N, Tp]
    do = d_out.astype(q.dtype)
    per_head = jax.ShapeDtypeStruct(
        (batch, cfg.padded_keys, heads, cfg.head_dim), jnp.float32)
    dk, dv = _call(_dkdv_kernel, cfg, cfg.num_key_blocks,
                   ["qpos", "+valid", "q", "+kv", "+kv", "q", "row", "row"],
                   ["+kv_per_head", "+kv_per_head"], [per_head, per_head],
                   qpos, valid, q, k, v, do, lse, delta)
    (dq,) = _call(_dq_kernel, cfg, cfg.num_query_blocks,
               ["+qpos", "valid", "+q", "kv", "kv", "+q", "+row", "+row"],
               ["+q"], [jax.ShapeDtypeStruct(q.shape, jnp.float32)],
               qpos, valid, q, k, v, do, lse, delta)
    # Fully masked rows read every value with weight 1 / S.
    fully_masked = jnp.transpose(lse > -_FULLY_MASKED_THRESHOLD, (0, 2, 1))
    uniform = jnp.sum(jnp.where(fully_masked[..., None], d_out, 0), axis=1)
    def per_kv_head(x):  # [B, Sp, N, H] -> [B, Sp, K, H]
        return x.reshape(x.shape[:2] + (heads // cfg.groups, cfg.groups,
                                        x.shape[-1])).sum(axis=3)
    real = (jnp.arange(cfg.padded_keys) < cfg.key_length)[None, :, None, None]
    dv = per_kv_head(dv) + jnp.where(
        real, per_kv_head(uniform[:, None]) / cfg.key_length, 0.0)
    return (dq.astype(q.dtype), per_kv_head(dk).astype(k.dtype),
            dv.astype(v.dtype), None, None)


_flash.defvjp(_flash_forward, _flash_backward)


def pallas_attention(query, key, value, *, scale, soft_cap=None, causal=False,
                     sliding_window=None, key_padding_mask=None,
                     query_offset=0, block_q=DEFAULT_BLOCK_Q,
                     block_k=DEFAULT_BLOCK_K):
    """Flash attention with the semantics of `dot_product_attention`.

    Args:
        query: jax array. `[batch, T, num_heads, head_dim]`.
        key: jax array. `[batch, S, num_kv_heads, head_dim]`.
        value: jax array. `[batch, S, num_kv_heads, head_dim]`.
        scale: float. Multiplies the query-key logits.
        soft_cap: float or None. `tanh(x / c) * c`. Defaults to `None`.
        causal: bool. Hide keys after the query. Defaults to `False`.
        sliding_window: int or None. Causal or two-sided window. Defaults to
            `None`.
        key_padding_mask: array or None. `[batch, S]`, true on real keys.
            Defaults to `None`.
        query_offset: int or int scalar array. Absolute position of the
            first query. Defaults to `0`.
        block_q: int. Query tile (a power of 2 >= 16 on GPU). Defaults to
            `DEFAULT_BLOCK_Q`.
        block_k: int. Key tile. Defaults to `DEFAULT_BLOCK_K`.

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
    batch, query_length, num_heads, head_dim = query.shape
    key_length, num_kv_heads = key.shape[1], key.shape[2]
    # Triton dots need tiles of at least 16 rows.
    block_q = min(block_q, max(16, _next_power_of_2(query_length)))
    block_k = min(block_k, max(16, _next_power_of_2(key_length)))
    num_query_blocks = -(-query_length // block_q)
    num_key_blocks = -(-key_length // block_k)
    padded_head_dim = _next_power_of_2(head_dim)
    keys_before = keys_after = None
    if causal:
        keys_after = 0
        keys_before = None if sliding_window is None else sliding_window - 1
    elif sliding_window is not None:
        keys_before = keys_after = sliding_window
    cfg = _Config(
        scale=float(scale), soft_cap=soft_cap, causal=causal,
        window=sliding_window, keys_before=keys_before,
        keys_after=keys_after, block_q=block_q, block_k=block_k,
        num_query_blocks=num_query_blocks, num_key_blocks=num_key_blocks,
        padded_queries=num_query_blocks * block_q,
        padded_keys=num_key_blocks * block_k, head_dim=padded_head_dim,
        num_heads=num_heads, groups=num_heads // num_kv_heads,
        key_length=key_length)

    def pad(x, length):
        return jnp.pad(x, ((0, 0), (0, length - x.shape[1]), (0, 0),
                           (0, padded_head_dim - head_dim)))

    valid = jnp.ones((batch, key_length), jnp.int32)
    if key_padding_mask is not None:
        valid = jnp.asarray(key_padding_mask).astype(jnp.int32)
    valid = jnp.pad(valid, ((0, 0), (0, cfg.padded_keys - key_length)))
    qpos = (jnp.arange(cfg.padded_queries, dtype=jnp.int32)
            + jnp.asarray(query_offset, jnp.int32))
    out = _flash(cfg, pad(query, cfg.padded_queries),
                 pad(key, cfg.padded_keys), pad(value, cfg.padded_keys),
                 qpos, valid)
    return out[:, :query_length, :, :head_dim]
