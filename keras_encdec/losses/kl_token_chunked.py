"""Reduced distillation loss with its gradient built in the forward pass.

`linear_kl_divergence(..., impl="xla")` with a `"mean"` or `"sum"`
reduction knows, before any backward, how much each token weighs in the
result: `mask / count` or `mask`. The gradient of the scalar is then
`upstream * (dL/dh, dL/dE)` with `dL/dh` and `dL/dE` computable during the
forward. This module walks the tokens in row chunks of `C` tokens and, per
chunk, builds both sides' logits `[C, V]` once:

    s, t = soft_cap(h E^T) / T, soft_cap(h_t E_t^T) / T      (fp32)
    KL   = sum_v p_t (t - s) - LSE(t) + LSE(s)
    d    = w / T * (softmax(s) - softmax(t)) * soft_cap'      ([C, V])
    dh   = d E,   dE += d^T h

Four `N x V x D` matmuls in all, as for the dense loss (two logits, two
gradients), where the vocabulary-chunked walk (`kl_chunked.py`) needs six:
it must finish the forward's log-sum-exps before the backward can
recompute both sides' logits. Each soft-cap `tanh` is also taken once
instead of twice. Memory beyond inputs and outputs is a few `[C, V]`
buffers plus the fp32 `[V, D]` gradient accumulator.

It needs the token count at trace time (padding to whole chunks is
static); `linear_kl_divergence` uses the vocabulary walk otherwise, and for
`reduction="none"`, whose per-token upstream is only known in the backward.
"""

import math

from keras import ops

from keras_encdec.losses.chunked import scan
from keras_encdec.losses.dense import soft_cap

# Elements of one `[C, V]` fp32 buffer: C = TOKEN_CHUNK_ELEMENTS // V,
# within [TOKEN_CHUNK_MIN, TOKEN_CHUNK_MAX] rows.
# Tuned with tools/benchmark_kd_loss.py (BENCHMARKS.md).
TOKEN_CHUNK_ELEMENTS = 2**22
TOKEN_CHUNK_MIN = 8
TOKEN_CHUNK_MAX = 1024


def resolve_token_chunk(num_tokens, vocab_size):
    """Rows per token chunk: about `TOKEN_CHUNK_ELEMENTS / V`, at most N."""
    rows = TOKEN_CHUNK_ELEMENTS // max(vocab_size, 1)
    rows = max(TOKEN_CHUNK_MIN, min(TOKEN_CHUNK_MAX, rows))
    return max(1, min(rows, num_tokens))


def reduced_kl_grad_in_forward(
    hidden,
    embedding,
    teacher_hidden,
    teacher_embedding,
    token_weights,
    temperature=1.0,
    logit_soft_cap=None,
    teacher_logit_soft_cap=None,
):
    """`sum_n token_weights[n] * KL_n(teacher || student)`, gradient fused.

    Args:
        hidden: tensor. `[N, D]` student hidden states; N static.
        embedding: tensor. `[V, D]` student output embedding, same dtype.
        teacher_hidden: tensor. `[N, Dt]` teacher hidden states.
        teacher_embedding: tensor. `[V, Dt]` teacher output embedding.
        token_weights: tensor. `[N]` float32 weight of each token in the
            result (`mask / count` for a mean). No gradient.
        temperature: float. Both sides' logits are divided by it.
        logit_soft_cap: float or None. Student soft-cap.
        teacher_logit_soft_cap: float or None. Teacher soft-cap.

    Returns:
        float32 scalar. Gradients reach `hidden` and `embedding` only.
    """
    num_tokens, dim = hidden.shape
    if num_tokens is None:
        raise ValueError(
            "The token-chunked KL needs a static token count. Received "
            f"hidden.shape={tuple(hidden.shape)}."
        )
    vocab_size = embedding.shape[0]
    rows = resolve_token_chunk(num_tokens, vocab_size)
    num_chunks = math.ceil(num_tokens / rows)
    pad = num_chunks * rows - num_tokens
    inv_t = 1.0 / float(temperature)
    teacher_hidden = ops.stop_gradient(teacher_hidden)
    teacher_embedding = ops.stop_gradient(teacher_embedding)
    token_weights = ops.stop_gradient(ops.cast(token_weights, "float32"))

    def chunks(x):
        """`[N, ...]` -> `[K, C, ...]`, zero rows appended (weight 0)."""
        if pad:
            x = ops.pad(x, [[0, pad]] + [[0, 0]] * (len(x.shape) - 1))
        return ops.reshape(x, (num_chunks, rows) + tuple(x.shape[1:]))

    @ops.custom_gradient
    def reduced(h, e, th, te, w):
        def step(carry, xs):
            total, d_embedding = carry
            h_c, th_c, w_c = xs
            s_raw = ops.cast(ops.matmul(h_c, ops.transpose(e)), "float32")
            t_raw = ops.cast(ops.matmul(th_c, ops.transpose(te)), "float32")
            s_capped = soft_cap(s_raw, logit_soft_cap)
            s = s_capped * inv_t
            t = soft_cap(t_raw, teacher_logit_soft_cap) * inv_t
            lse_s = ops.logsumexp(s, axis=-1)  # [C]
            lse_t = ops.logsumexp(t, axis=-1)
            p_t = ops.exp(t - lse_t[:, None])  # [C, V]
            kl = ops.sum(p_t * (t - s), axis=-1) - lse_t + lse_s
            total = total + ops.sum(w_c * kl)
            d = ops.exp(s - lse_s[:, None]) - p_t
            d = d * (w_c * inv_t)[:, None]
            if logit_soft_cap is not None:
                # d tanh = 1 - tanh^2, from the capped logits.
                d = d * (1.0 - ops.square(s_capped / logit_soft_cap))
            d = ops.cast(d, h_c.dtype)  # matmul dtype
            d_h = ops.matmul(d, e)  # [C, D]
            d_embedding = d_embedding + ops.cast(
                ops.matmul(ops.transpose(d), h_c), "float32"
            )
            return (total, d_embedding), (d_h,)

        (total, d_embedding), (d_hidden,) = scan(
            step,
            (
                ops.zeros((), "float32"),
                ops.zeros((vocab_size, dim), "float32"),
            ),
            xs=(chunks(h), chunks(th), chunks(w)),
            y_dtypes=(h.dtype,),
        )
        d_hidden = ops.reshape(d_hidden, (num_chunks * rows, dim))
        d_hidden = d_hidden[:num_tokens]

        def grad(*args, upstream=None):
            if upstream is None:
                (upstream,) = args
            g = ops.cast(upstream, "float32")
            return (
                ops.cast(ops.cast(d_hidden, "float32") * g, h.dtype),
                ops.cast(d_embedding * g, e.dtype),
                None,
                None,
                None,
            )

        return total, grad

    return reduced(
        hidden, embedding, teacher_hidden, teacher_embedding, token_weights
    )
