"""Tests of the public API against a float64 numpy reference.

Tolerances (stated once): float32 inputs must match the float64 reference
to `rtol=2e-5` and `atol=2e-5 * max|reference|` for the loss and both
gradients. bf16 inputs follow the CCE rule: the error of an impl vs float64
must not exceed the dense bf16 error plus `2**-8 * max|reference|`.
"""

import keras
import numpy as np
import pytest

from keras_encdec.losses import REDUCTIONS
from keras_encdec.losses import linear_cross_entropy
from keras_encdec.losses import token_chunked
from keras_encdec.losses.ce_testing import BACKEND
from keras_encdec.losses.ce_testing import D
from keras_encdec.losses.ce_testing import N
from keras_encdec.losses.ce_testing import TinyLM
from keras_encdec.losses.ce_testing import V
from keras_encdec.losses.ce_testing import assert_close
from keras_encdec.losses.ce_testing import bf16_errors
from keras_encdec.losses.ce_testing import check_against_reference
from keras_encdec.losses.ce_testing import make_problem
from keras_encdec.losses.ce_testing import reference
from keras_encdec.losses.ce_testing import value_and_grads


@pytest.mark.parametrize(
    "impl, cap, reduction",
    [("xla", cap, reduction) for cap in (None, 30.0)
     for reduction in REDUCTIONS]
    # The reductions are shared code after the per-token losses.
    + [("dense", None, "mean"), ("dense", 30.0, "none")],
)
def test_matches_float64_reference(impl, cap, reduction):
    check_against_reference(impl, cap=cap, reduction=reduction,
                            chunk_size=300 if impl == "xla" else None)


@pytest.mark.parametrize(
    "cap, reduction, weighted, rows",
    [
        (None, "mean", False, 10),  # 257 = 25 * 10 + 7: padded
        (30.0, "mean", True, 64),
        (4.0, "sum", True, 257),  # one chunk
        (None, "sum", False, 1),
    ],
)
def test_token_chunks_with_fused_gradient_match_reference(
    monkeypatch, cap, reduction, weighted, rows
):
    """`impl="xla"` with a reduction and no `chunk_size` walks token chunks
    and builds the gradient in the forward (token_chunked.py)."""
    monkeypatch.setattr(token_chunked, "TOKEN_CHUNK_ELEMENTS", rows * V)
    monkeypatch.setattr(token_chunked, "TORCH_TOKEN_CHUNK_ELEMENTS", rows * V)
    monkeypatch.setattr(token_chunked, "TOKEN_CHUNK_MIN", 1)
    assert token_chunked.resolve_token_chunk(N, V) == rows
    calls = []
    fused = token_chunked.reduced_ce_grad_in_forward
    monkeypatch.setattr(token_chunked, "reduced_ce_grad_in_forward",
                        lambda *a, **k: calls.append(1) or fused(*a, **k))
    check_against_reference("xla", cap=cap, reduction=reduction,
                            weighted=weighted)
    assert calls


@pytest.mark.parametrize("cap", [None, 30.0])
def test_fused_gradient_filter_matches_vocabulary_walk(cap):
    """`filter_eps` drops the same gradient entries on both walks; 0.5
    drops every softmax entry except the target's."""
    hidden, embedding, labels, _ = make_problem(n=64)
    kwargs = dict(impl="xla", filter_eps=0.5, logit_soft_cap=cap,
                  reduction="sum")
    fused = value_and_grads(hidden, embedding, labels, **kwargs)
    walk = value_and_grads(hidden, embedding, labels, chunk_size=300,
                           **kwargs)
    for name, a, b in zip(("loss", "dh", "de"), fused, walk):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5, err_msg=name)
    unfiltered = value_and_grads(hidden, embedding, labels, impl="xla",
                                 logit_soft_cap=cap, reduction="sum")
    assert np.abs(unfiltered[2] - fused[2]).max() > 1e-3  # it filtered


def test_large_vocabularies_keep_the_vocabulary_walk(monkeypatch):
    """Above `CE_MAX_VOCAB_ELEMENTS` (the fp32 `[V, D]` accumulator) the
    vocabulary walk runs."""
    monkeypatch.setattr(token_chunked, "CE_MAX_VOCAB_ELEMENTS", V * D - 1)
    monkeypatch.setattr(token_chunked, "reduced_ce_grad_in_forward", None)
    check_against_reference("xla", cap=30.0, weighted=True)


def test_float16_and_empty_inputs_keep_the_vocabulary_walk(monkeypatch):
    """float16 logit gradients would underflow before the loss scale is
    applied; zero tokens leave nothing to walk."""
    monkeypatch.setattr(token_chunked, "reduced_ce_grad_in_forward", None)
    hidden, embedding, labels, _ = make_problem(n=16)
    value = linear_cross_entropy(hidden.astype("float16"),
                                 embedding.astype("float16"), labels,
                                 impl="xla", logit_soft_cap=30.0)
    want = reference(hidden, embedding, labels, cap=30.0)[0]
    assert abs(float(keras.ops.convert_to_numpy(value)) - want) < 1e-2
    value, dh, de = value_and_grads(hidden[:0], embedding, labels[:0],
                                    impl="xla")
    assert float(value) == 0.0 and dh.shape == (0, D)
    assert not np.any(de)


