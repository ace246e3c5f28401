"""`matmul_jax.matmul` and `Projection` on it, against autodiff of `@`."""

import numpy as np
import pytest

import keras

from keras_encdec.models.t5gemma.t5gemma_layers import Projection
from keras_encdec.ops import matmul_jax

pytestmark = pytest.mark.skipif(keras.backend.backend() != "jax",
                                reason="a jax custom_vjp")


def _normal(rng, *shape):
    return rng.normal(size=shape).astype("float32")


@pytest.mark.parametrize("fan_in,fan_out", [(24, 8), (8, 24), (16, 16)])
def test_values_and_gradients_match_autodiff(fan_in, fan_out):
    import jax

    rng = np.random.default_rng(0)
    x, w = _normal(rng, 10, fan_in), _normal(rng, fan_in, fan_out)
    weights = _normal(rng, 10, fan_out)

    def loss(fn):
        return jax.jit(jax.value_and_grad(
            lambda x, w: (fn(x, w) * weights).sum(), argnums=(0, 1)))

    (value, (dx, dw)) = loss(matmul_jax.matmul)(x, w)
    (want, (want_dx, want_dw)) = loss(lambda x, w: x @ w)(x, w)
    assert float(value) == float(want)
    np.testing.assert_allclose(np.asarray(dx), np.asarray(want_dx),
                               rtol=0, atol=1e-5)
    np.testing.assert_allclose(np.asarray(dw), np.asarray(want_dw),
                               rtol=0, atol=1e-5)
    assert np.abs(np.asarray(want_dw)).max() > 1


@pytest.mark.parametrize("equation,in_shape,out_shape", [
    ("btd,df->btf", (2, 5, 12), (None, 4)),  # A feed-forward up projection.
    ("btf,fd->btd", (2, 5, 12), (None, 4)),  # Tall kernel: down projection.
    ("btnh,nhd->btd", (2, 5, 3, 4), (None, 6)),  # Attention output.
])
@pytest.mark.parametrize("lora", [False, True])
def test_projection_uses_it_and_matches_einsum_dense(monkeypatch, equation,
                                                     in_shape, out_shape,
                                                     lora):
    import jax

    rng = np.random.default_rng(1)
    layer = Projection(equation, output_shape=out_shape)
    x = _normal(rng, *in_shape)
    layer.build(x.shape)
    if lora:
        layer.enable_lora(2)
        layer.lora_kernel_b.assign(_normal(rng, *layer.lora_kernel_b.shape))
    reference = keras.layers.EinsumDense(equation, output_shape=out_shape)
    reference.build(x.shape)
    reference.kernel.assign(layer.kernel)
    weights = _normal(rng, *layer(x).shape)
    calls = []
    real = matmul_jax.matmul
    monkeypatch.setattr(matmul_jax, "matmul",
                        lambda *a: calls.append(1) or real(*a))

    def grads(target):
        frozen = [v.value for v in target.non_trainable_variables]

        def loss(values, x):
            out, _ = target.stateless_call(values, frozen, x)
            return (out * weights).sum()
        values = [v.value for v in target.trainable_variables]
        return jax.grad(loss, argnums=(0, 1))(values, x)

    got_vars, got_dx = grads(layer)
    assert calls
    want_kernel, want_dx = grads(reference)
    np.testing.assert_allclose(np.asarray(got_dx), np.asarray(want_dx),
                               rtol=0, atol=1e-5)
    if not lora:
        np.testing.assert_allclose(np.asarray(got_vars[0]),
                                   np.asarray(want_kernel[0]), rtol=0,
                                   atol=1e-5)
        return
    # LoRA: the kernel is frozen; A and B get the merged kernel's gradient
    # (`kernel = W + A @ B * scale`) through the chain rule.
    a, b = (np.asarray(v) for v in (layer.lora_kernel_a, layer.lora_kernel_b))
    a = a.reshape(-1, a.shape[-1])  # [kernel rows, rank]; b: [rank, out]
    merged_grad = np.asarray(want_kernel[0]).reshape(a.shape[0], -1)
    scale = layer.lora_alpha / layer.lora_rank
    got_a, got_b = (np.asarray(g) for g in got_vars)
    assert np.abs(merged_grad).max() > 1
    np.testing.assert_allclose(got_a.reshape(a.shape), merged_grad @ b.T
                               * scale, rtol=0, atol=1e-4)
    np.testing.assert_allclose(got_b, a.T @ merged_grad * scale, rtol=0,
                               atol=1e-4)


def test_applies_only_to_float32():
    import jax.numpy as jnp

    x, w = jnp.zeros((2, 3)), jnp.zeros((3, 4))
    assert matmul_jax.applies(x, w)
    assert not matmul_jax.applies(x.astype("bfloat16"), w)
    assert not matmul_jax.applies(x, w.astype("bfloat16"))
