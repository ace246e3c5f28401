"""Test helper shared by the functional torch step's tests (both families)."""

import numpy as np
from keras import ops


def max_abs_step_vs_layers(lm, step, ids, cache, fast_cache, prefill_length=4):
    """Decodes `ids` with `step` and with the task's Keras layers, side by
    side: one causal `prefill_length`-token prefill, then one-token steps to
    the end of `ids`.

    Args:
        lm: the task (`call_decoder_with_cache` is the layer path).
        step: a `TorchDecodeStep` of `lm`.
        ids: int tensor `[batch, length]`, every token real.
        cache: the layer path's cache (`lm.build_cache`).
        fast_cache: the step's cache (`step.start`).
        prefill_length: int, the prefill's tokens.

    Returns:
        `(worst, expected)`: the max-abs logit gap over every position, and
        the layer path's logits of the last step.
    """
    prefill = ops.ones((ids.shape[0], prefill_length), "bool")
    head = ids[:, :prefill_length]
    expected, _, cache = lm.call_decoder_with_cache(head, prefill, cache, 0)
    logits, _, fast_cache = step(head, fast_cache, 0)
    worst = 0.0
    for index in range(prefill_length, ids.shape[1] + 1):
        difference = ops.convert_to_numpy(logits) - ops.convert_to_numpy(expected)
        worst = max(worst, float(np.abs(difference).max()))
        if index == ids.shape[1]:
            return worst, expected
        token = ids[:, index : index + 1]
        expected, _, cache = lm.call_decoder_with_cache(token, None, cache, index)
        logits, _, fast_cache = step(token, fast_cache, index)
