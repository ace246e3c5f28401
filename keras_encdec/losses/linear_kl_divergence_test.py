"""KL(teacher || student) vs a float64 numpy reference, on every backend.

Tolerance: float32 inputs match the float64 loss and student gradients to
`rtol=2e-5`, `atol=2e-5 * max(1, max|reference|)`.
"""

import keras
import numpy as np
import pytest

from keras_encdec.losses import linear_distillation_loss
from keras_encdec.losses import linear_kl_divergence
from keras_encdec.losses.kl_testing import D
from keras_encdec.losses.kl_testing import DT
from keras_encdec.losses.kl_testing import N
from keras_encdec.losses.kl_testing import V
from keras_encdec.losses.kl_testing import assert_close
from keras_encdec.losses.kl_testing import make_problem
from keras_encdec.losses.kl_testing import reference
from keras_encdec.losses.kl_testing import value_and_grads
from keras_encdec.losses import token_chunked
CASES = [
    # (impl, temperature, cap, teacher cap, reduction, chunk_size)
    ("xla", 1.0, None, None, "mean", None),
    ("xla", 2.0, 30.0, 20.0, "mean", 64),  # 64 does not divide 301
    ("xla", 0.7, None, 5.0, "sum", 7),
    ("xla", 1.5, 4.0, None, "none", 300),
    ("xla", 1.0, 3.0, 3.0, "mean", 301),
    ("dense", 2.0, 30.0, 20.0, "mean", None),
    ("dense", 0.7, 4.0, None, "none", None),
]


@pytest.mark.parametrize("impl, temp, cap, t_cap, reduction, chunk", CASES)
def test_matches_float64_reference(impl, temp, cap, t_cap, reduction, chunk):
    h, e, th, te, mask = make_problem()
    cotangent = None
    if reduction == "none":
        cotangent = np.random.default_rng(1).normal(size=(N,))
        cotangent = cotangent.astype("float32")

    def loss_fn(h_, e_, th_, te_):
        return linear_kl_divergence(
            h_, e_, th_, te_, mask=mask, temperature=temp,
            logit_soft_cap=cap, teacher_logit_soft_cap=t_cap,
            reduction=reduction, impl=impl, chunk_size=chunk)

    got = value_and_grads(loss_fn, h, e, th, te, cotangent)
    want = reference(h, e, th, te, mask, temp, cap, t_cap, reduction,
                     cotangent)
    for g, w, name in zip(got, want, ("loss", "dh", "de")):
        assert np.all(np.isfinite(g)), name
        assert_close(g, w, name)
    # The teacher is a constant.
    assert not np.any(got[3]) and not np.any(got[4])


@pytest.mark.parametrize(
    "temp, cap, t_cap, reduction, masked, rows",
    [
        (1.0, None, None, "mean", 0.25, 10),  # 97 = 9 * 10 + 7: padded
        (2.0, 30.0, 20.0, "mean", 0.25, 16),
        (0.7, 4.0, None, "sum", 0.5, 97),  # one chunk
        (1.5, None, 5.0, "mean", 0.0, 8),  # no mask
    ],
)
def test_token_chunks_with_fused_gradient_match_reference(
    monkeypatch, temp, cap, t_cap, reduction, masked, rows
):
    """`impl="xla"` with a reduction and no `chunk_size` walks token
    chunks and builds the gradient in the forward (token_chunked.py)."""
    monkeypatch.setattr(token_chunked, "TOKEN_CHUNK_ELEMENTS", rows * V)
    monkeypatch.setattr(token_chunked, "TORCH_TOKEN_CHUNK_ELEMENTS", rows * V)
    monkeypatch.setattr(token_chunked, "TOKEN_CHUNK_MIN", 1)
    assert token_chunked.resolve_token_chunk(N, V) == rows
    h, e, th, te, mask = make_problem(masked=masked)
    mask = mask if masked else None

    def loss_fn(h_, e_, th_, te_):
        return linear_kl_divergence(
            h_, e_, th_, te_, mask=mask, temperature=temp,
            logit_soft_cap=cap, teacher_logit_soft_cap=t_cap,
            reduction=reduction, impl="xla")

    got = value_and_grads(loss_fn, h, e, th, te)
    want = reference(h, e, th, te, mask, temp, cap, t_cap, reduction)
    for g, w, name in zip(got, want, ("loss", "dh", "de")):
        assert np.all(np.isfinite(g)), name
        assert_close(g, w, name)
    assert not np.any(got[3]) and not np.any(got[4])
    # The upstream scales the fused gradient.
    scaled = value_and_grads(lambda *a: 3.0 * loss_fn(*a), h, e, th, te)
    assert_close(scaled[1], 3.0 * want[1], "3 dh")
    assert_close(scaled[2], 3.0 * want[2], "3 de")


