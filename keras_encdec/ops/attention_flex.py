"""torch `flex_attention` (`impl="flex"`): torch only.

The soft-cap is a `score_mod` (`tanh(s / c) * c`, applied by flex after the
`scale`), windows, causality, the decode offset and key padding are one
`mask_mod`, turned into a `BlockMask` so that blocks wholly outside the
window are skipped; the mask is the `MaskRule`'s (window on positions, codes
for key padding and segment ids). Grouped-query attention uses
`enable_gqa=True`. `flex_part` returns one key set's output and
log-sum-exp (see `attention_parts`; flex gives a fully masked row zeros and
`lse = -inf`, mapped to `MASKED_LOGIT`), filled in
`attention_parts.combine_parts`.

Where it runs (torch 2.13):

- CUDA: `flex_attention` compiled with `torch.compile` (Triton kernels,
  forward and backward). `impl=None` picks it on CUDA for long sequences.
- CPU: the forward runs eagerly (torch's reference path, which
  materializes the scores: for tests, not for memory); compiling it works
  but takes about a minute. torch has no CPU backward
  ("FlexAttention does not support backward on CPU"), so with gradients
  enabled on CPU `impl="flex"` raises and `impl=None` never picks it.
"""

import functools

import torch
from torch.nn.attention import flex_attention as flex

from keras_encdec.ops.softmax_parts import MASKED_LOGIT
from keras_encdec.ops.softmax_parts import combine_parts
from keras_encdec.ops.mask_rule import MaskRule
from keras_encdec.ops.mask_rule import visible
from keras_encdec.ops.mask_rule import window_from_options

DEFAULT_BLOCK_SIZE = 128


def _needs_grad(*tensors):
    return torch.is_grad_enabled() and any(
        isinstance(t, torch.Tensor) and t.requires_grad for t in tensors
    )


def unavailable_reason(query, key):
    """Why flex cannot run on these tensors (torch backend), or `None`."""
    if not isinstance(query, torch.Tensor):
        from keras import ops

        query = ops.convert_to_tensor(query)
    device = query.device
    if device.type == "cuda":
        return None
    if _needs_grad(query, key):
        return (
            f"impl='flex' has no backward on {device.type} in torch "
            f"{torch.__version__} (flex_attention's backward needs CUDA); "
            "use impl='xla' to train on CPU"
        )
    return None


@functools.lru_cache(maxsize=None)
def _compiled_flex_attention():
    return torch.compile(flex.flex_attention, dynamic=False)


def _mask_mod(window, offset, query_codes, key_codes):
    def mask_mod(b, h, q_index, k_index):
        if query_codes is None:
            return visible(window, q_index + offset, k_index)
        return visible(window, q_index + offset, k_index,
                       query_codes[b, q_index], key_codes[b, k_index])

    return mask_mod


def flex_attention(query, key, value, *, scale, soft_cap=None, causal=False,
                   sliding_window=None, key_padding_mask=None,
                   query_offset=0, query_segment_ids=None,
                   key_segment_ids=None, block_size=DEFAULT_BLOCK_SIZE):
    """`flex_attention` with the semantics of `dot_product_attention`.

    Args:
        query: torch tensor. `[batch, T, num_heads, head_dim]`.
        key: torch tensor. `[batch, S, num_kv_heads, head_dim]`.
        value: torch tensor. `[batch, S, num_kv_heads, head_dim]`.
        scale: float. Multiplies the query-key logits.
        soft_cap: float or None. `tanh(x / c) * c`. Defaults to `None`.
        causal: bool. Hide keys after the query. Defaults to `False`.
        sliding_window: int, `(left, right)` or None. Causal, two-sided or
            asymmetric window. Defaults to `None`.
        key_padding_mask: tensor or None. `[batch, S]`, true on real keys.
            Defaults to `None`.
        query_offset: int or int scalar tensor. Absolute position of the
            first query. Defaults to `0`.
        query_segment_ids: int tensor or None. `[batch, T]`, non-negative
            segment ids of the queries (sequence packing): a key is visible
            only from queries of its own segment. Given together with
            `key_segment_ids`. Defaults to `None`.
        key_segment_ids: int tensor or None. `[batch, S]`, non-negative
            segment ids of the keys. Defaults to `None`.
        block_size: int. `BlockMask` tile. Defaults to `DEFAULT_BLOCK_SIZE`.

    Returns:
        A tensor `[batch, T, num_heads, head_dim]` in `query.dtype`.

    Examples:

    >>> x = torch.rand(1, 20, 2, 8)
    >>> out = flex_attention(x, x[:, :, :1], x[:, :, :1], scale=0.3,
    ...                      causal=True, sliding_window=4)
    >>> tuple(out.shape)
    (1, 20, 2, 8)
    """
    from keras import ops

    value = ops.convert_to_tensor(value)
    rule = MaskRule(window=window_from_options(causal, sliding_window),
                    key_padding_mask=key_padding_mask,
                    query_offset=query_offset,
                    query_segment_ids=query_segment_ids,
                    key_segment_ids=key_segment_ids)
    result = flex_part(query, key, value, rule, scale=scale,
                       soft_cap=soft_cap, block_size=block_size)
    return combine_parts([result], [value], result[0].dtype).to(
        ops.convert_to_tensor(query).dtype)


def flex_part(query, key, value, rule, *, scale, soft_cap=None,
              block_size=DEFAULT_BLOCK_SIZE):
    """One key set's `(out, lse)` (see `attention_parts`) with flex.

    Args:
        query: torch tensor. `[batch, T, num_heads, head_dim]`.
        key: torch tensor. `[batch, S, num_kv_heads, head_dim]`.
        value: torch tensor. `[batch, S, num_kv_heads, head_dim]`.
        rule: MaskRule. Which keys each query sees.
        scale: float. Multiplies the query-key logits.
        soft_cap: float or None. `tanh(x / c) * c`. Defaults to `None`.
        block_size: int. `BlockMask` tile. Defaults to `DEFAULT_BLOCK_SIZE`.

    Returns:
        `(out [batch, T, num_heads, head_dim], lse [batch, T, num_heads])`,
        float32.
    """
    from keras import ops

    query, key, value = (ops.convert_to_tensor(x) for x in (query, key, value))
    batch, query_length, _, _ = query.shape
    key_length = key.shape[1]
    device = query.device
    query_codes, key_codes = rule.full_codes(batch, query_length, key_length)
    offset = torch.as_tensor(rule.query_offset, device=device,
                             dtype=torch.int32)
    block_mask = flex.create_block_mask(
        _mask_mod(rule.window, offset, query_codes, key_codes),
        batch if query_codes is not None else None, None, query_length,
        key_length, device=device, BLOCK_SIZE=block_size)
    score_mod = None
    if soft_cap is not None:
        def score_mod(score, b, h, q_index, k_index):
            return torch.tanh(score / soft_cap) * soft_cap
    attend = (_compiled_flex_attention() if device.type == "cuda"
              else flex.flex_attention)
    out, aux = attend(
        query.transpose(1, 2), key.transpose(1, 2), value.transpose(1, 2),
        score_mod=score_mod, block_mask=block_mask, scale=scale,
        enable_gqa=True, return_aux=flex.AuxRequest(lse=True))
    out = out.transpose(1, 2).float()  # [B, T, N, H]
    lse = aux.lse.transpose(1, 2).float()  # [B, T, N]
    fully_masked = torch.isneginf(lse)
    out = torch.where(fully_masked[..., None], 0.0, out)
    return out, torch.where(fully_masked, MASKED_LOGIT, lse)
