import keras
import numpy as np
import pytest

from keras_encdec.demo.models import reset_encoder_norm
from keras_encdec.models import T5Gemma2Backbone

pytestmark = pytest.mark.skipif(
    keras.backend.backend() != "jax", reason="weight surgery: one backend"
)


def test_reset_encoder_norm_gives_unit_rms_output_and_trains_it():
    backbone = T5Gemma2Backbone.from_preset("t5gemma2_tiny_random")
    norm = backbone.get_layer("encoder_norm")
    gains = np.linspace(0.0, 50.0, norm.scale.shape[0]).astype("float32")
    norm.scale.assign(gains)
    backbone.enable_lora(2)  # Freezes every norm.
    assert not norm.trainable
    old = reset_encoder_norm(backbone)
    np.testing.assert_allclose(old, 1.0 + gains.mean(), rtol=1e-6)
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(norm.scale), 0)
    assert norm.trainable
    assert any(v is norm.scale for v in backbone.trainable_weights)
    x = np.random.default_rng(0).normal(size=(2, 5, gains.size)) * 30.0
    rms = np.sqrt(np.mean(np.square(keras.ops.convert_to_numpy(norm(x))), -1))
    np.testing.assert_allclose(rms, 1.0, atol=1e-4)


def test_reset_encoder_norm_rejects_a_model_without_one():
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    with pytest.raises(ValueError, match="one layer named 'encoder_norm'"):
        reset_encoder_norm(model)
