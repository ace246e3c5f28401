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

from keras_encdec.ops.softmax_parts import combine_parts


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
