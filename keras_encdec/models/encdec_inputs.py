"""The input dict every keras-encdec encoder-decoder takes, and its checks.

Examples:

>>> import numpy as np
>>> batch = {name: np.ones((1, 4), "int32") for name in INPUT_NAMES}
>>> check_inputs(batch)
"""

INPUT_NAMES = (
    "encoder_token_ids",
    "encoder_padding_mask",
    "decoder_token_ids",
    "decoder_padding_mask",
)


def check_inputs(inputs):
    """Raises a clear error unless `inputs` is a backbone input dict.

    Keys must be exactly `INPUT_NAMES`; token ids must be integers and
    padding masks integers or booleans, each of rank 2.
    """
    if not isinstance(inputs, dict):
        raise TypeError(
            "T5Gemma models take a dict of tensors. Received: "
            f"{type(inputs).__name__}. Expected keys {list(INPUT_NAMES)}."
        )
    if set(inputs) != set(INPUT_NAMES):
        raise ValueError(
            f"Wrong input keys. Received: {sorted(inputs)}. Expected exactly "
            f"{sorted(INPUT_NAMES)}."
        )
    for name in INPUT_NAMES:
        value = inputs[name]
        dtype = str(getattr(value, "dtype", type(value).__name__))
        allowed = ("int", "uint") + (("bool",) if "mask" in name else ())
        if not any(part in dtype for part in allowed):
            raise TypeError(
                f"`{name}` must be an integer tensor"
                + (" or a boolean mask" if "mask" in name else "")
                + f". Received: dtype={dtype}."
            )
        rank = len(getattr(value, "shape", ()))
        if rank != 2:
            raise ValueError(
                f"`{name}` must have shape [batch, length]. Received: shape="
                f"{tuple(getattr(value, 'shape', ()))}."
            )
    shapes = {name: tuple(inputs[name].shape) for name in INPUT_NAMES}
    for side in ("encoder", "decoder"):
        ids, mask = f"{side}_token_ids", f"{side}_padding_mask"
        if _differ(shapes[ids], shapes[mask]):
            raise ValueError(
                f"`{ids}` and `{mask}` must have the same shape. Received: "
                f"{shapes[ids]} and {shapes[mask]}."
            )
    encoder_batch = shapes["encoder_token_ids"][0]
    decoder_batch = shapes["decoder_token_ids"][0]
    if _differ((encoder_batch,), (decoder_batch,)):
        raise ValueError(
            "The encoder and decoder inputs must have the same batch size. "
            f"Received: {encoder_batch} encoder rows and {decoder_batch} "
            "decoder rows."
        )


def _differ(a, b):
    """True when two shapes differ in a dimension known in both."""
    return any(
        isinstance(x, int) and isinstance(y, int) and x != y
        for x, y in zip(a, b)
    )
