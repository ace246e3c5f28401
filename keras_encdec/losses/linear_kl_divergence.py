"""Public API: distillation KL(teacher || student) from hidden states."""

import keras
import numpy as np
from keras import ops

from keras_encdec.losses.dense import dense_kl_token_losses
from keras_encdec.losses.kl_chunked import chunked_kl_token_losses
from keras_encdec.losses import token_chunked
from keras_encdec.losses.linear_cross_entropy import IMPLS
from keras_encdec.losses.linear_cross_entropy import REDUCTIONS
from keras_encdec.losses.linear_cross_entropy import _float_dtype
from keras_encdec.losses.linear_cross_entropy import linear_cross_entropy
from keras_encdec.losses.linear_cross_entropy import resolve_impl
from keras_encdec.utils import dispatch

KL_IMPLS = IMPLS  # the same kernels as the cross-entropy, one dispatch


def _resolve_kl_impl(impl, hidden):
    """Returns `(impl, pallas_interpret)`, or raises why it cannot run.

    The KL kernels run where the cross-entropy's do, so the choice is the
    cross-entropy's (`linear_cross_entropy.resolve_impl`, one dispatch rule
    for both losses).
    """
    impl = resolve_impl(impl, hidden)
    return impl, impl == "pallas" and dispatch.pallas_interpret()


def _check_args(reduction, chunk_size, caps, temperature):
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
    for name, cap in caps.items():
        if cap is not None and not cap > 0:
            raise ValueError(
                f"`{name}` must be positive or None. Received: "
                f"{name}={cap!r}."
            )
    if not (isinstance(temperature, (int, float)) and temperature > 0):
        raise ValueError(
            "`temperature` must be a positive number. Received: "
            f"temperature={temperature!r}."
        )


def _check_shapes(hidden, embedding, teacher_hidden, teacher_embedding):
    for name, h, e in (
        ("", hidden, embedding),
        ("teacher_", teacher_hidden, teacher_embedding),
    ):
        if len(e.shape) != 2 or len(h.shape) < 1 or h.shape[-1] != e.shape[1]:
            raise ValueError(
                f"`{name}embedding` must be `[vocab, dim]` and the last dim "
                f"of `{name}hidden_states` must equal its dim. Received: "
                f"{name}hidden_states.shape={tuple(h.shape)}, "
                f"{name}embedding.shape={tuple(e.shape)}."
            )
    if embedding.shape[0] != teacher_embedding.shape[0]:
        raise ValueError(
            "Student and teacher must share the vocabulary. Received: "
            f"embedding.shape={tuple(embedding.shape)}, "
            f"teacher_embedding.shape={tuple(teacher_embedding.shape)}."
        )
    if tuple(hidden.shape[:-1]) != tuple(teacher_hidden.shape[:-1]):
        raise ValueError(
            "`hidden_states` and `teacher_hidden_states` must have the same "
            f"leading (token) dims. Received: {tuple(hidden.shape)} and "
            f"{tuple(teacher_hidden.shape)}."
        )


