"""The input dict every keras-encdec encoder-decoder takes, and its checks.

The four `INPUT_NAMES` are always present. The two `SEGMENT_NAMES`
(sequence packing, see `keras_encdec.objectives.pack_examples`) are
optional and come together: int `[batch, length]` segment ids of the
encoder and decoder rows (1, 2, ... per packed example, 0 on padding).

Examples:

>>> import numpy as np
>>> batch = {name: np.ones((1, 4), "int32") for name in INPUT_NAMES}
>>> check_inputs(batch)
>>> batch["encoder_segment_ids"] = np.ones((1, 4), "int32")
>>> try:
...     check_inputs(batch)
... except ValueError as e:
...     print(str(e).split(".")[0])
Segment ids come in pairs
"""

INPUT_NAMES = (
    "encoder_token_ids",
    "encoder_padding_mask",
    "decoder_token_ids",
    "decoder_padding_mask",
)
ENCODER_SEGMENT_IDS = "encoder_segment_ids"
DECODER_SEGMENT_IDS = "decoder_segment_ids"
SEGMENT_NAMES = (ENCODER_SEGMENT_IDS, DECODER_SEGMENT_IDS)


def has_segment_ids(inputs):
    """Whether an input dict carries (packed) segment ids."""
    return isinstance(inputs, dict) and any(n in inputs for n in SEGMENT_NAMES)


def check_inputs(inputs):
    """Raises a clear error unless `inputs` is a backbone input dict.

    Keys must be exactly `INPUT_NAMES`, optionally with both
    `SEGMENT_NAMES`; token ids and segment ids must be integers and padding
    masks integers or booleans, each of rank 2, and each side's tensors
    must share one shape.
    """
    if not isinstance(inputs, dict):
        raise TypeError(
            "T5Gemma models take a dict of tensors. Received: "
            f"{type(inputs).__name__}. Expected keys {list(INPUT_NAMES)}."
        )
    names = INPUT_NAMES
    if has_segment_ids(inputs):
        _check_segment_pair(inputs)
        names = INPUT_NAMES + SEGMENT_NAMES
    if set(inputs) != set(names):
        raise ValueError(
            f"Wrong input keys. Received: {sorted(inputs)}. Expected exactly "
            f"{sorted(INPUT_NAMES)}, optionally with both "
            f"{list(SEGMENT_NAMES)}."
        )
    for name in names:
        value = inputs[name]
        dtype = str(getattr(value, "dtype", type(value).__name__))
        is_mask = "mask" in name
        allowed = ("int", "uint") + (("bool",) if is_mask else ())
        if not any(part in dtype for part in allowed):
            raise TypeError(
                f"`{name}` must be an integer tensor"
                + (" or a boolean mask" if is_mask else "")
                + f". Received: dtype={dtype}."
            )
        rank = len(getattr(value, "shape", ()))
        if rank != 2:
            raise ValueError(
                f"`{name}` must have shape [batch, length]. Received: shape="
                f"{tuple(getattr(value, 'shape', ()))}."
            )
    shapes = {name: tuple(inputs[name].shape) for name in names}
    for side in ("encoder", "decoder"):
        ids = f"{side}_token_ids"
        for other in (f"{side}_padding_mask", f"{side}_segment_ids"):
            if other in shapes and _differ(shapes[ids], shapes[other]):
                raise ValueError(
                    f"`{ids}` and `{other}` must have the same shape. "
                    f"Received: {shapes[ids]} and {shapes[other]}."
                )
    encoder_batch = shapes["encoder_token_ids"][0]
    decoder_batch = shapes["decoder_token_ids"][0]
    if _differ((encoder_batch,), (decoder_batch,)):
        raise ValueError(
            "The encoder and decoder inputs must have the same batch size. "
            f"Received: {encoder_batch} encoder rows and {decoder_batch} "
            "decoder rows."
        )


def _check_segment_pair(inputs):
    missing = [name for name in SEGMENT_NAMES if name not in inputs]
    if missing:
        given = [name for name in SEGMENT_NAMES if name in inputs]
        raise ValueError(
            "Segment ids come in pairs. Received: "
            f"`{given[0]}` without `{missing[0]}`. Expected both "
            f"{list(SEGMENT_NAMES)} (packed rows: attention, cross-attention "
            "included, stays inside a segment, so each decoder segment needs "
            "its encoder segment) or neither."
        )


def _differ(a, b):
    """True when two shapes differ in a dimension known in both."""
    return any(
        isinstance(x, int) and isinstance(y, int) and x != y
        for x, y in zip(a, b)
    )
