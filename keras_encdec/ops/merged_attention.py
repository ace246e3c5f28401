"""Merged self + cross attention (T5Gemma 2's decoder): one softmax.

T5Gemma 2's decoder attends to its own keys and the encoder's keys with a
single softmax over the concatenation `[self ; cross]` (transformers
concatenates keys, values and masks and runs one attention). The self part
follows `dot_product_attention`'s rules (causal, optional causal window, key
padding, query offset for cached decoding); the cross part is masked by the
encoder padding only. The soft-cap, when given, applies to both parts.

A row whose every key (self and cross) is masked gets, as in `"dense"`
`dot_product_attention`, the uniform average of all `S + S2` values. A fully
padded encoder therefore gives exactly self-only attention wherever the
query sees at least one of its own keys.
"""

from keras import ops

from keras_encdec.ops import attention

MERGED_IMPLS = ("dense",)


def merged_attention_masks(
    query_length,
    key_length,
    cross_length,
    *,
    causal=True,
    sliding_window=None,
    key_padding_mask=None,
    cross_padding_mask=None,
    query_offset=0,
):
    """The two boolean masks of `merged_dot_product_attention`.

    Args:
        query_length: int. `T`.
        key_length: int. `S`, the decoder's own keys.
        cross_length: int. `S2`, the encoder's keys.
        causal: bool. Defaults to `True`.
        sliding_window: int, `(left, right)` or None. Self part only.
            Defaults to `None`.
        key_padding_mask: tensor or None. `[batch, S]`. Defaults to `None`.
        cross_padding_mask: tensor or None. `[batch, S2]`. Defaults to
            `None`.
        query_offset: int or int scalar tensor. Defaults to `0`.

    Returns:
        `(self_mask, cross_mask)`, bool `[batch or 1, T, S]` and
        `[batch or 1, T, S2]`.

    Examples:

    >>> m, c = merged_attention_masks(2, 2, 3)
    >>> ops.convert_to_numpy(m)[0].astype(int).tolist()
    [[1, 0], [1, 1]]
    >>> tuple(c.shape)
    (1, 2, 3)
    """
    self_mask = attention.attention_mask(
        query_length, key_length, query_offset=query_offset, causal=causal,
        sliding_window=sliding_window, key_padding_mask=key_padding_mask)
    cross_mask = attention.attention_mask(
        query_length, cross_length, key_padding_mask=cross_padding_mask)
    return self_mask, cross_mask


def merged_dot_product_attention(
    query,
    key,
    value,
    cross_key,
    cross_value,
    *,
    scale,
    soft_cap=None,
    causal=True,
    sliding_window=None,
    key_padding_mask=None,
    cross_padding_mask=None,
    query_offset=0,
    impl=None,
):
    """One softmax over the decoder's own keys and the encoder's keys.

    Args:
        query: tensor. `[batch, T, num_heads, head_dim]`.
        key: tensor. `[batch, S, num_kv_heads, head_dim]`, the decoder's own
            keys (a KV cache when decoding).
        value: tensor. `[batch, S, num_kv_heads, head_dim]`.
        cross_key: tensor. `[batch, S2, num_kv_heads, head_dim]`, the
            encoder's keys.
        cross_value: tensor. `[batch, S2, num_kv_heads, head_dim]`.
        scale: float. Multiplies the query-key logits of both parts.
        soft_cap: float or None. `tanh(x / c) * c` on the scaled logits of
            both parts. Defaults to `None`.
        causal: bool. Hide own keys after the query. Defaults to `True`.
        sliding_window: int, `(left, right)` or None. Window on the own
            keys (see `dot_product_attention`); the encoder keys have none.
            Defaults to `None`.
        key_padding_mask: tensor or None. `[batch, S]`, true on real own
            keys. Defaults to `None`.
        cross_padding_mask: tensor or None. `[batch, S2]`, true on real
            encoder keys. Defaults to `None`.
        query_offset: int or int scalar tensor. Absolute position of the
            first query among the own keys (the cache index when decoding).
            Defaults to `0`.
        impl: str or None. One of `MERGED_IMPLS`, or `None` for the best
            available. Defaults to `None`.

    Returns:
        A tensor `[batch, T, num_heads, head_dim]` in `query.dtype`.

    Examples:

    >>> import numpy as np
    >>> q = np.random.rand(2, 5, 4, 8).astype("float32")
    >>> kv = np.random.rand(2, 5, 2, 8).astype("float32")
    >>> enc = np.random.rand(2, 7, 2, 8).astype("float32")
    >>> out = merged_dot_product_attention(q, kv, kv, enc, enc,
    ...                                    scale=8**-0.5)
    >>> tuple(out.shape)
    (2, 5, 4, 8)
    """
    if impl is not None and impl not in MERGED_IMPLS:
        raise ValueError(
            f"Unknown merged attention impl. Received: impl={impl!r}. "
            f"Expected one of {MERGED_IMPLS} or None."
        )
    for name, tensor in (("cross_key", cross_key),
                         ("cross_value", cross_value), ("value", value)):
        if tensor.shape[-2:] != key.shape[-2:]:
            raise ValueError(
                f"`{name}` must have the key's heads and head dim. "
                f"Received: {name}.shape={tuple(tensor.shape)}, "
                f"key.shape={tuple(key.shape)}."
            )
    self_mask, cross_mask = merged_attention_masks(
        ops.shape(query)[1], ops.shape(key)[1], ops.shape(cross_key)[1],
        causal=causal, sliding_window=sliding_window,
        key_padding_mask=key_padding_mask,
        cross_padding_mask=cross_padding_mask, query_offset=query_offset)
    return attention.dense_attention_parts(
        query, [(key, value, self_mask), (cross_key, cross_value,
                                          cross_mask)],
        scale=scale, soft_cap=soft_cap)
