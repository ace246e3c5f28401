"""One attention function for every T5Gemma attention layer.

`dot_product_attention` covers everything the model needs: grouped-query
attention, Gemma 2's logit soft-cap, `query_pre_attn_scalar` scaling, the
encoder's two-sided sliding window, the decoder's causal sliding window, key
padding masks and one-token decode steps at an offset into a KV cache.

Masking semantics follow the pinned HF transformers T5Gemma exactly:

- causal: key `k` is visible from query `q` when `k <= q`;
- causal sliding window `W`: additionally `k > q - W` (`W` keys in all);
- two-sided sliding window `W` (encoder): `|q - k| <= W` (`2W + 1` keys);
- key padding: key `k` of row `b` is visible when `key_padding_mask[b, k]`.

`q` is the absolute query position, `query_offset + i` for row `i`.
"""

from keras import ops

ATTENTION_IMPLS = ("dense",)

# Large negative logit for masked keys. Finite, so a fully masked row gives a
# uniform distribution instead of NaN (as transformers' additive mask does).
_MASKED_LOGIT = -1e30


def _check_impl(impl):
    if impl is None:
        return "dense"
    if impl not in ATTENTION_IMPLS:
        raise ValueError(
            f"Unknown attention impl. Received: impl={impl!r}. Expected one "
            f"of {ATTENTION_IMPLS} or None (pick the best available)."
        )
    return impl


def attention_mask(
    query_length,
    key_length,
    *,
    query_offset=0,
    causal=False,
    sliding_window=None,
    key_padding_mask=None,
):
    """Builds the boolean visibility mask used by `dot_product_attention`.

    Args:
        query_length: int. Number of query positions `T`.
        key_length: int. Number of key positions `S`.
        query_offset: int or int scalar tensor. Absolute position of the
            first query. Defaults to `0`.
        causal: bool. Whether keys after the query are hidden. Defaults to
            `False`.
        sliding_window: int or None. Window size (see module docstring).
            Defaults to `None` (full attention).
        key_padding_mask: bool/int tensor or None. `[batch, S]`, true where
            the key is a real token. Defaults to `None`.

    Returns:
        A bool tensor `[1, T, S]`, or `[batch, T, S]` with a padding mask.

    Examples:

    >>> m = attention_mask(4, 4, causal=True, sliding_window=2)
    >>> ops.convert_to_numpy(m)[0].astype(int).tolist()
    [[1, 0, 0, 0], [1, 1, 0, 0], [0, 1, 1, 0], [0, 0, 1, 1]]
    """
    query_positions = ops.arange(query_length, dtype="int32") + ops.cast(
        query_offset, "int32"
    )
    key_positions = ops.arange(key_length, dtype="int32")
    q = query_positions[:, None]  # [T, 1]
    k = key_positions[None, :]  # [1, S]
    mask = ops.ones((query_length, key_length), dtype="bool")
    if causal:
        mask = ops.logical_and(mask, k <= q)
        if sliding_window is not None:
            mask = ops.logical_and(mask, k > q - sliding_window)
    elif sliding_window is not None:
        mask = ops.logical_and(mask, ops.abs(q - k) <= sliding_window)
    mask = mask[None]  # [1, T, S]
    if key_padding_mask is not None:
        key_padding_mask = ops.cast(key_padding_mask, "bool")[:, None, :]
        mask = ops.logical_and(mask, key_padding_mask)
    return mask


def dot_product_attention(
    query,
    key,
    value,
    *,
    scale,
    soft_cap=None,
    causal=False,
    sliding_window=None,
    key_padding_mask=None,
    query_offset=0,
    probabilities_dropout=None,
    impl=None,
):
    """Grouped-query attention with Gemma 2's soft-cap and window masks.

    Args:
        query: tensor. `[batch, T, num_heads, head_dim]`.
        key: tensor. `[batch, S, num_kv_heads, head_dim]`; `num_heads` must
            be a multiple of `num_kv_heads`.
        value: tensor. `[batch, S, num_kv_heads, head_dim]`.
        scale: float. Multiplies the query-key logits
            (`query_pre_attn_scalar ** -0.5` for T5Gemma).
        soft_cap: float or None. Applies `tanh(x / c) * c` to the scaled
            logits before masking. Defaults to `None`.
        causal: bool. Hide keys after the query. Defaults to `False`.
        sliding_window: int or None. See the module docstring for the
            causal and two-sided semantics. Defaults to `None`.
        key_padding_mask: tensor or None. `[batch, S]`, true on real keys.
            Defaults to `None`.
        query_offset: int or int scalar tensor. Absolute position of the
            first query (the cache index when decoding). Defaults to `0`.
        probabilities_dropout: callable or None. Applied to the attention
            probabilities (training only). Defaults to `None`.
        impl: str or None. `"dense"`, or `None` for the best available.
            Defaults to `None`.

    Returns:
        A tensor `[batch, T, num_heads, head_dim]` in `query.dtype`.

    Examples:

    >>> import numpy as np
    >>> q = np.random.rand(2, 5, 4, 8).astype("float32")
    >>> kv = np.random.rand(2, 5, 2, 8).astype("float32")
    >>> out = dot_product_attention(q, kv, kv, scale=8**-0.5, causal=True)
    >>> tuple(out.shape)
    (2, 5, 4, 8)
    """
    _check_impl(impl)
    num_heads, head_dim = query.shape[-2], query.shape[-1]
    num_kv_heads = key.shape[-2]
    if num_heads % num_kv_heads:
        raise ValueError(
            "The number of query heads must be a multiple of the number of "
            f"key/value heads. Received: num_heads={num_heads}, "
            f"num_kv_heads={num_kv_heads}."
        )
    groups = num_heads // num_kv_heads
    batch, query_length = ops.shape(query)[0], ops.shape(query)[1]
    key_length = ops.shape(key)[1]

    query = ops.reshape(
        query, (batch, query_length, num_kv_heads, groups, head_dim)
    )
    logits = ops.einsum("btkgh,bskh->bkgts", query, key)
    logits = ops.cast(logits, "float32") * scale
    if soft_cap is not None:
        logits = ops.tanh(logits / soft_cap) * soft_cap
    mask = attention_mask(
        query_length,
        key_length,
        query_offset=query_offset,
        causal=causal,
        sliding_window=sliding_window,
        key_padding_mask=key_padding_mask,
    )  # [batch|1, T, S]
    logits = ops.where(mask[:, None, None, :, :], logits, _MASKED_LOGIT)
    probabilities = ops.softmax(logits, axis=-1)
    probabilities = ops.cast(probabilities, value.dtype)
    if probabilities_dropout is not None:
        probabilities = probabilities_dropout(probabilities)
    output = ops.einsum("bkgts,bskh->btkgh", probabilities, value)
    return ops.reshape(output, (batch, query_length, num_heads, head_dim))
