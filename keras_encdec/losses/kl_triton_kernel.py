"""Triton kernels for the distillation loss KL(teacher || student) (torch).

Imported only on the torch backend, after `triton` (like
`triton_kernel.py`, whose tile-logits and tanh helpers these reuse). CUDA
tensors run compiled; CPU tensors run when `TRITON_INTERPRET=1` was set
before import.

- forward, grid over token blocks: loop over vocabulary tiles, both sides'
  logits in fp32, soft-cap, temperature, online log-sum-exp of each side and
  the teacher-weighted sum of `t - s`. Writes the per-token KL,
  `LSE(s)` and `LSE(t)` (fp32).
- `dE` kernel (token blocks) and `dC` kernel (vocabulary tiles, in groups
  of `triton_kernel.GROUP_ROWS` rows): recompute both tiles,
  `d = (softmax(s) - softmax(t)) * g / T * cap'(s)`, fp32 read-modify-write
  on rows the program owns (no atomics).

The teacher gets no gradient. Not measured on a GPU yet.
"""

import torch
import triton
import triton.language as tl

from keras_encdec.losses import triton_kernel as ce
from keras_encdec.losses.triton_kernel import _tanh
from keras_encdec.losses.triton_kernel import _tile_logits


@triton.jit
def _both(H, W, TH, TW, rows, cols, N, V, D, DT, inv_t, cap, t_cap,
          HAS_CAP: tl.constexpr, HAS_T_CAP: tl.constexpr, BN: tl.constexpr,
          BV: tl.constexpr, BD: tl.constexpr):
    """(capped student, s, t), padded columns at -inf."""
    capped = _tile_logits(H, W, rows, cols, N, V, D, BD, BN, BV)
    if HAS_CAP:
        capped = cap * _tanh(capped / cap)
    t = _tile_logits(TH, TW, rows, cols, N, V, DT, BD, BN, BV)
    if HAS_T_CAP:
        t = t_cap * _tanh(t / t_cap)
    keep = cols[None, :] < V
    s = tl.where(keep, capped * inv_t, float("-inf"))
    t = tl.where(keep, t * inv_t, float("-inf"))
    return capped, s, t


@triton.jit
def _tile_grad(H, W, TH, TW, LSE_S, LSE_T, G, rows, cols, N, V, D, DT,
               inv_t, cap, t_cap, HAS_CAP: tl.constexpr,
               HAS_T_CAP: tl.constexpr, BN: tl.constexpr, BV: tl.constexpr,
               BD: tl.constexpr):
    capped, s, t = _both(H, W, TH, TW, rows, cols, N, V, D, DT, inv_t, cap,
                         t_cap, HAS_CAP, HAS_T_CAP, BN, BV, BD)
    lse_s = tl.load(LSE_S + rows, mask=rows < N, other=0.0)
    lse_t = tl.load(LSE_T + rows, mask=rows < N, other=0.0)
    g = tl.load(G + rows, mask=rows < N, other=0.0)
    d = tl.exp(s - lse_s[:, None]) - tl.exp(t - lse_t[:, None])
    d = d * (g * inv_t)[:, None]
    if HAS_CAP:
        d = d * (1.0 - (capped / cap) * (capped / cap))
    return d


