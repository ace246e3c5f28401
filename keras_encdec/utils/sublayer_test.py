"""`call_sublayer` returns what `layer(...)` returns, and skips
`Layer.__call__` only on eager torch, only where it changes nothing."""

import keras
import numpy as np
import pytest

from keras_encdec.utils.sublayer import call_sublayer

TORCH = keras.backend.backend() == "torch"


class Doubling(keras.layers.Layer):
    """`2 x` in training, `x` otherwise."""

    def call(self, x, training=None):
        return x * 2.0 if training else x


class Outer(keras.layers.Layer):
    """Calls `Doubling` without passing `training`."""

    def __init__(self):
        super().__init__()
        self.inner = Doubling()

    def call(self, x, training=None):
        return call_sublayer(self.inner, x)


@pytest.fixture
def layer_calls(monkeypatch):
    """Counts `Layer.__call__` invocations."""
    calls = []
    original = keras.layers.Layer.__call__

    def counting(self, *args, **kwargs):
        calls.append(type(self).__name__)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(keras.layers.Layer, "__call__", counting)
    return calls


def _numpy(x):
    return keras.ops.convert_to_numpy(keras.ops.cast(x, "float32"))


def test_plain_layers_skip_layer_call_on_torch(layer_calls):
    x = np.random.default_rng(0).normal(size=(2, 5)).astype("float32")
    dense = keras.layers.EinsumDense("bd,de->be", output_shape=(3,))
    want = _numpy(dense(x))
    dense.enable_lora(2)
    dense.lora_kernel_b.assign(np.ones((2, 3), "float32"))
    want_lora = _numpy(dense(x))
    assert np.abs(want_lora - want).max() > 1e-3  # LoRA changes the output
    layer_calls.clear()
    x = keras.ops.convert_to_tensor(x)
    np.testing.assert_array_equal(
        _numpy(call_sublayer(dense, x, training=False)), want_lora)
    doubling = Doubling()
    doubling.build((2, 5))
    np.testing.assert_array_equal(
        _numpy(call_sublayer(doubling, x, training=True)), 2 * _numpy(x))
    np.testing.assert_array_equal(
        _numpy(call_sublayer(doubling, x, training=False)), _numpy(x))
    assert layer_calls == ([] if TORCH else ["EinsumDense", "Doubling",
                                             "Doubling"])


def test_training_from_the_outer_call_goes_through_layer_call():
    """Without `training`, the inner layer reads the outer call's value."""
    x = keras.ops.ones((2, 3))
    outer = Outer()
    outer(x)
    np.testing.assert_array_equal(_numpy(outer(x, training=True)), 2.0)
    np.testing.assert_array_equal(_numpy(outer(x, training=False)), 1.0)


def test_mixed_precision_numpy_and_quantized_go_through_layer_call(
    layer_calls,
):
    x = keras.ops.convert_to_tensor(
        np.random.default_rng(1).normal(size=(4, 8)).astype("float32"))
    mixed = keras.layers.Dense(16, dtype="mixed_bfloat16")
    want = mixed(x)
    got = call_sublayer(mixed, x)
    assert keras.backend.standardize_dtype(got.dtype) == "bfloat16"
    np.testing.assert_array_equal(_numpy(got), _numpy(want))
    plain = keras.layers.Dense(16)
    want = plain(x)
    got = call_sublayer(plain, keras.ops.convert_to_numpy(x))  # not torch
    assert keras.backend.standardize_dtype(got.dtype) == "float32"
    np.testing.assert_array_equal(_numpy(got), _numpy(want))
    quantized = keras.layers.Dense(16)
    quantized.build((None, 8))
    quantized.quantize("int8")
    np.testing.assert_array_equal(
        _numpy(call_sublayer(quantized, x)), _numpy(quantized(x)))
    assert layer_calls.count("Dense") == 6
