"""Rotary position embedding (RoPE), half-rotation layout as in Gemma."""

from keras import ops


def apply_rotary_embedding(x, positions, max_wavelength=10000.0):
    """Rotates `x` by its absolute positions.

    Uses the "rotate half" layout of Gemma and HF transformers: the head
    dimension is split in two halves that form the (real, imaginary) parts.
    Frequencies and angles are computed in float32, then cast to `x.dtype`.

    Args:
        x: tensor. `[batch, seq, heads, head_dim]` queries or keys.
        positions: int tensor. `[seq]` or `[batch, seq]` absolute positions.
        max_wavelength: float. The RoPE base wavelength. Defaults to `10000`.

    Returns:
        A tensor of the same shape and dtype as `x`.

    Examples:

    >>> import numpy as np
    >>> x = np.ones((1, 3, 2, 4), "float32")
    >>> y = apply_rotary_embedding(x, np.arange(3))
    >>> tuple(y.shape)
    (1, 3, 2, 4)
    """
    x = ops.convert_to_tensor(x)
    head_dim = x.shape[-1]
    if head_dim % 2:
        raise ValueError(
            f"RoPE needs an even head dimension. Received: head_dim={head_dim}."
        )
    exponents = ops.arange(0, head_dim, 2, dtype="float32") / head_dim
    inverse_frequencies = 1.0 / ops.power(
        ops.cast(max_wavelength, "float32"), exponents
    )
    positions = ops.cast(positions, "float32")
    angles = positions[..., None] * inverse_frequencies  # [(batch,) seq, h/2]
    angles = ops.concatenate([angles, angles], axis=-1)  # [(batch,) seq, h]
    if len(angles.shape) == 2:
        angles = angles[None]
    angles = angles[:, :, None, :]  # [batch|1, seq, 1, head_dim]
    cos = ops.cast(ops.cos(angles), x.dtype)
    sin = ops.cast(ops.sin(angles), x.dtype)
    first, second = ops.split(x, 2, axis=-1)
    rotated = ops.concatenate([-second, first], axis=-1)
    return x * cos + rotated * sin


def segment_positions(segment_ids):
    """Positions that restart at 0 on each packed segment.

    A token's position is its distance from the first token of its run of
    equal segment ids (packed segments are contiguous runs).

    Args:
        segment_ids: int tensor. `[batch, seq]` segment ids.

    Returns:
        An int32 tensor `[batch, seq]`.

    Examples:

    >>> from keras import ops
    >>> ops.convert_to_numpy(segment_positions([[1, 1, 1, 2, 2, 0]])).tolist()
    [[0, 1, 2, 0, 1, 0]]
    """
    segment_ids = ops.cast(segment_ids, "int32")
    shape = ops.shape(segment_ids)
    index = ops.broadcast_to(ops.arange(shape[1], dtype="int32")[None], shape)
    previous = ops.pad(segment_ids[:, :-1], [[0, 0], [1, 0]],
                       constant_values=-1)
    starts = ops.where(ops.not_equal(segment_ids, previous), index, 0)
    last_start = ops.associative_scan(ops.maximum, starts, axis=1)
    # TensorFlow's scan loses the static rank: restore the input's shape;
    # torch's returns floats.
    return index - ops.cast(ops.reshape(last_start, shape), "int32")