def linear_kl_divergence(
    hidden_states,
    embedding,
    teacher_hidden_states,
    teacher_embedding,
    *,
    mask=None,
    temperature=1.0,
    logit_soft_cap=None,
    teacher_logit_soft_cap=None,
    reduction="mean",
    impl=None,
    chunk_size=None,
):
    """Distillation loss KL(teacher || student) without the logits.

    On each side the logits are `soft_cap(h @ E.T) / temperature` (the cap
    is `c * tanh(x / c)`, skipped when None), and the per-token loss is
    `sum_v p_teacher (log p_teacher - log p_student)`. `impl="xla"` walks
    the vocabulary in chunks (online log-sum-exp on both sides), so neither
    side's `[tokens, vocab]` logits exist. Gradients reach the student's
    `hidden_states` and `embedding` only; the teacher inputs are treated as
    constants (`stop_gradient`). The loss is not multiplied by
    `temperature**2`; do so in the caller if the usual KD scaling is wanted.

    Reductions: `"mean"` averages over the unmasked tokens (0.0 with zero
    gradients when every token is masked), `"sum"` sums them, `"none"`
    returns the per-token losses, shape `hidden_states.shape[:-1]`, 0 where
    masked.

    Args:
        hidden_states: float tensor. `[..., D]` student hidden states.
        embedding: float tensor. `[V, D]` student output embedding.
        teacher_hidden_states: float tensor. `[..., Dt]` teacher hidden
            states, same leading dims (Dt may differ from D).
        teacher_embedding: float tensor. `[V, Dt]` teacher embedding.
        mask: bool or numeric tensor or None. `[...]` True / nonzero where a
            token counts. Defaults to None (every token).
        temperature: float. Positive. Defaults to 1.0.
        logit_soft_cap: float or None. Student soft-cap. Defaults to None.
        teacher_logit_soft_cap: float or None. Teacher soft-cap. Defaults
            to None.
        reduction: str. `"mean"`, `"sum"` or `"none"`. Defaults to `"mean"`.
        impl: str or None. `"xla"` (chunked keras.ops, every backend; with
            a `"mean"`/`"sum"` reduction, a static token count and no
            `chunk_size`, token chunks with the gradient built in the
            forward, otherwise vocabulary chunks),
            `"pallas"` (jax on GPU/TPU; CPU only with
            `KERAS_ENCDEC_PALLAS_INTERPRET=1`), `"triton"` (torch on CUDA;
            CPU only under `TRITON_INTERPRET=1`), `"dense"` (reference,
            materializes logits) or None (pallas on jax GPU, triton on torch
            CUDA, else xla). A named impl that cannot run raises. Defaults
            to None.
        chunk_size: int or None. Vocabulary columns per chunk (`"xla"`) or
            per tile (kernels; a power of two on GPU). Defaults to None
            (automatic).

    Returns:
        float32 scalar for `"mean"`/`"sum"`, or per-token losses.

    Examples:

    >>> import numpy as np
    >>> from keras_encdec.losses import linear_kl_divergence
    >>> rng = np.random.default_rng(0)
    >>> h = rng.normal(size=(2, 5, 8)).astype("float32")
    >>> e = rng.normal(size=(11, 8)).astype("float32")
    >>> th = rng.normal(size=(2, 5, 4)).astype("float32")
    >>> te = rng.normal(size=(11, 4)).astype("float32")
    >>> kl = linear_kl_divergence(h, e, th, te, chunk_size=4)
    >>> dense = linear_kl_divergence(h, e, th, te, impl="dense")
    >>> bool(abs(float(kl) - float(dense)) < 1e-4)
    True
    >>> float(linear_kl_divergence(h, e, h, e))
    0.0
    """
    _check_args(
        reduction,
        chunk_size,
        dict(
            logit_soft_cap=logit_soft_cap,
            teacher_logit_soft_cap=teacher_logit_soft_cap,
        ),
        temperature,
    )
    hidden = ops.convert_to_tensor(hidden_states)
    embedding = ops.convert_to_tensor(embedding)
    t_hidden = ops.convert_to_tensor(teacher_hidden_states)
    t_embedding = ops.convert_to_tensor(teacher_embedding)
    dtype = keras.backend.result_type(
        _float_dtype(hidden, "hidden_states"), _float_dtype(embedding, "embedding")
    )
    t_dtype = keras.backend.result_type(
        _float_dtype(t_hidden, "teacher_hidden_states"),
        _float_dtype(t_embedding, "teacher_embedding"),
    )
    _check_shapes(hidden, embedding, t_hidden, t_embedding)
    impl, interpret = _resolve_kl_impl(impl, hidden)
    token_shape = ops.shape(hidden)[:-1]
    if mask is not None:
        mask = ops.convert_to_tensor(mask)
        if tuple(mask.shape) != tuple(hidden.shape[:-1]):
            raise ValueError(
                "`mask` must have the shape of `hidden_states` without its "
                f"last dim. Received: mask.shape={tuple(mask.shape)}, "
                f"hidden_states.shape={tuple(hidden.shape)}."
            )
        mask = ops.reshape(ops.not_equal(mask, ops.zeros_like(mask)), (-1,))

    args = (
        ops.cast(ops.reshape(hidden, (-1, hidden.shape[-1])), dtype),
        ops.cast(embedding, dtype),
        ops.cast(ops.reshape(t_hidden, (-1, t_hidden.shape[-1])), t_dtype),
        ops.cast(t_embedding, t_dtype),
    )
    caps = dict(
        temperature=float(temperature),
        logit_soft_cap=logit_soft_cap,
        teacher_logit_soft_cap=teacher_logit_soft_cap,
    )
    if impl == "dense":
        losses = dense_kl_token_losses(*args, **caps)
    elif impl == "pallas":
        from keras_encdec.losses import kl_pallas_kernel

        losses = kl_pallas_kernel.pallas_kl_token_losses(
            *args, **caps, block_vocab=chunk_size, interpret=interpret
        )
    elif impl == "triton":
        from keras_encdec.losses import kl_triton_kernel

        losses = kl_triton_kernel.triton_kl_token_losses(
            *args, **caps, block_vocab=chunk_size
        )
    elif token_chunked.applies(args[0], chunk_size, reduction):
        # The reduction fixes each token's weight, so the gradient is built
        # in the forward, token chunk by token chunk: 4 matmuls instead of
        # the vocabulary walk's 6 (token_chunked.py).
        weights = (
            ops.ones((args[0].shape[0],), "float32")
            if mask is None
            else ops.cast(mask, "float32")
        )
        weights = token_chunked.reduction_weights(weights, reduction)
        return token_chunked.reduced_kl_grad_in_forward(
            *args, weights, **caps
        )
    else:
        losses = chunked_kl_token_losses(*args, **caps, chunk_size=chunk_size)
    if mask is not None:
        losses = ops.where(mask, losses, 0.0)
    if reduction == "none":
        return ops.reshape(losses, token_shape)
    total = ops.sum(losses)
    if reduction == "sum":
        return total
    if mask is None:
        return total / ops.cast(ops.shape(losses)[0], "float32")
    count = ops.sum(ops.cast(mask, "float32"))
    return total / ops.where(ops.greater(count, 0.0), count, 1.0)


