"""Merging per-key-set attention parts into one softmax.

A *part* is the normalized attention output over one key set's visible keys
and the log-sum-exp of their logits (float32). A row with no visible key in
that set has output 0 and log-sum-exp `MASKED_LOGIT`. `combine_parts` is
the ONE place where a row with no visible key at all is handled. Kept apart
from `attention_parts` (which dispatches to the kernels) so that the kernels
import these pieces without an import cycle.
"""

from keras import ops

MASKED_LOGIT = -1e30
# A log-sum-exp below this means the row saw no key.
FULLY_MASKED_THRESHOLD = -1e29


def combine_parts(results, values, dtype):
    """Merges `(out, lse)` parts into one softmax; fills fully masked rows.

    Args:
        results: list of `(out [B, T, N, H], lse [B, T, N])`, float32.
        values: list of the parts' values `[B, S_i, K, H]`.
        dtype: the output dtype.

    Returns:
        A tensor `[B, T, N, H]` in `dtype`.
    """
    if len(results) == 1:
        out, lse = results[0]
    else:
        lses = ops.stack([lse for _, lse in results], axis=0)
        lse = ops.logsumexp(lses, axis=0)
        out = 0.0
        for part_out, part_lse in results:
            weight = ops.exp(part_lse - lse)[..., None]
            out = out + weight * ops.cast(part_out, "float32")
    fully_masked = lse < FULLY_MASKED_THRESHOLD  # [B, T, N]
    total = sum(value.shape[1] for value in values)
    mean = sum(ops.sum(ops.cast(value, "float32"), axis=1)
               for value in values) / total  # [B, K, H]
    groups = out.shape[2] // values[0].shape[2]
    mean = ops.repeat(mean, groups, axis=1)[:, None]  # [B, 1, N, H]
    out = ops.where(fully_masked[..., None], mean, ops.cast(out, "float32"))
    return ops.cast(out, dtype)
