"""Public API: cross-entropy of `hidden @ embedding.T` without the logits."""

import os


import keras
import numpy as np
from keras import ops

from keras_encdec.losses import token_chunked
from keras_encdec.losses.chunked import chunked_token_losses
from keras_encdec.losses.dense import dense_token_losses
from keras_encdec.utils import dispatch
from keras_encdec.utils import import_order

IMPLS = ("xla", "pallas", "triton", "dense")
REDUCTIONS = ("mean", "sum", "none")
# Set to "1" to run impl="pallas" on CPU in Pallas interpret mode (tests).
PALLAS_INTERPRET_ENV = dispatch.INTERPRET_ENV
# Gradient-filter threshold used by apple CCE for bf16 (`2**-7 / 32`).
BF16_FILTER_EPS = 2.0**-7 / 32


def _float_dtype(x, name):
    dtype = keras.backend.standardize_dtype(x.dtype)
    if not dtype.startswith(("float", "bfloat")):
        raise TypeError(
            f"`{name}` must be a float tensor. Received: dtype={dtype}. "
            "Expected float16, bfloat16, float32 or float64."
        )
    return dtype


def _triton_unavailable_reason(hidden):
    """Why the Triton kernel cannot run on `hidden` here, or `None`."""
    backend = keras.backend.backend()
    if backend != "torch":
        return (
            "impl='triton' needs the torch backend on CUDA with triton "
            f"installed; this process runs KERAS_BACKEND={backend}"
        )
    if not hidden.is_cuda and os.environ.get("TRITON_INTERPRET", "") != "1":
        return (
            "impl='triton' needs the torch backend on CUDA with triton "
            "installed; the inputs are on the CPU (set TRITON_INTERPRET=1 "
            "before importing keras_encdec for the slow interpret mode)"
        )
    problem = import_order.triton_import_problem()
    if problem is not None:
        return f"impl='triton' cannot run: {problem}"
    import triton  # noqa: F401

    return None


def unavailable_reason(impl, hidden):
    """Why loss `impl` cannot run on `hidden` here, or `None` if it can.

    Args:
        impl: str. One of `IMPLS`.
        hidden: tensor. The hidden states (their device matters on torch).

    Returns:
        A string, or `None`.

    Examples:

    >>> import numpy as np
    >>> unavailable_reason("xla", np.zeros((2, 4), "float32")) is None
    True
    """
    if impl in ("xla", "dense"):
        return None
    if impl == "pallas":
        reason = dispatch.pallas_unavailable_reason(hidden)
        if reason is not None:
            reason += ". Use impl='xla' (portable, same memory bound)"
        return reason
    if impl == "triton":
        return _triton_unavailable_reason(hidden)
    return f"unknown loss impl {impl!r}"


def resolve_impl(impl, hidden):
    """Returns the implementation name to run, or raises why it cannot run.

    `None` picks `"pallas"` on a JAX GPU, `"triton"` on torch CUDA (with
    triton importable), else `"xla"` (TPU keeps `"xla"`: the Pallas loss
    kernels have not been tiled for VMEM yet; `impl="pallas"` still tries).

    Args:
        impl: str or None. One of `"xla"`, `"pallas"`, `"triton"`,
            `"dense"`, or None for the best available here.
        hidden: tensor. The hidden states (their device matters on torch).

    Returns:
        str. The resolved implementation name.
    """
    candidates = ("xla",)
    if dispatch.device_kind(hidden) == "gpu":
        candidates = ("pallas", "triton", "xla")
    return dispatch.resolve(
        impl, impls=IMPLS, what="`impl`", candidates=candidates,
        unavailable_reason=lambda name: unavailable_reason(name, hidden))


def _concrete(x):
    """Returns x as numpy if its values are known now, else None."""
    backend = keras.backend.backend()
    if backend == "jax":
        import jax

        if isinstance(x, jax.core.Tracer):
            return None
    elif backend == "tensorflow":
        import tensorflow as tf

        if not tf.executing_eagerly():
            return None
    elif backend == "torch":
        import torch

        if torch.compiler.is_compiling():
            return None
    return ops.convert_to_numpy(x)


def _check_static_shapes(hidden, embedding, labels, sample_weight):
    if len(embedding.shape) != 2:
        raise ValueError(
            "`embedding` must be `[vocab, hidden_dim]`. Received: "
            f"embedding.shape={tuple(embedding.shape)}."
        )
    if len(hidden.shape) < 1 or hidden.shape[-1] != embedding.shape[1]:
        raise ValueError(
            "The last dim of `hidden_states` must equal embedding.shape[1]. "
            f"Received: hidden_states.shape={tuple(hidden.shape)}, "
            f"embedding.shape={tuple(embedding.shape)}. Expected "
            f"hidden_states.shape=(..., {embedding.shape[1]})."
        )

    def same(a, b):
        return len(a) == len(b) and all(
            x is None or y is None or x == y for x, y in zip(a, b)
        )

    if not same(tuple(labels.shape), tuple(hidden.shape[:-1])):
        raise ValueError(
            "`labels` must have the shape of `hidden_states` without its "
            f"last dim. Received: labels.shape={tuple(labels.shape)}, "
            f"hidden_states.shape={tuple(hidden.shape)}."
        )
    if sample_weight is not None:
        rank = len(sample_weight.shape)
        if rank > len(labels.shape) or not same(
            tuple(sample_weight.shape), tuple(labels.shape[:rank])
        ):
            raise ValueError(
                "`sample_weight` must have the shape of `labels` or of its "
                "leading dims (per-sequence weights). Received: "
                f"sample_weight.shape={tuple(sample_weight.shape)}, "
                f"labels.shape={tuple(labels.shape)}."
            )


