"""Reduced losses with their gradient built in the forward pass.

`linear_cross_entropy(..., impl="xla")` and `linear_kl_divergence(...,
impl="xla")` with a `"mean"` or `"sum"` reduction know, before any backward,
how much each token weighs in the result: `w / sum(w)` or `w`. The gradient
of the scalar is then `upstream * (dL/dh, dL/dE)` with `dL/dh` and `dL/dE`
computable during the forward. This module walks the tokens in row chunks of
`C` tokens and, per chunk, builds the logits `[C, V]` once.

Cross-entropy (`reduced_ce_grad_in_forward`):

    z    = soft_cap(h E^T)                                  (fp32)
    CE   = LSE(z) - z[label]
    d    = w * (softmax(z) - onehot) * soft_cap'            ([C, V])
    dh   = d E,   dE += d^T h

Three `N x V x D` matmuls, as for the dense loss (logits and two
gradients), where the vocabulary-chunked walk (`chunked.py`) needs four: it
must finish the forward's log-sum-exps before the backward can recompute the
logits. The soft-cap `tanh` is taken once instead of twice.

Distillation (`reduced_kl_grad_in_forward`), with `s` and `t` the student's
and teacher's capped logits over the temperature `T`:

    KL   = sum_v p_t (t - s) - LSE(t) + LSE(s)
    d    = w / T * (softmax(s) - softmax(t)) * soft_cap'      ([C, V])
    dh   = d E,   dE += d^T h

Four matmuls in all, as for the dense loss (two logits, two gradients),
where the vocabulary walk (`kl_chunked.py`) needs six.

Memory beyond inputs and outputs is a few `[C, V]` buffers plus the fp32
`[V, D]` gradient accumulator. Both need the token count at trace time
(padding to whole chunks is static); the public functions use the vocabulary
walk otherwise, and for `reduction="none"`, whose per-token upstream is only
known in the backward.
"""

import math

import keras
from keras import ops

from keras_encdec.losses.chunked import scan
from keras_encdec.losses.dense import soft_cap

# Elements of one `[C, V]` fp32 buffer: C = TOKEN_CHUNK_ELEMENTS // V,
# within [TOKEN_CHUNK_MIN, TOKEN_CHUNK_MAX] rows.
# Tuned with tools/benchmark_kd_loss.py (BENCHMARKS.md). Eager torch
# (`token_chunked_torch.py`) makes a few passes over each chunk, which run
# faster on 4 MiB chunks than on 16 MiB ones: at N=1024, D=256, V=8192, 128
# rows took 0.6-0.8x the time of 512 (BENCHMARKS.md, issue 16).
TOKEN_CHUNK_ELEMENTS = 2**22
TORCH_TOKEN_CHUNK_ELEMENTS = 2**20
TOKEN_CHUNK_MIN = 8
TOKEN_CHUNK_MAX = 1024


def resolve_token_chunk(num_tokens, vocab_size):
    """Rows per token chunk: about `TOKEN_CHUNK_ELEMENTS / V` (torch:
    `TORCH_TOKEN_CHUNK_ELEMENTS / V`), at most N."""
    elements = (TORCH_TOKEN_CHUNK_ELEMENTS
                if keras.backend.backend() == "torch"
                else TOKEN_CHUNK_ELEMENTS)
    rows = elements // max(vocab_size, 1)
    rows = max(TOKEN_CHUNK_MIN, min(TOKEN_CHUNK_MAX, rows))
    return max(1, min(rows, num_tokens))


# The cross-entropy walks token chunks only while its fp32 `[V, D]` gradient
# accumulator stays small (16 MiB): measured with `tools/benchmark_loss.py`
# and an interleaved A/B (BENCHMARKS.md), forward + backward at N=1024,
# D=256, V=8192 take 0.74-0.77x the vocabulary walk's time on torch and
# 0.86-0.98x on jax; at N=4096, D=512, V=32768 (jax) 1.02x, with 4.5x its
# working memory.
CE_MAX_VOCAB_ELEMENTS = 2**22


