"""`impl="sdpa"`: torch's `scaled_dot_product_attention` on a dense mask.

The key sets are concatenated (merged attention's one softmax is then one
attention, as transformers runs it) and the boolean visibility mask becomes
an additive mask: 0 on visible keys, `MASKED_LOGIT` on hidden ones. A row
with no visible key gets, as in `"dense"`, the uniform average of the
values: its query is zeroed and all its keys shown. (torch's boolean masks
give such rows zeros, and an all-`MASKED_LOGIT` row loses the logits to
rounding in the fused backward: wrong gradients.)

torch picks its fused kernel (on CPU a flash kernel with a fused backward,
on CUDA memory-efficient attention) and expands grouped key/value heads
itself (`enable_gqa`). On a 2-core CPU, T5Gemma 2's merged decoder attention
(4 x 256 queries, 512 keys) takes 10 ms forward and backward, against 20 ms
for `"dense"` (`tools/benchmark_vs_transformers.py`, BENCHMARKS.md).

It has no logit soft-cap and no probability dropout; `resolve_impl` picks
it on torch only where neither is asked for (T5Gemma 2; T5Gemma's Gemma 2
layers soft-cap their attention logits and stay `"dense"`).
"""

import keras

from keras_encdec.ops.attention_dense import concatenate_parts
from keras_encdec.ops.softmax_parts import MASKED_LOGIT

SDPA_DTYPES = ("float32", "bfloat16")


def unavailable_reason(query, soft_cap=None, probabilities_dropout=None):
    """Why `impl="sdpa"` cannot run on `query` here, or `None`."""
    backend = keras.backend.backend()
    if backend != "torch":
        return (
            "impl='sdpa' needs the torch backend (torch.nn.functional."
            f"scaled_dot_product_attention); this process runs {backend}"
        )
    if soft_cap is not None:
        return (
            "impl='sdpa' has no logit soft-cap. Received: "
            f"soft_cap={soft_cap!r}; use impl='dense' or 'xla'"
        )
    if probabilities_dropout is not None:
        return (
            "impl='sdpa' cannot apply `probabilities_dropout`; use "
            "impl='dense' or dropout_rate=0"
        )
    dtype = keras.backend.standardize_dtype(query.dtype)
    if dtype not in SDPA_DTYPES:
        return (
            f"impl='sdpa' runs {SDPA_DTYPES} queries. Received: "
            f"query dtype {dtype}"
        )
    return None


def sdpa_attention_parts(query, parts, *, scale):
    """One softmax over every `(key, value, mask)` of `parts`, by SDPA.

    Args:
        query: tensor. `[batch, T, num_heads, head_dim]`.
        parts: list of `(key, value, mask)`: key/value `[batch, S_i,
            num_kv_heads, head_dim]`, mask a bool `[batch or 1, T, S_i]`.
        scale: float. Multiplies the query-key logits.

    Returns:
        A tensor `[batch, T, num_heads, head_dim]` in `query.dtype`.
    """
    import torch

    if len(parts) > 1:
        key, value, mask = concatenate_parts(parts, query.shape[0])
    else:
        key, value, mask = parts[0]
    mask = torch.as_tensor(mask)
    # A row that sees no key: every key visible and a zero query, so equal
    # logits, the mean of the values and dense's gradients (none to the
    # query and keys; the values get the mean's).
    sees_a_key = mask.any(-1, keepdim=True)  # [B|1, T, 1]
    additive = torch.where(mask | ~sees_a_key, 0.0, MASKED_LOGIT)
    query = torch.where(sees_a_key[..., None], query, 0.0)
    num_heads, num_kv_heads = query.shape[-2], key.shape[-2]
    output = torch.nn.functional.scaled_dot_product_attention(
        query.transpose(1, 2),
        key.transpose(1, 2),
        value.transpose(1, 2),
        attn_mask=additive[:, None].to(query.dtype),  # [B|1, 1, T, S]
        scale=scale,
        enable_gqa=num_heads != num_kv_heads,
    )
    return output.transpose(1, 2)
