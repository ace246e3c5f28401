"""`attention_dense_jax` against autodiff of the `keras.ops` dense path.

`dense_attention_parts` runs `grouped_attention` (its own gradient) on
JAX's CPU backend for one float32 key set; with `applies` patched to
False it runs the `keras.ops` path, differentiated by JAX. Both must give
the same values and gradients up to float rounding: grouped queries,
padded keys, a row that sees no key, merged key sets (concatenated), with
and without a soft-cap.
"""

import numpy as np
import pytest

from keras_encdec.ops import attention_dense_jax
from keras_encdec.ops.attention_dense import dense_attention_parts
from keras_encdec.ops.attention_testing import BACKEND

pytestmark = pytest.mark.skipif(BACKEND != "jax", reason="a jax custom_vjp")


def _case(t, s1, s2):
    import jax.numpy as jnp

    rng = np.random.default_rng(0)
    b, n, k, h = 3, 4, 2, 8

    def normal(*shape):
        return jnp.asarray(rng.normal(size=shape).astype("float32"))

    args = (normal(b, t, n, h), normal(b, s1, k, h), normal(b, s1, k, h),
            normal(b, s2, k, h), normal(b, s2, k, h))
    causal = np.tril(np.ones((t, s1), bool))[None].repeat(b, 0)
    causal[1, 3:] = False  # Rows 3.. of batch 1 see no self key...
    padding = np.ones((b, t, s2), bool)
    padding[1] = False  # ...nor any cross key: they see no key at all.
    padding[2, :, s2 // 2:] = False
    return args, (jnp.asarray(causal), jnp.asarray(padding)), normal(b, t, n, h)


def _value_and_grads(monkeypatch, fast, args, masks, weights, soft_cap,
                     merged):
    import jax
    import jax.numpy as jnp

    calls = []
    real = attention_dense_jax.grouped_attention

    def spy(*a):
        calls.append(1)
        return real(*a)

    monkeypatch.setattr(attention_dense_jax, "grouped_attention", spy)
    if not fast:
        monkeypatch.setattr(attention_dense_jax, "applies",
                            lambda *a: False)

    def loss(q, k1, v1, k2, v2):
        parts = [(k1, v1, masks[0]), (k2, v2, masks[1])]
        out = dense_attention_parts(q, parts if merged else parts[1:],
                                    scale=0.3, soft_cap=soft_cap)
        return jnp.sum(out * weights), out

    grad = jax.jit(jax.value_and_grad(loss, argnums=(0, 1, 2, 3, 4),
                                      has_aux=True))
    (_, out), grads = grad(*args)
    monkeypatch.undo()
    return out, grads, len(calls)


@pytest.mark.parametrize("soft_cap", [None, 50.0])
@pytest.mark.parametrize("merged", [False, True])
def test_values_and_gradients_match_autodiff(monkeypatch, soft_cap, merged):
    # t * n >= 2 * k * h: the two key sets are concatenated into one.
    args, masks, weights = _case(t=8, s1=8, s2=6)
    out, grads, calls = _value_and_grads(monkeypatch, True, args, masks,
                                         weights, soft_cap, merged)
    want, want_grads, _ = _value_and_grads(monkeypatch, False, args, masks,
                                           weights, soft_cap, merged)
    assert calls == 1  # The custom gradient ran.
    np.testing.assert_allclose(np.asarray(out), np.asarray(want),
                               rtol=0, atol=1e-6)
    names = ("query", "k1", "v1", "k2", "v2")
    for name, got, expected in zip(names, grads, want_grads):
        expected = np.asarray(expected)
        if not merged and name in ("k1", "v1"):
            assert np.all(expected == 0) and np.all(np.asarray(got) == 0)
            continue
        assert np.abs(expected).max() > 0.1, name
        np.testing.assert_allclose(np.asarray(got), expected, rtol=0,
                                   atol=2e-6 * np.abs(expected).max(),
                                   err_msg=name)
    # The rows that see no key send no gradient to their query.
    assert np.all(np.asarray(grads[0][1, 3:]) == 0)


def test_applies_only_to_float32_without_dropout():
    import jax.numpy as jnp

    q = jnp.zeros((1, 2, 2, 1, 4))
    kv = jnp.zeros((1, 3, 2, 4))
    assert attention_dense_jax.applies(q, kv, kv, None)
    assert not attention_dense_jax.applies(q, kv, kv, lambda p: p)
    half = kv.astype("bfloat16")
    assert not attention_dense_jax.applies(q, half, half, None)
    assert not attention_dense_jax.applies(q.astype("bfloat16"), kv, kv,
                                           None)
