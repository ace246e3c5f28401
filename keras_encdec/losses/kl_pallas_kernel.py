"""Pallas kernels for the distillation loss KL(teacher || student) (jax).

Built from the cross-entropy kernels' pieces (`pallas_kernel.py`: tile
logits with an inner loop over D, soft-cap, accumulator zeroing, Triton
compiler params or interpret mode, `dC` in fp32 vocabulary groups):

- forward, grid over token blocks: loop over vocabulary tiles, both sides'
  logits `[BN, BV]` in fp32, soft-cap, temperature, online log-sum-exp of
  each side and the teacher-weighted sum of `t - s` (rescaled with the
  teacher's running max). Writes the per-token KL, `LSE(s)` and `LSE(t)`.
- `dE` kernel (token blocks) and `dC` kernel (vocabulary tiles) recompute
  both sides' tiles, `d = (softmax(s) - softmax(t)) * g / T * cap'(s)`, and
  accumulate `dE += d @ C`, `dC += d^T @ E` in fp32. No atomics.

The teacher's width may differ from the student's; each side is padded to
its own whole tiles. The teacher gets no gradient.
"""

import functools

import jax
import jax.numpy as jnp
from jax.experimental import pallas as pl

from keras_encdec.losses import pallas_kernel as ce
from keras_encdec.losses.pallas_kernel import _backend_options
from keras_encdec.losses.pallas_kernel import _cap
from keras_encdec.losses.pallas_kernel import _full
from keras_encdec.losses.pallas_kernel import _round_up
from keras_encdec.losses.pallas_kernel import _rows
from keras_encdec.losses.pallas_kernel import _tile_logits
from keras_encdec.losses.pallas_kernel import _zero_columns


def _both(h_ref, w_ref, th_ref, tw_ref, j, cfg, rows=slice(None)):
    """Student (capped, s) and teacher t tiles `[BN, BV]`, padded columns
    at -inf."""
    scfg, tcfg = cfg["student"], cfg["teacher"]
    capped = _cap(_tile_logits(h_ref, w_ref, j, scfg, rows), scfg)
    t = _cap(_tile_logits(th_ref, tw_ref, j, tcfg, rows), tcfg) * cfg["inv_t"]
    cols = j * cfg["bv"] + jax.lax.broadcasted_iota(jnp.int32, t.shape, 1)
    keep = cols < cfg["v"]
    s = jnp.where(keep, capped * cfg["inv_t"], -jnp.inf)
    return capped, s, jnp.where(keep, t, -jnp.inf), keep


def _tile_grad(refs, lse_s, lse_t, g, j, cfg, rows=slice(None)):
    capped, s, t, _ = _both(*refs, j, cfg, rows)
    d = jnp.exp(s - lse_s[:, None]) - jnp.exp(t - lse_t[:, None])
    d = d * (g * cfg["inv_t"])[:, None]
    cap = cfg["student"]["cap"]
    if cap is not None:
        d = d * (1.0 - jnp.square(capped / cap))
    return d