def linear_distillation_loss(
    hidden_states,
    embedding,
    labels,
    teacher_hidden_states,
    teacher_embedding,
    *,
    ce_weight=0.5,
    ignore_index=-100,
    temperature=1.0,
    logit_soft_cap=None,
    teacher_logit_soft_cap=None,
    impl=None,
    chunk_size=None,
):
    """Mixed objective `ce_weight * CE + (1 - ce_weight) * KL`.

    CE is `linear_cross_entropy` against `labels` (mean over tokens whose
    label is not `ignore_index`); KL is `linear_kl_divergence` over the same
    tokens, at `temperature` (CE always uses temperature 1). Neither builds
    `[tokens, vocab]` logits unless `impl="dense"`.

    Args:
        hidden_states: float tensor. `[..., D]` student hidden states.
        embedding: float tensor. `[V, D]` student output embedding.
        labels: int tensor. `[...]` target ids; `ignore_index` masks both
            terms.
        teacher_hidden_states: float tensor. `[..., Dt]` teacher states.
        teacher_embedding: float tensor. `[V, Dt]` teacher embedding.
        ce_weight: float in `[0, 1]`. Weight of the CE term. Defaults to 0.5.
        ignore_index: int. Label that marks a token as ignored. Defaults to
            -100.
        temperature: float. KL temperature. Defaults to 1.0.
        logit_soft_cap: float or None. Student soft-cap. Defaults to None.
        teacher_logit_soft_cap: float or None. Teacher soft-cap. Defaults
            to None.
        impl: str or None. `"xla"`, `"dense"` or None, used by both terms.
            Defaults to None.
        chunk_size: int or None. Vocabulary columns per chunk. Defaults to
            None (automatic).

    Returns:
        float32 scalar.

    Examples:

    >>> import numpy as np
    >>> from keras_encdec.losses import linear_distillation_loss
    >>> rng = np.random.default_rng(0)
    >>> h = rng.normal(size=(6, 8)).astype("float32")
    >>> e = rng.normal(size=(11, 8)).astype("float32")
    >>> y = np.array([1, 2, 3, -100, 5, 6])
    >>> loss = linear_distillation_loss(h, e, y, h, e, ce_weight=0.3)
    >>> bool(loss > 0)
    True
    """
    if not (isinstance(ce_weight, (int, float)) and 0.0 <= ce_weight <= 1.0):
        raise ValueError(
            f"`ce_weight` must be a number in [0, 1]. Received: "
            f"ce_weight={ce_weight!r}."
        )
    labels = ops.convert_to_tensor(labels)
    ce = linear_cross_entropy(
        hidden_states,
        embedding,
        labels,
        ignore_index=ignore_index,
        logit_soft_cap=logit_soft_cap,
        impl=impl,
        chunk_size=chunk_size,
    )
    kl = linear_kl_divergence(
        hidden_states,
        embedding,
        teacher_hidden_states,
        teacher_embedding,
        mask=ops.not_equal(labels, ignore_index),
        temperature=temperature,
        logit_soft_cap=logit_soft_cap,
        teacher_logit_soft_cap=teacher_logit_soft_cap,
        impl=impl,
        chunk_size=chunk_size,
    )
    return ce_weight * ce + (1.0 - ce_weight) * kl
