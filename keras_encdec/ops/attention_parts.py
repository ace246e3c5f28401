"""Attention over one or more key sets, one softmax, any impl.

Every non-dense implementation computes, for one key set and its
`MaskRule`, a *part*: the normalized output over the visible keys and the
log-sum-exp of their logits, both float32, differentiable in both. A row
with no visible key in that set gets output 0 and log-sum-exp
`MASKED_LOGIT` (so it weighs nothing when parts are combined).

`combine_parts` merges parts into one softmax (exactly what a single
softmax over the concatenated keys gives) and is the ONE place where a row
with no visible key at all is handled: like `"dense"` (finite masked
logits), it gets the uniform average of every value of every key set.
"""

from keras import ops

MASKED_LOGIT = -1e30
# A log-sum-exp below this means the row saw no key.
FULLY_MASKED_THRESHOLD = -1e29


def _part_function(impl):
    if impl == "xla":
        from keras_encdec.ops.attention_blockwise import blockwise_part

        return blockwise_part
    if impl == "pallas":
        from keras_encdec.ops.attention_pallas import pallas_part

        return pallas_part
    if impl == "flex":
        from keras_encdec.ops.attention_flex import flex_part

        return flex_part
    raise ValueError(
        f"No part implementation for impl={impl!r}. Expected 'xla', "
        "'pallas' or 'flex'."
    )


def attend_parts(impl, query, parts, *, scale, soft_cap=None, **options):
    """One softmax over every `(key, value, rule)` in `parts`.

    Args:
        impl: str. `"xla"`, `"pallas"` or `"flex"`.
        query: tensor. `[batch, T, num_heads, head_dim]`.
        parts: list of `(key, value, MaskRule)`.
        scale: float. Multiplies the query-key logits.
        soft_cap: float or None. Defaults to `None`.
        **options: impl tiles (`block_q`, `block_k`, ...).

    Returns:
        A tensor `[batch, T, num_heads, head_dim]` in `query.dtype`.
    """
    part = _part_function(impl)
    results = [part(query, key, value, rule, scale=scale, soft_cap=soft_cap,
                    **options) for key, value, rule in parts]
    return combine_parts(results, [value for _, value, _ in parts],
                         query.dtype)


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
