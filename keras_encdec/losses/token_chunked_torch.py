"""The fused token-chunk losses of `token_chunked.py`, in plain torch.

Same mathematics and the same chunking as `reduced_ce_grad_in_forward` and
`reduced_kl_grad_in_forward` (see `token_chunked.py`), as one
`torch.autograd.Function` each. Why not the `keras.ops` version on torch:
eager torch runs every op as its own pass over the `[C, V]` chunk, and the
portable formulation (log-sum-exp, a one-hot `where`, `exp(z - lse)`,
subtract the one-hot, scale) makes about eleven of them. Here the chunk
takes a fused `log_softmax`, an in-place `exp_`, a scatter of `-w` at the
labels and in-place scalings, and the `[V, D]` gradient accumulates with
`addmm_`. Measured at N=1024, D=256, V=8192 (BENCHMARKS.md, issue 16).
"""

import torch


def _walk(h, e, rows, chunk_fn):
    """`(total, d_h, d_e)`: `chunk_fn(start, stop)` returns a chunk's
    weighted loss sum and its fp32 logit gradient `[C, V]` (may be
    overwritten); this walk adds `d_h = d E` and `d_e = sum d^T h`."""
    num_tokens = h.shape[0]
    d_h = torch.empty_like(h)
    d_e = torch.zeros(e.shape, dtype=torch.float32, device=e.device)
    total = torch.zeros((), dtype=torch.float32, device=h.device)
    for start in range(0, num_tokens, rows):
        stop = min(start + rows, num_tokens)
        loss, d = chunk_fn(start, stop)
        total += loss
        d = d.to(h.dtype)  # matmul dtype; no copy when equal
        torch.mm(d, e, out=d_h[start:stop])
        if h.dtype == torch.float32:
            d_e.addmm_(d.t(), h[start:stop])
        else:
            d_e += torch.mm(d.t(), h[start:stop]).float()
    return total, d_h, d_e


def _capped_logits(h_c, e, cap):
    """fp32 `(z, dz/draw)` of `cap * tanh(h_c E^T / cap)`; the derivative
    is None without a cap."""
    z = torch.mm(h_c, e.t()).float()
    if cap is None:
        return z, None
    t = torch.tanh(z.div_(cap))
    z = t * cap
    return z, t.square_().neg_().add_(1.0)


class _FusedLoss(torch.autograd.Function):
    """Scalar loss of `_walk`; its backward scales the saved gradients."""

    @staticmethod
    def forward(ctx, h, e, walk):
        total, d_h, d_e = walk()
        ctx.save_for_backward(d_h, d_e)
        ctx.e_dtype = e.dtype
        return total

    @staticmethod
    def backward(ctx, upstream):
        d_h, d_e = ctx.saved_tensors
        g = upstream.float()
        if d_h.dtype == torch.float32:
            grad_h = d_h * g
        else:
            grad_h = (d_h.float() * g).to(d_h.dtype)
        return grad_h, (d_e * g).to(ctx.e_dtype), None


def _fused_loss(hidden, embedding, rows, chunk_fn):
    """The scalar of `_walk(hidden, embedding, rows, chunk_fn)`, with its
    gradient for `hidden` and `embedding`."""
    return _FusedLoss.apply(
        hidden, embedding,
        lambda: _walk(hidden, embedding, rows, chunk_fn),
    )


def reduced_ce(hidden, embedding, labels, token_weights, rows,
               logit_soft_cap=None, filter_eps=None):
    """`sum_n token_weights[n] * CE_n`, gradient built in the forward.

    Args as `token_chunked.reduced_ce_grad_in_forward`, plus `rows`, the
    tokens per chunk. Labels are in `[0, V)` or -1 with weight 0.
    """
    index = labels.long().clamp_min(0)[:, None]  # -1: weight 0 anyway
    weights = token_weights.float()[:, None]

    def chunk_fn(start, stop):
        z, dcap = _capped_logits(hidden[start:stop], embedding, logit_soft_cap)
        w_c, y_c = weights[start:stop], index[start:stop]
        d = torch.log_softmax(z, dim=-1)
        loss = -(w_c * d.gather(1, y_c)).sum()
        d.exp_()  # softmax
        d.scatter_add_(1, y_c, torch.full_like(w_c, -1.0))  # - onehot
        if filter_eps is not None:
            d.masked_fill_(d.abs() < filter_eps, 0.0)
        d.mul_(w_c)
        if dcap is not None:
            d.mul_(dcap)
        return loss, d

    return _fused_loss(hidden, embedding, rows, chunk_fn)


def reduced_kl(hidden, embedding, teacher_hidden, teacher_embedding,
               token_weights, rows, temperature=1.0, logit_soft_cap=None,
               teacher_logit_soft_cap=None):
    """`sum_n token_weights[n] * KL_n(teacher || student)`, gradient built
    in the forward. Args as `token_chunked.reduced_kl_grad_in_forward`,
    plus `rows`, the tokens per chunk."""
    inv_t = 1.0 / float(temperature)
    weights = token_weights.float()[:, None]
    teacher_hidden = teacher_hidden.detach()
    teacher_embedding = teacher_embedding.detach()

    def chunk_fn(start, stop):
        s, dcap = _capped_logits(
            hidden[start:stop], embedding, logit_soft_cap)
        t, _ = _capped_logits(
            teacher_hidden[start:stop], teacher_embedding,
            teacher_logit_soft_cap)
        if inv_t != 1.0:
            s.mul_(inv_t)
            t.mul_(inv_t)
        log_s = torch.log_softmax(s, dim=-1)
        log_t = torch.log_softmax(t, dim=-1)
        p_t = log_t.exp()
        # KL = sum_v p_t (log p_t - log p_s).
        w_c = weights[start:stop]
        loss = (w_c * (p_t * log_t.sub_(log_s)).sum(-1, keepdim=True)).sum()
        d = log_s.exp_().sub_(p_t).mul_(w_c * inv_t)
        if dcap is not None:
            d.mul_(dcap)
        return loss, d

    return _fused_loss(hidden, embedding, rows, chunk_fn)
