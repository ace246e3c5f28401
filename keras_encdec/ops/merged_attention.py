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

Sequence packing: with `query_segment_ids` / `key_segment_ids` the own keys
are visible only within the query's segment, and with `cross_segment_ids`
an encoder key only from decoder queries of the same segment (pack encoder
inputs and decoder targets with matching segment numbers).

Implementations (`impl`) are those of `dot_product_attention`: `"dense"`
concatenates the `[T, S]` and `[T, S2]` scores, `"sdpa"` the keys and
masks (one torch attention); `"xla"`, `"pallas"` and
`"flex"` never build them: each computes both key sets as parts (normalized
output and log-sum-exp, one `MaskRule` each) and `combine_parts` merges them
into the one softmax, with exact gradients.
"""

from keras import ops

from keras_encdec.ops import attention
from keras_encdec.ops.attention_dense import check_heads
from keras_encdec.ops.attention_parts import attend_parts
from keras_encdec.ops.mask_rule import KeyWindow
from keras_encdec.ops.mask_rule import MaskRule
from keras_encdec.ops.mask_rule import window_from_options


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
    query_segment_ids=None,
    key_segment_ids=None,
    cross_segment_ids=None,
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
        query_segment_ids, key_segment_ids, cross_segment_ids: int tensors
            or None. See `merged_dot_product_attention`. Default to `None`.

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
    self_rule, cross_rule = merged_rules(
        causal=causal, sliding_window=sliding_window,
        key_padding_mask=key_padding_mask,
        cross_padding_mask=cross_padding_mask, query_offset=query_offset,
        query_segment_ids=query_segment_ids, key_segment_ids=key_segment_ids,
        cross_segment_ids=cross_segment_ids)
    return (self_rule.dense_mask(query_length, key_length),
            cross_rule.dense_mask(query_length, cross_length))


def merged_rules(*, causal=True, sliding_window=None, key_padding_mask=None,
                 cross_padding_mask=None, query_offset=0,
                 query_segment_ids=None, key_segment_ids=None,
                 cross_segment_ids=None):
    """`(self_rule, cross_rule)`: the `MaskRule` of each key set.

    Args:
        See `merged_attention_masks`.

    Returns:
        Two `MaskRule`s; the cross one has no window and no offset, and
        compares segments only when `cross_segment_ids` is given.

    Examples:

    >>> self_rule, cross_rule = merged_rules(sliding_window=4)
    >>> self_rule.window, cross_rule.window
    (KeyWindow(left=3, right=0), KeyWindow(left=None, right=None))
    """
    self_rule = MaskRule(
        window=window_from_options(causal, sliding_window),
        key_padding_mask=key_padding_mask, query_offset=query_offset,
        query_segment_ids=query_segment_ids, key_segment_ids=key_segment_ids)
    if cross_segment_ids is not None and query_segment_ids is None:
        raise ValueError(
            "`cross_segment_ids` needs `query_segment_ids` (the decoder "
            "query segment must equal the encoder key segment). Received: "
            "query_segment_ids=None."
        )
    cross_rule = MaskRule(
        window=KeyWindow(), key_padding_mask=cross_padding_mask,
        query_segment_ids=(None if cross_segment_ids is None
                           else query_segment_ids),
        key_segment_ids=cross_segment_ids)
    return self_rule, cross_rule


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
    query_segment_ids=None,
    key_segment_ids=None,
    cross_segment_ids=None,
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
        query_segment_ids: int tensor or None. `[batch, T]`, non-negative
            segment ids of the decoder queries (sequence packing). Defaults
            to `None`.
        key_segment_ids: int tensor or None. `[batch, S]`, segment ids of
            the decoder's own keys; an own key is visible only from queries
            of its segment. Given together with `query_segment_ids`.
            Defaults to `None`.
        cross_segment_ids: int tensor or None. `[batch, S2]`, segment ids of
            the encoder keys; an encoder key is visible only from decoder
            queries of the same segment (needs `query_segment_ids`).
            Defaults to `None` (no segment check on the encoder keys).
        impl: str or None. `"xla"`, `"pallas"`, `"flex"`, `"sdpa"`,
            `"dense"` (see `dot_product_attention`), or `None` for the best
            available here (`attention.resolve_impl` on `T * (S + S2)`
            scores). Defaults to `None`.

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
    query, key, value, cross_key, cross_value = (
        ops.convert_to_tensor(t)
        for t in (query, key, value, cross_key, cross_value))
    for name, tensor in (("cross_key", cross_key),
                         ("cross_value", cross_value), ("value", value)):
        if tuple(tensor.shape[-2:]) != tuple(key.shape[-2:]):
            raise ValueError(
                f"`{name}` must have the key's heads and head dim. "
                f"Received: {name}.shape={tuple(tensor.shape)}, "
                f"key.shape={tuple(key.shape)}."
            )
    impl = attention.resolve_impl(impl, query, key, cross_key=cross_key,
                                  soft_cap=soft_cap)
    check_heads(query, key)
    self_rule, cross_rule = merged_rules(
        causal=causal, sliding_window=sliding_window,
        key_padding_mask=key_padding_mask,
        cross_padding_mask=cross_padding_mask, query_offset=query_offset,
        query_segment_ids=query_segment_ids, key_segment_ids=key_segment_ids,
        cross_segment_ids=cross_segment_ids)
    if impl in attention.DENSE_MASK_IMPLS:
        length = ops.shape(query)[1]
        parts = [(key, value, self_rule.dense_mask(length, ops.shape(key)[1])),
                 (cross_key, cross_value,
                  cross_rule.dense_mask(length, ops.shape(cross_key)[1]))]
        return attention.attend_masked_parts(impl, query, parts, scale=scale,
                                             soft_cap=soft_cap)
    return attend_parts(
        impl, query, [(key, value, self_rule),
                      (cross_key, cross_value, cross_rule)],
        scale=scale, soft_cap=soft_cap)