@triton.jit
def _forward_kernel(H, W, TH, TW, KL, LSE_S, LSE_T, N, V, D, DT, inv_t, cap,
                    t_cap, HAS_CAP: tl.constexpr, HAS_T_CAP: tl.constexpr,
                    BN: tl.constexpr, BV: tl.constexpr, BD: tl.constexpr):
    rows = tl.program_id(0) * BN + tl.arange(0, BN)
    m_s = tl.full([BN], float("-inf"), tl.float32)
    m_t = tl.full([BN], float("-inf"), tl.float32)
    sum_s = tl.zeros([BN], dtype=tl.float32)
    sum_t = tl.zeros([BN], dtype=tl.float32)
    cross = tl.zeros([BN], dtype=tl.float32)
    for v0 in range(0, V, BV):
        cols = v0 + tl.arange(0, BV)
        _, s, t = _both(H, W, TH, TW, rows, cols, N, V, D, DT, inv_t, cap,
                        t_cap, HAS_CAP, HAS_T_CAP, BN, BV, BD)
        m_s_new = tl.maximum(m_s, tl.max(s, axis=1))
        sum_s = sum_s * tl.exp(m_s - m_s_new) + tl.sum(
            tl.exp(s - m_s_new[:, None]), axis=1)
        m_t_new = tl.maximum(m_t, tl.max(t, axis=1))
        alpha = tl.exp(m_t - m_t_new)
        exp_t = tl.exp(t - m_t_new[:, None])
        diff = tl.where(cols[None, :] < V, t - s, 0.0)
        sum_t = sum_t * alpha + tl.sum(exp_t, axis=1)
        cross = cross * alpha + tl.sum(exp_t * diff, axis=1)
        m_s, m_t = m_s_new, m_t_new
    lse_s = m_s + tl.log(sum_s)
    lse_t = m_t + tl.log(sum_t)
    tl.store(KL + rows, cross / sum_t - lse_t + lse_s, mask=rows < N)
    tl.store(LSE_S + rows, lse_s, mask=rows < N)
    tl.store(LSE_T + rows, lse_t, mask=rows < N)


@triton.jit
def _d_hidden_kernel(H, W, TH, TW, LSE_S, LSE_T, G, DH, N, V, D, DT, inv_t,
                     cap, t_cap, HAS_CAP: tl.constexpr,
                     HAS_T_CAP: tl.constexpr, BN: tl.constexpr,
                     BV: tl.constexpr, BD: tl.constexpr):
    rows = tl.program_id(0) * BN + tl.arange(0, BN)
    for v0 in range(0, V, BV):
        cols = v0 + tl.arange(0, BV)
        d = _tile_grad(H, W, TH, TW, LSE_S, LSE_T, G, rows, cols, N, V, D,
                       DT, inv_t, cap, t_cap, HAS_CAP, HAS_T_CAP, BN, BV, BD)
        d = d.to(H.dtype.element_ty)
        for d0 in range(0, D, BD):
            dims = d0 + tl.arange(0, BD)
            w = tl.load(W + cols[:, None] * D + dims[None, :],
                        mask=(cols[:, None] < V) & (dims[None, :] < D),
                        other=0.0)
            ptr = DH + rows[:, None] * D + dims[None, :]
            mask = (rows[:, None] < N) & (dims[None, :] < D)
            acc = tl.load(ptr, mask=mask, other=0.0)
            acc += tl.dot(d, w, input_precision="ieee")
            tl.store(ptr, acc, mask=mask)


@triton.jit
def _d_embedding_kernel(H, W, TH, TW, LSE_S, LSE_T, G, DW, N, V, D, DT,
                        inv_t, cap, t_cap, HAS_CAP: tl.constexpr,
                        HAS_T_CAP: tl.constexpr, BN: tl.constexpr,
                        BV: tl.constexpr, BD: tl.constexpr):
    cols = tl.program_id(0) * BV + tl.arange(0, BV)
    for n0 in range(0, N, BN):
        rows = n0 + tl.arange(0, BN)
        d = _tile_grad(H, W, TH, TW, LSE_S, LSE_T, G, rows, cols, N, V, D,
                       DT, inv_t, cap, t_cap, HAS_CAP, HAS_T_CAP, BN, BV, BD)
        d = d.to(H.dtype.element_ty)
        for d0 in range(0, D, BD):
            dims = d0 + tl.arange(0, BD)
            h = tl.load(H + rows[:, None] * D + dims[None, :],
                        mask=(rows[:, None] < N) & (dims[None, :] < D),
                        other=0.0)
            ptr = DW + cols[:, None] * D + dims[None, :]
            mask = (cols[:, None] < V) & (dims[None, :] < D)
            acc = tl.load(ptr, mask=mask, other=0.0)
            acc += tl.dot(tl.trans(d), h, input_precision="ieee")
            tl.store(ptr, acc, mask=mask)


