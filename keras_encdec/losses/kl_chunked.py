"""Portable chunked distillation loss KL(teacher || student), in keras.ops.

Neither side's `[tokens, vocab]` logits exist. With `t` and `s` the teacher's
and student's logits (soft-capped, divided by the temperature) and
`p_t = softmax(t)`, per token

    KL = sum_v p_t (t - s) - LSE(t) + LSE(s).

- forward: per vocabulary chunk k, both sides' logits `[N, chunk]` in fp32,
  the chunk log-sum-exps `LSE_k(t)`, `LSE_k(s)` and the teacher-weighted
  difference `a_k = sum_{v in k} softmax_k(t)_v (t_v - s_v)`. At the end
  `sum_v p_t (t - s) = sum_k exp(LSE_k(t) - LSE(t)) a_k`. Only the fp32
  `LSE(t)[N]` and `LSE(s)[N]` are kept for the backward.
- backward (custom gradient): `dKL / ds = softmax(s) - softmax(t)`. Each
  chunk recomputes both sides' logits, then as in the cross-entropy
  (`chunked.py`): temperature and soft-cap derivatives, `dE += d @ C_chunk`
  in fp32, `dC_chunk = d^T @ E` emitted by the scan. The teacher inputs get
  no gradient.

The chunk plan (`vocab_chunk_plan`), the chunk matmul and soft-cap
(`chunk_matmul`) and the `dC` assembly (`join_vocab_blocks`) are the
cross-entropy's; an overlapping last chunk masks its repeated columns.
"""

import math

from keras import ops

from keras_encdec.losses.chunked import chunk_matmul
from keras_encdec.losses.chunked import join_vocab_blocks
from keras_encdec.losses.chunked import scan
from keras_encdec.losses.chunked import vocab_chunk_plan


def chunked_kl_token_losses(
    hidden,
    embedding,
    teacher_hidden,
    teacher_embedding,
    temperature=1.0,
    logit_soft_cap=None,
    teacher_logit_soft_cap=None,
    chunk_size=None,
):
    """Per-token KL(teacher || student) without materializing the logits.

    Args:
        hidden: tensor. `[N, D]` student hidden states (N may be dynamic).
        embedding: tensor. `[V, D]` student output embedding, same dtype.
        teacher_hidden: tensor. `[N, Dt]` teacher hidden states.
        teacher_embedding: tensor. `[V, Dt]` teacher output embedding.
        temperature: float. Both sides' logits are divided by it.
        logit_soft_cap: float or None. Student soft-cap.
        teacher_logit_soft_cap: float or None. Teacher soft-cap.
        chunk_size: int or None. Vocabulary columns per chunk. Defaults to
            None (see `resolve_vocab_chunk`).

    Returns:
        `[N]` float32 losses. Gradients reach `hidden` and `embedding` only.
    """
    vocab_size = embedding.shape[0]
    chunk, starts, first_new = vocab_chunk_plan(vocab_size, chunk_size)
    has_overlap = math.ceil(vocab_size / chunk) * chunk != vocab_size
    inv_t = 1.0 / float(temperature)
    teacher_hidden = ops.stop_gradient(teacher_hidden)
    teacher_embedding = ops.stop_gradient(teacher_embedding)

    def both_logits(h, e, th, te, start, first):
        """Returns (w, capped student, s, t, new-column mask or None)."""
        w, _, capped = chunk_matmul(h, e, start, chunk, logit_soft_cap)
        _, _, t = chunk_matmul(th, te, start, chunk, teacher_logit_soft_cap)
        s, t = capped * inv_t, t * inv_t
        is_new = None
        if has_overlap:
            cols = start + ops.arange(chunk, dtype="int32")
            is_new = ops.greater_equal(cols, first)[None, :]  # [1, C]
            s = ops.where(is_new, s, float("-inf"))
            t = ops.where(is_new, t, float("-inf"))
        return w, capped, s, t, is_new

    @ops.custom_gradient
    def token_losses(h, e, th, te):
        def forward_chunk(carry, xs):
            start, first = xs
            _, _, s, t, is_new = both_logits(h, e, th, te, start, first)
            # One exp of the teacher serves its LSE and the weighted sum.
            max_t = ops.max(t, axis=-1)  # [N]
            exp_t = ops.exp(t - max_t[:, None])
            sum_t = ops.sum(exp_t, axis=-1)
            diff = t - s
            if is_new is not None:
                diff = ops.where(is_new, diff, 0.0)  # -inf - -inf
            weighted = ops.sum(exp_t * diff, axis=-1) / sum_t
            lse_t = max_t + ops.log(sum_t)
            return carry, (lse_t, ops.logsumexp(s, axis=-1), weighted)

        _, (chunk_lse_t, chunk_lse_s, chunk_cross) = scan(
            forward_chunk,
            ops.zeros((), "float32"),
            xs=(starts, first_new),
            y_dtypes=("float32",) * 3,
        )  # [K, N] each
        lse_t = ops.logsumexp(chunk_lse_t, axis=0)  # [N]
        lse_s = ops.logsumexp(chunk_lse_s, axis=0)
        cross = ops.sum(ops.exp(chunk_lse_t - lse_t) * chunk_cross, axis=0)
        losses = cross - lse_t + lse_s

        def grad(*args, upstream=None):
            if upstream is None:
                (upstream,) = args
            scale = ops.cast(upstream, "float32") * inv_t  # [N]

            def backward_chunk(d_hidden, xs):
                start, first = xs
                w, capped, s, t, _ = both_logits(h, e, th, te, start, first)
                d = ops.exp(s - lse_s[:, None]) - ops.exp(t - lse_t[:, None])
                d = d * scale[:, None]
                if logit_soft_cap is not None:
                    # d tanh = 1 - tanh^2, from the capped logits.
                    d = d * (1.0 - ops.square(capped / logit_soft_cap))
                d = ops.cast(d, h.dtype)  # matmul dtype
                d_hidden = d_hidden + ops.cast(ops.matmul(d, w), "float32")
                return d_hidden, (ops.matmul(ops.transpose(d), h),)

            d_hidden, (d_blocks,) = scan(
                backward_chunk,
                ops.zeros_like(h, dtype="float32"),
                xs=(starts, first_new),
                y_dtypes=(h.dtype,),
            )  # [N, D] fp32, ([K, C, D],)
            d_embedding = join_vocab_blocks(d_blocks, vocab_size)
            return (
                ops.cast(d_hidden, h.dtype),
                ops.cast(d_embedding, e.dtype),
                None,
                None,
            )

        return losses, grad

    return token_losses(hidden, embedding, teacher_hidden, teacher_embedding)