@pytest.mark.skipif(BACKEND != "torch", reason="torch's no_grad mode")
def test_fused_gradient_is_skipped_without_autograd(monkeypatch):
    """Under `torch.no_grad()` (evaluate) the vocabulary walk runs: the
    gradient built in the forward would be wasted work."""
    import torch

    hidden, embedding, labels, _ = make_problem()
    with_grad = linear_cross_entropy(hidden, embedding, labels, impl="xla")
    monkeypatch.setattr(token_chunked, "reduced_ce_grad_in_forward", None)
    with torch.no_grad():
        without = linear_cross_entropy(hidden, embedding, labels, impl="xla")
    want = reference(hidden, embedding, labels)[0]
    assert_close(keras.ops.convert_to_numpy(without), want)
    assert_close(keras.ops.convert_to_numpy(with_grad.detach()), want)


@pytest.mark.parametrize("impl", ["xla", "dense"])
def test_sample_weights(impl):
    check_against_reference(impl, weighted=True, cap=30.0, chunk_size=128)


@pytest.mark.parametrize("impl", ["xla", "dense"])
def test_all_ignored_is_zero_with_zero_grads(impl):
    value, dh, de = check_against_reference(impl, ignored=1.1, cap=30.0)
    assert float(value) == 0.0
    assert not np.any(dh) and not np.any(de)


@pytest.mark.parametrize("impl", ["xla", "dense"])
def test_extreme_hidden_values(impl):
    # Logits reach ~|1000|: the LSE must stay finite and exact-ish.
    check_against_reference(impl, hidden_scale=100.0, rtol=1e-4)
    check_against_reference(impl, hidden_scale=100.0, cap=30.0, rtol=1e-4)


def test_leading_dims_and_none_shape():
    hidden, embedding, labels, _ = make_problem(n=2 * 31)
    hidden = hidden.reshape(2, 31, D)
    labels = labels.reshape(2, 31)
    out = linear_cross_entropy(hidden, embedding, labels, reduction="none",
                               impl="xla", chunk_size=512)
    assert tuple(out.shape) == (2, 31)
    want = reference(hidden.reshape(-1, D), embedding, labels.reshape(-1),
                     reduction="none")[0]
    assert_close(keras.ops.convert_to_numpy(out).reshape(-1), want)
    # Per-sequence weights broadcast over the sequence.
    seq_weight = np.array([0.5, 2.0], "float32")
    out = linear_cross_entropy(hidden, embedding, labels, impl="xla",
                               sample_weight=seq_weight, reduction="sum")
    want = reference(hidden.reshape(-1, D), embedding, labels.reshape(-1),
                     np.repeat(seq_weight, 31), reduction="sum")[0]
    assert_close(keras.ops.convert_to_numpy(out), want)


@pytest.mark.parametrize("chunk_size", [300, None])  # vocab walk, fused
def test_bf16_error_no_worse_than_dense(chunk_size):
    dense_errors, want = bf16_errors("dense")
    xla_errors, _ = bf16_errors("xla", chunk_size=chunk_size)
    for name, xla, dense, ref in zip(("loss", "dh", "de"), xla_errors,
                                     dense_errors, want):
        tol = 2.0**-8 * float(np.abs(ref).max())
        assert xla <= dense + tol, (name, xla, dense, tol)


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        (dict(labels=np.array([1, 2, 1001])), ValueError, "vocab_size=1001"),
        (dict(labels=np.array([1, -5, 0])), ValueError, "Received: label -5"),
        (dict(labels=np.array([1.0, 2.0, 3.0])), TypeError, "integer"),
        (dict(embedding=np.ones((V, D + 1), "float32")), ValueError,
         "last dim of `hidden_states`"),
        (dict(hidden=np.ones((3, D), "int32")), TypeError, "float tensor"),
        (dict(reduction="avg"), ValueError, "Received: reduction='avg'"),
        (dict(impl="cuda"), ValueError, "Received: impl='cuda'"),
        (dict(sample_weight=np.ones((4,), "float32")), ValueError,
         "sample_weight.shape=(4,)"),
        (dict(labels=np.array([[1, 2, 3]])), ValueError, "labels.shape"),
        (dict(chunk_size=0), ValueError, "chunk_size=0"),
    ],
)
def test_bad_inputs_raise_clear_errors(kwargs, error, match):
    args = dict(hidden=np.ones((3, D), "float32"),
                embedding=np.ones((V, D), "float32"),
                labels=np.array([1, -100, 2]))
    args.update(kwargs)
    hidden, embedding, labels = (args.pop(k) for k in
                                 ("hidden", "embedding", "labels"))
    with pytest.raises(error, match=match.replace("(", r"\(").replace(
            ")", r"\)")):
        args.setdefault("impl", "xla")
        linear_cross_entropy(hidden, embedding, labels, **args)


def test_unavailable_impls_raise_with_reason():
    hidden, embedding, labels, _ = make_problem(n=4)
    import os

    if not (BACKEND == "jax" and os.environ.get(
            "KERAS_ENCDEC_PALLAS_INTERPRET") == "1"):
        with pytest.raises(ValueError, match="impl='pallas' needs the JAX"):
            linear_cross_entropy(hidden, embedding, labels, impl="pallas")
    if not (BACKEND == "torch" and os.environ.get("TRITON_INTERPRET") == "1"):
        with pytest.raises(ValueError, match="impl='triton' needs the torch"):
            linear_cross_entropy(hidden, embedding, labels, impl="triton")


def test_fit_with_compute_loss():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(16, 5, 16)).astype("float32")
    y = rng.integers(0, 50, size=(16, 5)).astype("int32")
    y[:, -1] = -100
    model = TinyLM()
    model.compile(optimizer=keras.optimizers.Adam(0.05))
    history = model.fit(x, y, batch_size=8, epochs=3, verbose=0)
    losses = history.history["loss"]
    assert np.all(np.isfinite(losses))
    assert losses[-1] < losses[0]
