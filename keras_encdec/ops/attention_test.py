"""Dispatch tests for `dot_product_attention(impl=...)`."""

import numpy as np
import pytest
from keras import ops

from keras_encdec.ops import attention
from keras_encdec.ops import attention_decode
from keras_encdec.ops.attention import dot_product_attention
from keras_encdec.ops.attention_testing import BACKEND
from keras_encdec.ops.attention_testing import TOLERANCE
from keras_encdec.ops.attention_testing import impl_factory
from keras_encdec.ops.attention_testing import max_errors


def test_none_picks_dense_for_small_and_decode_shapes():
    query = np.zeros((1, 1, 2, 8), "float32")
    key = np.zeros((1, 8192, 2, 8), "float32")
    # torch runs its fused kernel on the same dense mask (no soft-cap here).
    want = "sdpa" if BACKEND == "torch" else "dense"
    assert attention.resolve_impl(None, query, key) == want
    assert attention.resolve_impl(None, query, key, soft_cap=50.0) == "dense"


def test_none_picks_memory_linear_impl_for_long_sequences():
    query = np.zeros((1, 1024, 2, 8), "float32")
    expected = {"jax": "xla", "torch": "xla", "tensorflow": "xla"}[BACKEND]
    assert attention.resolve_impl(None, query, query) == expected
    dropout = lambda p: p  # noqa: E731
    assert attention.resolve_impl(None, query, query, dropout) == "dense"


def test_named_impl_that_cannot_run_raises_with_reason():
    query = np.zeros((1, 4, 2, 8), "float32")
    with pytest.raises(ValueError, match="Unknown attention impl"):
        dot_product_attention(query, query, query, scale=1.0, impl="flash")
    with pytest.raises(ValueError, match="probabilities_dropout"):
        dot_product_attention(query, query, query, scale=1.0, impl="xla",
                              probabilities_dropout=lambda p: p)
    if BACKEND != "jax":
        with pytest.raises(ValueError, match=f"this process runs {BACKEND}"):
            dot_product_attention(query, query, query, scale=1.0,
                                  impl="pallas")
    if BACKEND != "torch":
        with pytest.raises(ValueError, match=f"this process runs {BACKEND}"):
            dot_product_attention(query, query, query, scale=1.0, impl="flex")


def test_bad_window_raises():
    query = np.zeros((1, 4, 2, 8), "float32")
    with pytest.raises(ValueError, match="non-causal"):
        dot_product_attention(query, query, query, scale=1.0, causal=True,
                              sliding_window=(2, 3))
    with pytest.raises(ValueError, match="Received: sliding_window=-1"):
        dot_product_attention(query, query, query, scale=1.0,
                              sliding_window=-1)
    with pytest.raises(ValueError, match="pair"):
        dot_product_attention(query, query, query, scale=1.0,
                              sliding_window=(1, 2, 3))


def test_public_xla_impl_matches_dense():
    # Through the public entry point, with the default block sizes.
    case = dict(T=300, S=300, causal=True, sliding_window=40, pad=True,
                soft_cap=50.0, heads=2, kv_heads=1)

    errors = max_errors(case, impl_factory("xla"))
    assert max(errors.values()) < TOLERANCE, errors


def _numpy_attention_parts(query, parts, scale, soft_cap):
    """One softmax over every part's keys, in float64 numpy."""
    batch, length, heads, dim = query.shape
    kv_heads = parts[0][0].shape[2]
    keys = np.concatenate([k for k, _, _ in parts], 1).astype("float64")
    values = np.concatenate([v for _, v, _ in parts], 1).astype("float64")
    mask = np.concatenate([m for _, _, m in parts], -1)
    keys = np.repeat(keys, heads // kv_heads, axis=2)
    values = np.repeat(values, heads // kv_heads, axis=2)
    logits = np.einsum("bthd,bshd->bhts", query, keys) * scale
    logits = np.tanh(logits / soft_cap) * soft_cap
    logits = np.where(mask[:, None], logits, -1e30)
    probs = np.exp(logits - logits.max(-1, keepdims=True))
    probs /= probs.sum(-1, keepdims=True)
    return np.einsum("bhts,bshd->bthd", probs, values)


def test_one_query_attention_equals_one_softmax_over_all_parts():
    # A decode step's form: 2 key sets (e.g. self cache + encoder), grouped
    # heads, soft-cap, padding; row 1 sees no key (mean of all values).
    rng = np.random.default_rng(0)
    query = rng.normal(size=(2, 1, 4, 8)).astype("float32")
    parts = []
    for length in (7, 5):
        key, value = rng.normal(size=(2, 2, length, 2, 8)).astype("float32")
        mask = np.ones((2, 1, length), bool)
        mask[0, 0, -2:] = False
        mask[1] = False
        parts.append((key, value, mask))
    got = attention_decode.one_query_attention_parts(
        query, parts, scale=0.4, soft_cap=3.0)
    want = _numpy_attention_parts(query, parts, 0.4, 3.0)
    np.testing.assert_allclose(ops.convert_to_numpy(got), want, atol=1e-5)
    # Through the dense impl (which takes this path on JAX/TensorFlow).
    dense = attention.dense_attention_parts(query, parts, scale=0.4,
                                            soft_cap=3.0)
    np.testing.assert_allclose(ops.convert_to_numpy(dense), want, atol=1e-5)


def test_numpy_inputs_give_the_backend_tensor_result():
    # Public ops take numpy arrays on every backend, as `keras.ops` do
    # (torch's sdpa path needs torch tensors inside).
    from keras_encdec.ops.merged_attention import merged_dot_product_attention

    rng = np.random.default_rng(0)
    q = rng.normal(size=(2, 5, 4, 8)).astype("float32")
    kv = rng.normal(size=(2, 5, 2, 8)).astype("float32")
    enc = rng.normal(size=(2, 7, 2, 8)).astype("float32")
    t = ops.convert_to_tensor
    for fn, arrays, kwargs in (
        (dot_product_attention, (q, kv, kv), dict(causal=True)),
        (merged_dot_product_attention, (q, kv, kv, enc, enc), {}),
    ):
        from_numpy = fn(*arrays, scale=0.3, **kwargs)
        from_tensors = fn(*(t(a) for a in arrays), scale=0.3, **kwargs)
        np.testing.assert_array_equal(ops.convert_to_numpy(from_numpy),
                                      ops.convert_to_numpy(from_tensors))
        assert float(np.abs(ops.convert_to_numpy(from_numpy)).sum()) > 0