def applies(hidden, chunk_size, reduction):
    """Whether the fused walk serves a `"xla"` call on `hidden [N, D]`.

    It needs a reduction, the default chunking, a static, non-zero N and
    a compute dtype other than float16: the logit gradient, with the token
    weight (`w / N` for a mean) folded in, is cast to the matmul dtype
    before the upstream (a loss scale) multiplies it, and would underflow
    in float16; the vocabulary walks scale first. On torch it also needs
    autograd on: without it (`evaluate()`,
    `torch.no_grad()`) the gradient built in the forward would be wasted
    work. Compiled jax and TensorFlow graphs that take no gradient drop
    what they do not use.
    """
    if chunk_size is not None or reduction == "none":
        return False
    if hidden.shape[0] is None or hidden.shape[0] == 0:
        return False  # Unknown, or no token to walk.
    if keras.backend.standardize_dtype(hidden.dtype) == "float16":
        return False
    if keras.backend.backend() == "torch":
        import torch

        return torch.is_grad_enabled()
    return True


def reduction_weights(weights, reduction):
    """`[N]` token weights of a reduced loss: `weights / sum(weights)` for
    `"mean"` (unchanged when the sum is 0), `weights` for `"sum"`."""
    if reduction != "mean":
        return weights
    total = ops.sum(weights)
    return weights / ops.where(ops.not_equal(total, 0.0), total, 1.0)


def _static_rows(hidden, vocab_size):
    """Rows per token chunk for `hidden [N, D]`; N must be static."""
    num_tokens = hidden.shape[0]
    if num_tokens is None:
        raise ValueError(
            "The token-chunked losses need a static token count. Received "
            f"hidden.shape={tuple(hidden.shape)}."
        )
    return resolve_token_chunk(num_tokens, vocab_size)


def token_chunker(hidden, vocab_size):
    """`(chunks, unchunk)` for the static token count of `hidden [N, D]`.

    `chunks(x)` maps `[N, ...]` to `[K, C, ...]`, zero rows appended (they
    get weight 0); `unchunk(y)` maps `[K, C, ...]` back to `[N, ...]`.
    """
    num_tokens = hidden.shape[0]
    rows = _static_rows(hidden, vocab_size)
    num_chunks = math.ceil(num_tokens / rows)
    pad = num_chunks * rows - num_tokens

    def chunks(x):
        if pad:
            x = ops.pad(x, [[0, pad]] + [[0, 0]] * (len(x.shape) - 1))
        return ops.reshape(x, (num_chunks, rows) + tuple(x.shape[1:]))

    def unchunk(y):
        y = ops.reshape(y, (num_chunks * rows,) + tuple(y.shape[2:]))
        return y[:num_tokens]

    return chunks, unchunk


def fused_walk(h, e, chunks, unchunk, chunk_fn, extra_xs, num_constants):
    """`(total, grad)` for `ops.custom_gradient`: walks the token chunks of
    `h [N, D]`, with `extra_xs` (`[N, ...]` each) split alike.

    `chunk_fn(h_c, e, *extra_c)` returns a chunk's weighted loss sum and its
    fp32 logit gradient `d [C, V]`; this walk adds `dh = d E` and
    `dE = sum d^T h`. The gradient function scales both by the upstream and
    gives None to the `num_constants` inputs after `h` and `e`.
    """
    vocab_size, dim = e.shape

    def step(carry, xs):
        total, d_embedding = carry
        h_c = xs[0]
        loss, d = chunk_fn(h_c, e, *xs[1:])
        d = ops.cast(d, h_c.dtype)  # matmul dtype
        d_h = ops.matmul(d, e)  # [C, D]
        d_embedding = d_embedding + ops.cast(
            ops.matmul(ops.transpose(d), h_c), "float32"
        )
        return (total + loss, d_embedding), (d_h,)

    (total, d_embedding), (d_hidden,) = scan(
        step,
        (ops.zeros((), "float32"), ops.zeros((vocab_size, dim), "float32")),
        xs=tuple(chunks(x) for x in (h,) + tuple(extra_xs)),
        y_dtypes=(h.dtype,),
    )
    d_hidden = unchunk(d_hidden)

    def grad(*args, upstream=None):
        if upstream is None:
            (upstream,) = args
        g = ops.cast(upstream, "float32")
        return (
            ops.cast(ops.cast(d_hidden, "float32") * g, h.dtype),
            ops.cast(d_embedding * g, e.dtype),
        ) + (None,) * num_constants

    return total, grad