def test_float16_keeps_the_vocabulary_walk(monkeypatch):
    """float16 logit gradients would underflow in the fused walk before the
    loss scale multiplies them (token_chunked.applies)."""
    monkeypatch.setattr(token_chunked, "reduced_kl_grad_in_forward", None)
    h, e, th, te, mask = make_problem()
    value = linear_kl_divergence(
        h.astype("float16"), e.astype("float16"), th, te, mask=mask,
        impl="xla")
    want = reference(h, e, th, te, mask)[0]
    assert abs(float(keras.ops.convert_to_numpy(value)) - want) < 1e-2


@pytest.mark.parametrize("chunk", [64, None])
@pytest.mark.parametrize("impl", ["xla", "dense"])
def test_teacher_equal_student_gives_zero_loss_and_gradient(impl, chunk):
    h, e, _, _, mask = make_problem()

    def loss_fn(h_, e_, th_, te_):
        return linear_kl_divergence(
            h_, e_, th_, te_, mask=mask, temperature=1.3, logit_soft_cap=5.0,
            teacher_logit_soft_cap=5.0, impl=impl, chunk_size=chunk)

    value, dh, de, _, _ = value_and_grads(loss_fn, h, e, h.copy(), e.copy())
    assert abs(float(value)) <= 1e-6
    assert np.abs(dh).max() <= 1e-7 and np.abs(de).max() <= 1e-7


def test_all_masked_is_zero_and_leading_dims():
    h, e, th, te, _ = make_problem(n=2 * 7)
    out = linear_kl_divergence(
        h.reshape(2, 7, D), e, th.reshape(2, 7, DT), te,
        mask=np.zeros((2, 7), bool), reduction="mean")
    assert float(out) == 0.0
    out = linear_kl_divergence(
        h.reshape(2, 7, D), e, th.reshape(2, 7, DT), te, reduction="none",
        chunk_size=50)
    assert tuple(out.shape) == (2, 7)
    want = reference(h, e, th, te, reduction="none")[0]
    assert_close(keras.ops.convert_to_numpy(out).reshape(-1), want)


def test_mixed_objective_is_weighted_sum():
    h, e, th, te, mask = make_problem()
    labels = np.random.default_rng(2).integers(0, V, size=N).astype("int32")
    labels[~mask] = -100
    mixed = linear_distillation_loss(
        h, e, labels, th, te, ce_weight=0.3, temperature=2.0,
        logit_soft_cap=30.0, chunk_size=64)
    kl = reference(h, e, th, te, mask, 2.0, 30.0)[0]
    raw = h.astype("float64") @ e.astype("float64").T
    z = 30.0 * np.tanh(raw / 30.0)
    lse = np.log(np.exp(z - z.max(-1, keepdims=True)).sum(-1)) + z.max(-1)
    ce = (lse - z[np.arange(N), np.maximum(labels, 0)])[mask].mean()
    assert_close(keras.ops.convert_to_numpy(mixed), 0.3 * ce + 0.7 * kl)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(temperature=0.0), "temperature=0.0"),
        (dict(teacher_logit_soft_cap=-1.0), "teacher_logit_soft_cap=-1.0"),
        (dict(impl="cuda"), "Received: impl='cuda'"),
        (dict(reduction="avg"), "reduction='avg'"),
        (dict(chunk_size=0), "chunk_size=0"),
        (dict(mask=np.ones(3, bool)), r"mask.shape=\(3,\)"),
        (dict(te=np.ones((V + 1, DT), "float32")), "share the vocabulary"),
        (dict(th=np.ones((N - 1, DT), "float32")), "same leading"),
        (dict(te=np.ones((V, DT + 1), "float32")), "teacher_embedding"),
    ],
)
def test_bad_inputs_raise_clear_errors(kwargs, match):
    h, e, th, te, _ = make_problem()
    arrays = dict(h=h, e=e, th=th, te=te)
    for key in list(kwargs):
        if key in arrays:
            arrays[key] = kwargs.pop(key)
    with pytest.raises(ValueError, match=match):
        linear_kl_divergence(arrays["h"], arrays["e"], arrays["th"],
                             arrays["te"], **kwargs)