def _forward_kernel(h_ref, w_ref, th_ref, tw_ref, kl_ref, lse_s_ref,
                    lse_t_ref, *, cfg):
    bn = cfg["bn"]

    def step(j, carry):
        m_s, sum_s, m_t, sum_t, cross = carry
        _, s, t, keep = _both(h_ref, w_ref, th_ref, tw_ref, j, cfg)
        m_s_new = jnp.maximum(m_s, jnp.max(s, axis=1))
        sum_s = sum_s * jnp.exp(m_s - m_s_new) + jnp.sum(
            jnp.exp(s - m_s_new[:, None]), 1)
        m_t_new = jnp.maximum(m_t, jnp.max(t, axis=1))
        alpha = jnp.exp(m_t - m_t_new)
        exp_t = jnp.exp(t - m_t_new[:, None])
        sum_t = sum_t * alpha + jnp.sum(exp_t, 1)
        diff = jnp.where(keep, t - s, 0.0)
        cross = cross * alpha + jnp.sum(exp_t * diff, 1)
        return m_s_new, sum_s, m_t_new, sum_t, cross

    minus_inf, zeros = jnp.full((bn,), -jnp.inf), jnp.zeros((bn,))
    init = (minus_inf, zeros, minus_inf, zeros, zeros)
    m_s, sum_s, m_t, sum_t, cross = jax.lax.fori_loop(
        0, cfg["vp"] // cfg["bv"], step, init)
    lse_s, lse_t = m_s + jnp.log(sum_s), m_t + jnp.log(sum_t)
    kl_ref[...] = cross / sum_t - lse_t + lse_s
    lse_s_ref[...] = lse_s
    lse_t_ref[...] = lse_t


def _d_hidden_kernel(h_ref, w_ref, th_ref, tw_ref, lse_s_ref, lse_t_ref,
                     g_ref, dh_ref, *, cfg):
    refs = (h_ref, w_ref, th_ref, tw_ref)
    lse_s, lse_t, g = lse_s_ref[...], lse_t_ref[...], g_ref[...]
    bv, bd = cfg["bv"], cfg["student"]["bd"]
    _zero_columns(dh_ref, cfg["student"])

    @pl.loop(0, cfg["vp"] // bv)
    def _(j):
        d = _tile_grad(refs, lse_s, lse_t, g, j, cfg).astype(h_ref.dtype)

        @pl.loop(0, cfg["student"]["dp"] // bd)
        def _(k):
            w = w_ref[pl.ds(j * bv, bv), pl.ds(k * bd, bd)]
            dh_ref[:, pl.ds(k * bd, bd)] += jnp.dot(
                d, w, preferred_element_type=jnp.float32)


def _d_embedding_kernel(h_ref, w_ref, th_ref, tw_ref, lse_s_ref, lse_t_ref,
                        g_ref, dw_ref, *, cfg):
    refs = (h_ref, w_ref, th_ref, tw_ref)
    bn, bd = cfg["bn"], cfg["student"]["bd"]
    j = pl.program_id(0)
    _zero_columns(dw_ref, cfg["student"])

    @pl.loop(0, cfg["np"] // bn)
    def _(i):
        rows = pl.ds(i * bn, bn)
        d = _tile_grad(refs, lse_s_ref[rows], lse_t_ref[rows], g_ref[rows],
                       j, cfg, rows).astype(h_ref.dtype)

        @pl.loop(0, cfg["student"]["dp"] // bd)
        def _(k):
            h = h_ref[rows, pl.ds(k * bd, bd)]
            dw_ref[:, pl.ds(k * bd, bd)] += jax.lax.dot_general(
                d, h, (((0,), (0,)), ((), ())),
                preferred_element_type=jnp.float32)


def _forward(h, w, th, tw, cfg):
    bn = cfg["bn"]
    out = jax.ShapeDtypeStruct((cfg["np"],), jnp.float32)
    dp, tdp = cfg["student"]["dp"], cfg["teacher"]["dp"]
    return pl.pallas_call(
        functools.partial(_forward_kernel, cfg=cfg),
        out_shape=(out, out, out),
        grid=(cfg["np"] // bn,),
        in_specs=[_rows(bn, dp), _full(w.shape), _rows(bn, tdp),
                  _full(tw.shape)],
        out_specs=(_rows(bn),) * 3,
        **_backend_options(cfg),
        name="kl_forward",
    )(h, w, th, tw)


def _backward(h, w, th, tw, lse_s, lse_t, g, cfg):
    bn, bv = cfg["bn"], cfg["bv"]
    dp, tdp = cfg["student"]["dp"], cfg["teacher"]["dp"]
    dh = pl.pallas_call(
        functools.partial(_d_hidden_kernel, cfg=cfg),
        out_shape=jax.ShapeDtypeStruct((cfg["np"], dp), jnp.float32),
        grid=(cfg["np"] // bn,),
        in_specs=[_rows(bn, dp), _full(w.shape), _rows(bn, tdp),
                  _full(tw.shape)] + [_rows(bn)] * 3,
        out_specs=_rows(bn, dp),
        **_backend_options(cfg),
        name="kl_d_hidden",
    )(h, w, th, tw, lse_s, lse_t, g)
    # dC one fp32 group of vocabulary rows at a time (see pallas_kernel).
    out = jnp.zeros((cfg["vp"], dp), w.dtype)
    for start in range(0, cfg["vp"], cfg["group"]):
        rows = min(cfg["group"], cfg["vp"] - start)
        part_cfg = dict(cfg, vp=rows, v=min(cfg["v"] - start, rows))
        h, out = jax.lax.optimization_barrier((h, out))
        part = pl.pallas_call(
            functools.partial(_d_embedding_kernel, cfg=part_cfg),
            out_shape=jax.ShapeDtypeStruct((rows, dp), jnp.float32),
            grid=(rows // bv,),
            in_specs=[_full(h.shape), _full((rows, dp)), _full(th.shape),
                      _full((rows, tdp))] + [_full(g.shape)] * 3,
            out_specs=_rows(bv, dp),
            **_backend_options(cfg),
            name="kl_d_embedding",
        )(h, w[start:start + rows], th, tw[start:start + rows], lse_s, lse_t,
          g)
        out = jax.lax.dynamic_update_slice(out, part.astype(w.dtype),
                                           (start, 0))
    return dh, out


def pallas_kl_token_losses(hidden, embedding, teacher_hidden,
                           teacher_embedding, temperature=1.0,
                           logit_soft_cap=None, teacher_logit_soft_cap=None,
                           block_vocab=None, interpret=False):
    """Per-token KL(teacher || student) `[N]` fp32 with Pallas kernels.

    Args:
        hidden: jax array. `[N, D]` student hidden states.
        embedding: jax array. `[V, D]`, same dtype as hidden.
        teacher_hidden: jax array. `[N, Dt]`.
        teacher_embedding: jax array. `[V, Dt]`, same dtype as the teacher
            hidden states.
        temperature: float. Defaults to 1.0.
        logit_soft_cap: float or None. Student soft-cap.
        teacher_logit_soft_cap: float or None. Teacher soft-cap.
        block_vocab: int or None. Vocabulary tile. Defaults to None
            (`pallas_kernel.BLOCK_VOCAB`).
        interpret: bool. Pallas interpret mode (CPU tests).

    Returns:
        `[N]` float32 losses; gradients reach `hidden` and `embedding`.
    """
    n, dim = hidden.shape
    vocab, t_dim = teacher_embedding.shape
    bv = block_vocab or ce.BLOCK_VOCAB
    bn = ce.BLOCK_TOKENS

    def side(d, cap):
        bd = min(ce.BLOCK_DIM, _round_up(d, 16))
        return dict(bn=bn, bv=bv, bd=bd, dp=_round_up(d, bd), cap=cap)

    cfg = dict(bn=bn, bv=bv, v=vocab, np=_round_up(n, bn),
               vp=_round_up(vocab, bv), inv_t=1.0 / float(temperature),
               student=side(dim, logit_soft_cap),
               teacher=side(t_dim, teacher_logit_soft_cap),
               interpret=interpret, group=_round_up(ce.GROUP_ROWS, bv))
    th = jax.lax.stop_gradient(teacher_hidden)
    tw = jax.lax.stop_gradient(teacher_embedding)

    def pad(x, rows, width):
        return jnp.pad(x, ((0, rows - x.shape[0]), (0, width - x.shape[1])))

    def padded(h, w):
        dp, tdp = cfg["student"]["dp"], cfg["teacher"]["dp"]
        return (pad(h, cfg["np"], dp), pad(w, cfg["vp"], dp),
                pad(th, cfg["np"], tdp), pad(tw, cfg["vp"], tdp))

    @jax.custom_vjp
    def losses(h, w):
        return _fwd(h, w)[0]

    def _fwd(h, w):
        kl, lse_s, lse_t = _forward(*padded(h, w), cfg)
        return kl[:n], (h, w, lse_s, lse_t)

    def _bwd(res, upstream):
        h, w, lse_s, lse_t = res
        g = jnp.pad(upstream.astype(jnp.float32), (0, cfg["np"] - n))
        dh, dw = _backward(*padded(h, w), lse_s, lse_t, g, cfg)
        return dh[:n, :dim].astype(h.dtype), dw[:vocab, :dim]

    losses.defvjp(_fwd, _bwd)
    return losses(hidden, embedding)