class _LinearKL(torch.autograd.Function):
    @staticmethod
    def forward(ctx, hidden, embedding, t_hidden, t_embedding, config):
        n, dim = hidden.shape
        vocab, t_dim = t_embedding.shape
        kl, lse_s, lse_t = (torch.empty(n, dtype=torch.float32,
                                        device=hidden.device)
                            for _ in range(3))
        _forward_kernel[(triton.cdiv(n, ce.BLOCK_TOKENS),)](
            hidden, embedding, t_hidden, t_embedding, kl, lse_s, lse_t, n,
            vocab, dim, t_dim, *config["scalars"], **config["consts"])
        ctx.save_for_backward(hidden, embedding, t_hidden, t_embedding,
                              lse_s, lse_t)
        ctx.config = config
        return kl

    @staticmethod
    def backward(ctx, upstream):
        hidden, embedding, t_hidden, t_embedding, lse_s, lse_t = (
            ctx.saved_tensors)
        config = ctx.config
        n, dim = hidden.shape
        vocab, t_dim = t_embedding.shape
        g = upstream.float().contiguous()
        d_hidden = torch.zeros(n, dim, dtype=torch.float32,
                               device=hidden.device)
        tail = (*config["scalars"],)
        _d_hidden_kernel[(triton.cdiv(n, ce.BLOCK_TOKENS),)](
            hidden, embedding, t_hidden, t_embedding, lse_s, lse_t, g,
            d_hidden, n, vocab, dim, t_dim, *tail, **config["consts"])
        d_embedding = torch.empty_like(embedding)
        bv = config["consts"]["BV"]
        group = triton.cdiv(ce.GROUP_ROWS, bv) * bv
        for start in range(0, vocab, group):
            rows = min(group, vocab - start)
            part = torch.zeros(rows, dim, dtype=torch.float32,
                               device=hidden.device)
            _d_embedding_kernel[(triton.cdiv(rows, bv),)](
                hidden, embedding[start:start + rows], t_hidden,
                t_embedding[start:start + rows], lse_s, lse_t, g, part, n,
                rows, dim, t_dim, *tail, **config["consts"])
            d_embedding[start:start + rows] = part
        return d_hidden.to(hidden.dtype), d_embedding, None, None, None


def triton_kl_token_losses(hidden, embedding, teacher_hidden,
                           teacher_embedding, temperature=1.0,
                           logit_soft_cap=None, teacher_logit_soft_cap=None,
                           block_vocab=None):
    """Per-token KL(teacher || student) `[N]` fp32 with Triton kernels.

    Args:
        hidden: torch tensor. `[N, D]` student hidden states.
        embedding: torch tensor. `[V, D]`, same dtype as hidden.
        teacher_hidden: torch tensor. `[N, Dt]`.
        teacher_embedding: torch tensor. `[V, Dt]`.
        temperature: float. Defaults to 1.0.
        logit_soft_cap: float or None. Student soft-cap.
        teacher_logit_soft_cap: float or None. Teacher soft-cap.
        block_vocab: int or None. Vocabulary tile, a power of two >= 16.
            Defaults to None (`triton_kernel.BLOCK_VOCAB`).

    Returns:
        `[N]` float32 losses; gradients reach `hidden` and `embedding`.
    """
    if block_vocab is not None and (
        block_vocab < 16 or block_vocab & (block_vocab - 1)
    ):
        raise ValueError(
            "impl='triton' needs a power-of-two vocabulary tile >= 16. "
            f"Received: chunk_size={block_vocab}."
        )
    tensors = [hidden, embedding, teacher_hidden.detach(),
               teacher_embedding.detach()]
    if not hidden.is_cuda:
        # As in triton_kernel: the CPU interpreter needs fp32 dots.
        tensors = [x.float() for x in tensors]
    else:  # one dtype per side: the teacher follows the student's
        tensors[2:] = [x.to(hidden.dtype) for x in tensors[2:]]
    config = dict(
        scalars=(1.0 / float(temperature), float(logit_soft_cap or 1.0),
                 float(teacher_logit_soft_cap or 1.0)),
        consts=dict(HAS_CAP=logit_soft_cap is not None,
                    HAS_T_CAP=teacher_logit_soft_cap is not None,
                    BN=ce.BLOCK_TOKENS, BV=block_vocab or ce.BLOCK_VOCAB,
                    BD=ce.BLOCK_DIM),
    )
    return _LinearKL.apply(*[x.contiguous() for x in tensors], config)