def reduced_ce_grad_in_forward(
    hidden,
    embedding,
    labels,
    token_weights,
    logit_soft_cap=None,
    filter_eps=None,
):
    """`sum_n token_weights[n] * CE_n`, gradient fused (module docstring).

    Args:
        hidden: tensor. `[N, D]` hidden states; N static.
        embedding: tensor. `[V, D]` output embedding, same dtype.
        labels: tensor. `[N]` int32 targets in `[0, V)`, -1 where ignored.
        token_weights: tensor. `[N]` float32 weight of each token in the
            result (`w / sum(w)` for a mean), 0 where ignored. No gradient.
        logit_soft_cap: float or None. Soft-cap of the logits.
        filter_eps: float or None. Zero gradient entries with
            `|softmax - onehot| < filter_eps`. Defaults to None (exact).

    Returns:
        float32 scalar. Gradients reach `hidden` and `embedding` only.
    """
    if keras.backend.backend() == "torch":
        from keras_encdec.losses import token_chunked_torch

        return token_chunked_torch.reduced_ce(
            hidden, embedding, labels, token_weights,
            _static_rows(hidden, embedding.shape[0]),
            logit_soft_cap=logit_soft_cap, filter_eps=filter_eps,
        )
    chunks, unchunk = token_chunker(hidden, embedding.shape[0])
    cols = ops.arange(embedding.shape[0], dtype="int32")[None, :]  # [1, V]

    def chunk_fn(h_c, e, y_c, w_c):
        z = ops.cast(ops.matmul(h_c, ops.transpose(e)), "float32")
        if logit_soft_cap is not None:
            tanh = ops.tanh(z / logit_soft_cap)
            z = tanh * logit_soft_cap
        lse = ops.logsumexp(z, axis=-1)  # [C]
        onehot = ops.equal(y_c[:, None], cols)  # [C, V]
        target = ops.sum(ops.where(onehot, z, 0.0), axis=-1)
        d = ops.exp(z - lse[:, None]) - ops.cast(onehot, "float32")
        if filter_eps is not None:
            d = ops.where(ops.abs(d) < filter_eps, 0.0, d)
        d = d * w_c[:, None]
        if logit_soft_cap is not None:
            d = d * (1.0 - ops.square(tanh))
        return ops.sum(w_c * (lse - target)), d

    @ops.custom_gradient
    def reduced(h, e, y, w):
        return fused_walk(h, e, chunks, unchunk, chunk_fn, (y, w), 2)

    return reduced(
        hidden,
        embedding,
        ops.stop_gradient(ops.cast(labels, "int32")),
        ops.stop_gradient(ops.cast(token_weights, "float32")),
    )


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
    if keras.backend.backend() == "torch":
        from keras_encdec.losses import token_chunked_torch

        return token_chunked_torch.reduced_kl(
            hidden, embedding, teacher_hidden, teacher_embedding,
            token_weights, _static_rows(hidden, embedding.shape[0]),
            temperature=temperature, logit_soft_cap=logit_soft_cap,
            teacher_logit_soft_cap=teacher_logit_soft_cap,
        )
    chunks, unchunk = token_chunker(hidden, embedding.shape[0])
    inv_t = 1.0 / float(temperature)

    def chunk_fn(h_c, e, th_c, te, w_c):
        s_raw = ops.cast(ops.matmul(h_c, ops.transpose(e)), "float32")
        t_raw = ops.cast(ops.matmul(th_c, ops.transpose(te)), "float32")
        s_capped = soft_cap(s_raw, logit_soft_cap)
        s = s_capped * inv_t
        t = soft_cap(t_raw, teacher_logit_soft_cap) * inv_t
        lse_s = ops.logsumexp(s, axis=-1)  # [C]
        lse_t = ops.logsumexp(t, axis=-1)
        p_t = ops.exp(t - lse_t[:, None])  # [C, V]
        kl = ops.sum(p_t * (t - s), axis=-1) - lse_t + lse_s
        d = ops.exp(s - lse_s[:, None]) - p_t
        d = d * (w_c * inv_t)[:, None]
        if logit_soft_cap is not None:
            # d tanh = 1 - tanh^2, from the capped logits.
            d = d * (1.0 - ops.square(s_capped / logit_soft_cap))
        return ops.sum(w_c * kl), d

    @ops.custom_gradient
    def reduced(h, e, th, te, w):
        return fused_walk(
            h, e, chunks, unchunk,
            lambda h_c, e_, th_c, w_c: chunk_fn(h_c, e_, th_c, te, w_c),
            (th, w), 3,
        )

    return reduced(
        hidden,
        embedding,
        ops.stop_gradient(teacher_hidden),
        ops.stop_gradient(teacher_embedding),
        ops.stop_gradient(ops.cast(token_weights, "float32")),
    )
