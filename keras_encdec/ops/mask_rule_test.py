"""`KeyWindow` and the window options against explicit inequalities."""

import keras
import numpy as np
import pytest
from keras import ops

from keras_encdec.ops.attention import attention_mask
from keras_encdec.ops.mask_rule import KeyWindow
from keras_encdec.ops.mask_rule import t5gemma2_encoder_window
from keras_encdec.ops.mask_rule import window_from_options

pytestmark = pytest.mark.skipif(keras.backend.backend() != "jax",
                                reason="backend-independent")


def _mask(length, **options):
    return ops.convert_to_numpy(attention_mask(length, length, **options))[0]


def test_t5gemma2_encoder_window_matches_transformers():
    # transformers 5.23, T5Gemma 2 encoder: keep 0 <= q - kv < (W + 1) // 2
    # or 0 < kv - q < W // 2 + 1.
    from transformers.models.t5gemma2 import modeling_t5gemma2

    length = 23
    q, k = np.arange(length)[:, None], np.arange(length)[None]
    for width in range(1, 12):
        rule = modeling_t5gemma2.sliding_window_mask_function(
            width, is_causal=False)
        expected = np.array([[bool(rule(0, 0, i, j)) for j in range(length)]
                             for i in range(length)])
        got = _mask(length, sliding_window=t5gemma2_encoder_window(width))
        np.testing.assert_array_equal(got, expected, err_msg=f"W={width}")
        dist = q - k
        explicit = ((dist >= 0) & (dist < (width + 1) // 2)) | (
            (dist < 0) & (-dist < width // 2 + 1))
        np.testing.assert_array_equal(got, explicit)
    assert t5gemma2_encoder_window(512) == (255, 256)


def test_int_windows_keep_their_meaning():
    length = 11
    q, k = np.arange(length)[:, None], np.arange(length)[None]
    np.testing.assert_array_equal(
        _mask(length, causal=True, sliding_window=3), (k <= q) & (k > q - 3))
    np.testing.assert_array_equal(
        _mask(length, sliding_window=3), np.abs(q - k) <= 3)
    np.testing.assert_array_equal(_mask(length, causal=True), k <= q)
    np.testing.assert_array_equal(
        _mask(length, sliding_window=(0, 2)), (k >= q) & (k <= q + 2))
    assert window_from_options(False, None) == KeyWindow(None, None)


def test_invalid_windows_raise():
    for bad in (-1, 1.5, True, (1,), (1, -2)):
        with pytest.raises(ValueError, match="sliding_window"):
            window_from_options(False, bad)
    with pytest.raises(ValueError, match=">= 1"):
        window_from_options(True, 0)
    with pytest.raises(ValueError, match="int >= 1"):
        t5gemma2_encoder_window(0)
    with pytest.raises(ValueError, match="KeyWindow.left"):
        KeyWindow(left=-1)