def linear_cross_entropy(
    hidden_states,
    embedding,
    labels,
    *,
    sample_weight=None,
    ignore_index=-100,
    logit_soft_cap=None,
    reduction="mean",
    impl=None,
    chunk_size=None,
    filter_eps=None,
):
    """Softmax cross-entropy of `hidden_states @ embedding.T` vs `labels`.

    Computes `logits = hidden_states @ embedding.T`, the optional soft-cap
    `c * tanh(logits / c)`, then the softmax cross-entropy against `labels`,
    without holding the `[tokens, vocab]` logits (except `impl="dense"`).
    Matmuls run in the input dtype with fp32 accumulation; the log-sum-exp
    and the result are float32.

    Reductions: `"mean"` is `sum(w * loss) / sum(w)` over the tokens that
    are not ignored, with `w = sample_weight` (1 when None) and `w = 0` at
    ignored tokens. When every token is ignored (or `sum(w) == 0`) the mean
    is 0.0 and the gradients are 0, never NaN. `"sum"` is `sum(w * loss)`.
    `"none"` returns `w * loss` per token, shape `labels.shape`, 0 where
    ignored.

    Labels outside `[0, V)` that are not `ignore_index` raise a ValueError
    when their values are known (eager jax/tensorflow, torch). Inside
    `jax.jit` / `tf.function` they cannot be checked: such a token then has
    no target logit, so its loss is its log-sum-exp (`impl="xla"`).

    Args:
        hidden_states: float tensor. `[..., D]` final hidden states.
        embedding: float tensor. `[V, D]` output embedding (the
            `ReversibleEmbedding` orientation).
        labels: int tensor. `[...]` target ids, same leading shape.
        sample_weight: float tensor or None. `[...]` per-token weights, or
            weights for leading dims only (e.g. `[batch]`, broadcast over
            the sequence). Constants: no gradient flows to them on the
            fused path below. Defaults to None (all 1).
        ignore_index: int. Label value that marks a token as ignored.
            Defaults to -100.
        logit_soft_cap: float or None. Soft-cap `c` (Gemma 2 uses 30).
            Defaults to None (no cap).
        reduction: str. `"mean"`, `"sum"` or `"none"`. Defaults to `"mean"`.
        impl: str or None. `"xla"` (portable chunked keras.ops),
            `"pallas"` (jax on GPU/TPU; CPU only with
            `KERAS_ENCDEC_PALLAS_INTERPRET=1`), `"triton"` (torch on CUDA;
            CPU only under `TRITON_INTERPRET=1`), `"dense"` (reference,
            materializes logits) or None (pallas on jax GPU, triton on
            torch CUDA, else xla). A named impl that cannot run raises.
            Defaults to None.
        chunk_size: int or None. Vocabulary columns per chunk (`"xla"`) or
            per tile (kernels). Defaults to None (automatic). With None,
            `"xla"`, a `"mean"`/`"sum"` reduction, a static token count,
            `V * D <= 2**22` and a float32/bfloat16 compute dtype (and
            autograd on, on torch), the loss walks token chunks and builds
            its gradient in the forward (`losses/token_chunked.py`); an
            explicit `chunk_size` selects the vocabulary walk.
        filter_eps: float or None. Gradient filtering: entries of
            `softmax - onehot` below this magnitude are dropped
            (`BF16_FILTER_EPS` matches apple CCE). Defaults to None (exact).

    Returns:
        float32 scalar for `"mean"`/`"sum"`, or `labels.shape` for `"none"`.

    Examples:

    >>> import numpy as np
    >>> from keras_encdec.losses import linear_cross_entropy
    >>> hidden = np.random.rand(2, 5, 8).astype("float32")
    >>> embedding = np.random.rand(11, 8).astype("float32")
    >>> labels = np.array([[1, 2, 3, -100, -100], [4, 5, 6, 7, 10]])
    >>> loss = linear_cross_entropy(hidden, embedding, labels, impl="xla")
    >>> dense = linear_cross_entropy(hidden, embedding, labels, impl="dense")
    >>> bool(abs(float(loss) - float(dense)) < 1e-5)
    True
    """
    if reduction not in REDUCTIONS:
        raise ValueError(
            f"Unknown `reduction`. Received: reduction={reduction!r}. "
            f"Expected one of {REDUCTIONS}."
        )
    if chunk_size is not None and (
        not isinstance(chunk_size, (int, np.integer)) or chunk_size < 1
    ):
        raise ValueError(
            "`chunk_size` must be a positive int or None. Received: "
            f"chunk_size={chunk_size!r}."
        )
    if logit_soft_cap is not None and not logit_soft_cap > 0:
        raise ValueError(
            "`logit_soft_cap` must be positive or None. Received: "
            f"logit_soft_cap={logit_soft_cap!r}."
        )
    if filter_eps is not None and not filter_eps >= 0:
        raise ValueError(
            "`filter_eps` must be >= 0 or None. Received: "
            f"filter_eps={filter_eps!r}."
        )
    hidden = ops.convert_to_tensor(hidden_states)
    embedding = ops.convert_to_tensor(embedding)
    labels = ops.convert_to_tensor(labels)
    if sample_weight is not None:
        sample_weight = ops.convert_to_tensor(sample_weight)
    h_dtype = _float_dtype(hidden, "hidden_states")
    e_dtype = _float_dtype(embedding, "embedding")
    l_dtype = keras.backend.standardize_dtype(labels.dtype)
    if not l_dtype.startswith(("int", "uint")):
        raise TypeError(
            f"`labels` must be an integer tensor. Received: dtype={l_dtype}. "
            "Expected int32 or int64 class ids."
        )
    _check_static_shapes(hidden, embedding, labels, sample_weight)
    impl = resolve_impl(impl, hidden)

    vocab_size, dim = embedding.shape
    labels_np = _concrete(labels)
    if labels_np is not None:
        bad = (labels_np != ignore_index) & (
            (labels_np < 0) | (labels_np >= vocab_size)
        )
        if bad.any():
            raise ValueError(
                "Every label must be in [0, vocab_size) or equal "
                f"ignore_index={ignore_index}. Received: label "
                f"{int(labels_np[bad].flat[0])} with vocab_size={vocab_size}."
            )

    compute_dtype = keras.backend.result_type(h_dtype, e_dtype)
    flat_hidden = ops.cast(ops.reshape(hidden, (-1, dim)), compute_dtype)
    embedding = ops.cast(embedding, compute_dtype)
    flat_labels = ops.reshape(labels, (-1,))
    valid = ops.not_equal(flat_labels, ignore_index)
    flat_labels = ops.where(valid, ops.cast(flat_labels, "int32"), -1)
    weights = ops.cast(valid, "float32")
    if sample_weight is not None:
        sample_weight = ops.cast(sample_weight, "float32")
        for _ in range(len(labels.shape) - len(sample_weight.shape)):
            sample_weight = ops.expand_dims(sample_weight, -1)
        sample_weight = ops.broadcast_to(sample_weight, ops.shape(labels))
        weights = weights * ops.reshape(sample_weight, (-1,))

    args = (flat_hidden, embedding, flat_labels, valid)
    if (
        impl == "xla"
        and token_chunked.applies(flat_hidden, chunk_size, reduction)
        and vocab_size * dim <= token_chunked.CE_MAX_VOCAB_ELEMENTS
    ):
        # The reduction fixes each token's weight, so the gradient is built
        # in the forward, token chunk by token chunk: 3 matmuls instead of
        # the vocabulary walk's 4 (token_chunked.py).
        weights = token_chunked.reduction_weights(
            ops.where(valid, weights, 0.0), reduction)
        return token_chunked.reduced_ce_grad_in_forward(
            flat_hidden, embedding, flat_labels, weights,
            logit_soft_cap=logit_soft_cap, filter_eps=filter_eps,
        )
    if impl == "dense":
        losses = dense_token_losses(*args, logit_soft_cap=logit_soft_cap)
    elif impl == "xla":
        losses = chunked_token_losses(
            *args, logit_soft_cap, chunk_size=chunk_size, filter_eps=filter_eps
        )
    elif impl == "pallas":
        from keras_encdec.losses import pallas_kernel

        losses = pallas_kernel.pallas_token_losses(
            *args,
            logit_soft_cap=logit_soft_cap,
            block_vocab=chunk_size,
            filter_eps=filter_eps,
            interpret=dispatch.pallas_interpret(),
        )
    else:
        from keras_encdec.losses import triton_kernel

        losses = triton_kernel.triton_token_losses(
            *args,
            logit_soft_cap=logit_soft_cap,
            block_vocab=chunk_size,
            filter_eps=filter_eps,
        )
    weighted = ops.where(valid, losses * weights, 0.0)  # [N] fp32
    if reduction == "none":
        return ops.reshape(weighted, ops.shape(labels))
    total = ops.sum(weighted)
    if reduction == "sum":
        return total
    denom = ops.sum(weights)
    safe = ops.where(ops.not_equal(denom, 0.0), denom, 1.0)
    return total / safe
