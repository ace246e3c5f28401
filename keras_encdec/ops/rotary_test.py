"""RoPE and packed-segment positions: against numpy, from numpy inputs."""

import numpy as np
from keras import ops

from keras_encdec.ops.rotary import apply_rotary_embedding
from keras_encdec.ops.rotary import segment_positions


def _numpy_rope(x, positions, base):
    """transformers' `rotate_half` RoPE in float64."""
    half = x.shape[-1] // 2
    inverse = 1.0 / base ** (np.arange(0, 2 * half, 2) / (2 * half))
    angles = np.asarray(positions, "float64")[..., None] * inverse
    angles = np.concatenate([angles, angles], axis=-1)
    if angles.ndim == 2:
        angles = angles[None]
    cos, sin = np.cos(angles)[:, :, None], np.sin(angles)[:, :, None]
    rotated = np.concatenate([-x[..., half:], x[..., :half]], axis=-1)
    return x * cos + rotated * sin


def test_rope_matches_numpy_for_numpy_and_backend_inputs():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2, 5, 3, 8)).astype("float32")
    for positions in (np.arange(5), np.array([[0, 1, 2, 3, 4],
                                               [7, 8, 9, 10, 11]])):
        expected = _numpy_rope(x.astype("float64"), positions, 1e4)
        for given in (x, ops.convert_to_tensor(x)):
            actual = ops.convert_to_numpy(
                apply_rotary_embedding(given, positions, 1e4))
            assert actual.dtype == np.float32
            assert np.max(np.abs(actual - expected)) < 1e-5


def test_segment_positions_restart_per_segment_as_int32():
    ids = np.array([[1, 1, 1, 2, 2, 0], [3, 3, 3, 3, 4, 4]], "int32")
    for given in (ids, ops.convert_to_tensor(ids), ids.tolist()):
        positions = segment_positions(given)
        assert ops.convert_to_numpy(positions).dtype == np.int32
        np.testing.assert_array_equal(
            ops.convert_to_numpy(positions),
            [[0, 1, 2, 0, 1, 0], [0, 1, 2, 3, 0, 1]])
