"""`Projection` (one matmul where the equation allows) and the torch RMS
norm give what `EinsumDense` and the `keras.ops` norm give, values and
gradients, eager and compiled."""

import keras
import numpy as np
import pytest

from keras_encdec.models.t5gemma.t5gemma_layers import Projection
from keras_encdec.models.t5gemma.t5gemma_layers import T5GemmaRMSNormalization
from keras_encdec.models.t5gemma.t5gemma_layers import contracted_axes
from keras_encdec.testing import compiled

TORCH = keras.backend.backend() == "torch"


def _numpy(x):
    return keras.ops.convert_to_numpy(keras.ops.cast(x, "float32"))


@pytest.mark.parametrize(
    "equation, want",
    [
        ("btd,dnh->btnh", 1),
        ("td,df->tf", 1),
        ("btnh,nhd->btd", 2),
        ("b t d, d f -> b t f", 1),
        ("btd,ndh->btnh", 0),  # contracted axis not leading in the kernel
        ("bd,dd->bd", 0),  # repeated letter
        ("ab,bc->ca", 0),  # output axes reordered
        ("btd,dnh->bnth", 0),
    ],
)
def test_contracted_axes(equation, want):
    assert contracted_axes(equation) == want


def _grads(layer, x, fn):
    """`(d x, d kernel)` of `sum(fn(x)^2)` on torch."""
    import torch

    xt = torch.tensor(x, requires_grad=True)
    for v in layer.trainable_variables:
        v.value.grad = None
    (fn(xt) ** 2).sum().backward()
    return [xt.grad.numpy()] + [
        v.value.grad.numpy().copy() for v in layer.trainable_variables
    ]


@pytest.mark.parametrize(
    "equation, x_shape, out_shape, lora",
    [
        ("btd,dnh->btnh", (2, 5, 8), (None, 3, 4), False),
        ("btnh,nhd->btd", (2, 5, 3, 4), (None, 8), False),
        ("btnh,nhd->btd", (2, 5, 3, 4), (None, 8), True),
        ("td,df->tf", (7, 8), (6,), True),
        ("btd,ndh->btnh", (2, 5, 8), (None, 3, 4), False),  # einsum
    ],
)
def test_projection_matches_einsum_dense(equation, x_shape, out_shape, lora):
    rng = np.random.default_rng(0)
    x = rng.normal(size=x_shape).astype("float32")
    ours = Projection(equation, output_shape=out_shape)
    ref = keras.layers.EinsumDense(equation, output_shape=out_shape)
    ours.build(x_shape)
    ref.build(x_shape)
    ref.set_weights(ours.get_weights())
    if lora:
        for layer in (ours, ref):
            layer.enable_lora(2)
            layer.lora_kernel_b.assign(np.ones(layer.lora_kernel_b.shape,
                                               "float32"))
        ref.lora_kernel_a.assign(ours.lora_kernel_a)
    want = _numpy(ref(x))
    np.testing.assert_allclose(_numpy(ours(x)), want, rtol=1e-5, atol=1e-6)
    if lora:  # LoRA changes the output
        without = _numpy(keras.ops.einsum(equation, x, ref._kernel))
        assert np.abs(want - without).max() > 1e-3
    if TORCH:
        for a, b in zip(_grads(ours, x, ours), _grads(ref, x, ref)):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


def test_projection_with_bias_or_activation_runs_einsum_dense():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(3, 4)).astype("float32")
    for kwargs in (dict(bias_axes="f"), dict(activation="relu")):
        ours = Projection("td,df->tf", output_shape=(5,), **kwargs)
        ref = keras.layers.EinsumDense("td,df->tf", output_shape=(5,),
                                       **kwargs)
        ours.build((3, 4))
        ref.build((3, 4))
        weights = [np.full(w.shape, 0.5, "float32") + i
                   for i, w in enumerate(ours.get_weights())]
        ours.set_weights(weights)
        ref.set_weights(weights)
        np.testing.assert_array_equal(_numpy(ours(x)), _numpy(ref(x)))


def test_rms_norm_matches_formula_with_gradients():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(2, 3, 8)).astype("float32") * 3.0
    norm = T5GemmaRMSNormalization(epsilon=1e-6)
    norm.build(x.shape)
    scale = rng.normal(size=(8,)).astype("float32")
    norm.scale.assign(scale)
    x64 = x.astype("float64")
    want = x64 / np.sqrt((x64**2).mean(-1, keepdims=True) + 1e-6)
    want = want * (1.0 + scale)
    np.testing.assert_allclose(_numpy(norm(x)), want, rtol=1e-5, atol=1e-5)
    if TORCH:
        import torch

        xt = torch.tensor(x, requires_grad=True)
        norm(xt).sum().backward()
        x64t = torch.tensor(x64, requires_grad=True)
        ref = x64t * torch.rsqrt((x64t**2).mean(-1, keepdim=True) + 1e-6)
        (ref * (1.0 + torch.tensor(scale, dtype=torch.float64))).sum(
        ).backward()
        np.testing.assert_allclose(xt.grad.numpy(), x64t.grad.numpy(),
                                   rtol=1e-4, atol=1e-5)


def test_projection_compiled_with_unknown_batch_and_length():
    # The flattened matmul under jax.jit / an XLA tf.function whose input
    # signature leaves batch and length unknown (torch: eager).
    rng = np.random.default_rng(3)
    x = rng.normal(size=(2, 5, 3, 4)).astype("float32")
    ours = Projection("btnh,nhd->btd", output_shape=(None, 8))
    ref = keras.layers.EinsumDense("btnh,nhd->btd", output_shape=(None, 8))
    ours.build(x.shape)
    ref.build(x.shape)
    ref.set_weights(ours.get_weights())
    signature = None
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        signature = [tf.TensorSpec((None, None, 3, 4), "float32")]
    run = compiled(lambda x: ours(x), input_signature=signature)
    np.testing.assert_allclose(_numpy(run(x)), _numpy(ref(x)), rtol=1e-5,
                               atol=1e-6)


def test_projection_refuses_reordered_contracted_axes():
    # [.., 4, 3] flattens to the same 12 values as [.., 3, 4]: without the
    # check the matmul would run on the wrong pairing.
    layer = Projection("btnh,nhd->btd", output_shape=(None, 8))
    layer.build((2, 5, 3, 4))
    with pytest.raises(ValueError, match=r"contracts input axes of sizes "
                       r"\(3, 4\)\. Received: input shape \(2, 5, 4, 3\)"):
        layer(np.ones((2, 5, 4, 3), "float32"))
