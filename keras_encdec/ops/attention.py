"""One attention function for every T5Gemma attention layer.

`dot_product_attention` covers everything the model needs: grouped-query
attention, Gemma 2's logit soft-cap, `query_pre_attn_scalar` scaling, the
encoder's two-sided sliding window, the decoder's causal sliding window, key
padding masks and one-token decode steps at an offset into a KV cache.

Masking semantics follow the pinned HF transformers T5Gemma exactly:

- causal: key `k` is visible from query `q` when `k <= q`;
- causal sliding window `W`: additionally `k > q - W` (`W` keys in all);
- two-sided sliding window `W` (encoder): `|q - k| <= W` (`2W + 1` keys);
- asymmetric window `(left, right)` (non-causal only): `q - left <= k <=
  q + right`; T5Gemma 2's encoder window `W` is
  `t5gemma2_encoder_window(W) = ((W + 1) // 2 - 1, W // 2)`;
- key padding: key `k` of row `b` is visible when `key_padding_mask[b, k]`;
- segment ids (sequence packing): key `k` is visible from query `i` of row
  `b` only when `query_segment_ids[b, i] == key_segment_ids[b, k]`.

`q` is the absolute query position, `query_offset + i` for row `i`. The rule
is one `mask_rule.MaskRule`, built here and consumed by every implementation.
A row with no visible key gets the uniform average of all values (finite
masked logits, as transformers' additive mask); `attention_parts` is the one
place that does this for the non-dense impls.

Implementations (`impl`), each in its own module, all numerically equal to
`"dense"` (fp32 forward and gradients within 1e-5 in the tests):

- `"dense"`: materializes the `[T, S]` scores; the only one that applies
  `probabilities_dropout`.
- `"xla"` (`attention_blockwise`): online softmax over key blocks in
  `keras.ops` with a recomputing custom gradient; every backend; memory
  linear in length; sliding windows skip key blocks.
- `"pallas"` (`attention_pallas`): JAX flash kernels for GPU (Triton) and
  TPU (Mosaic; compile-checked with `tools/check_tpu_kernels.py`, not yet
  measured on a chip); CPU tests via `KERAS_ENCDEC_PALLAS_INTERPRET=1`.
- `"flex"` (`attention_flex`): torch `flex_attention` (CUDA; CPU forward
  only).
- `"sdpa"` (`attention_sdpa`): torch `scaled_dot_product_attention` on the
  dense mask (fused forward and backward); no soft-cap, no dropout.

`impl=None` (see `resolve_impl`): for small score matrices (`T * S <
BLOCKWISE_MIN_SCORES`, e.g. decode steps and tiny models), with dropout, or
with unknown lengths, `"sdpa"` on torch without soft-cap or dropout, else
`"dense"`; larger ones get `"pallas"` on a JAX GPU, `"flex"` on torch CUDA,
and `"xla"` everywhere else (CPU, TPU, TensorFlow). On TPU, `"pallas"` runs
when named; `None` keeps `"xla"` until it is measured there.
"""


import keras
from keras import ops

from keras_encdec.ops.attention_dense import check_heads
from keras_encdec.ops import attention_sdpa
from keras_encdec.ops.attention_dense import dense_attention_parts
from keras_encdec.ops.attention_parts import attend_parts
from keras_encdec.ops.mask_rule import MaskRule
from keras_encdec.ops.mask_rule import window_from_options
from keras_encdec.utils import dispatch

ATTENTION_IMPLS = ("xla", "pallas", "flex", "sdpa", "dense")
# The impls that take a materialized boolean mask per key set.
DENSE_MASK_IMPLS = ("sdpa", "dense")

# Masked keys get the finite `MASKED_LOGIT`, so a fully masked row gives a
# uniform distribution instead of NaN (as transformers' additive mask does).

# `impl=None` keeps "dense" below this many scores per head (`T * S`): the
# score matrix is small (< 4 MiB per head in float32) and one fused matmul
# beats a loop over key blocks. Decode steps (`T = 1`) always stay dense.
BLOCKWISE_MIN_SCORES = 1024 * 1024


def _static_lengths(query, *keys):
    lengths = (query.shape[1],) + tuple(k.shape[1] for k in keys)
    return all(isinstance(n, int) for n in lengths)


def unavailable_reason(impl, query, key, probabilities_dropout=None,
                       cross_key=None, soft_cap=None):
    """Why `impl` cannot run on these inputs here, or `None` if it can.

    Args:
        impl: str. One of `ATTENTION_IMPLS`.
        query: tensor. The query, `[batch, T, num_heads, head_dim]`.
        key: tensor. The key, `[batch, S, num_kv_heads, head_dim]`.
        probabilities_dropout: callable or None. Dropout on probabilities
            (only `"dense"` applies it). Defaults to `None`.
        cross_key: tensor or None. The encoder keys of merged attention.
            Defaults to `None`.
        soft_cap: float or None. The logit soft-cap (`"sdpa"` has none).
            Defaults to `None`.

    Returns:
        A string, or `None`.

    Examples:

    >>> import numpy as np
    >>> x = np.zeros((1, 4, 2, 8), "float32")
    >>> unavailable_reason("dense", x, x) is None
    True
    """
    if impl == "dense":
        return None
    if impl == "sdpa":
        return attention_sdpa.unavailable_reason(
            query, soft_cap, probabilities_dropout)
    if probabilities_dropout is not None:
        return (
            f"impl={impl!r} cannot apply `probabilities_dropout` (it never "
            "holds the probabilities); use impl='dense' or dropout_rate=0"
        )
    keys = (key,) if cross_key is None else (key, cross_key)
    if not _static_lengths(query, *keys):
        return (
            f"impl={impl!r} needs static sequence lengths. Received: "
            f"query.shape={tuple(query.shape)}, "
            f"key shapes={[tuple(k.shape) for k in keys]}"
        )
    if impl == "xla":
        return None
    if impl == "pallas":
        return dispatch.pallas_unavailable_reason(query)
    if impl == "flex":
        backend = keras.backend.backend()
        if backend != "torch":
            return (
                "impl='flex' needs the torch backend (torch.nn.attention."
                f"flex_attention); this process runs {backend} on "
                f"{dispatch.device_kind(query)}"
            )
        from keras_encdec.ops import attention_flex

        return attention_flex.unavailable_reason(query, key)
    return f"unknown attention impl {impl!r}"


def resolve_impl(impl, query, key, probabilities_dropout=None,
                 cross_key=None, soft_cap=None):
    """The implementation `dot_product_attention` runs for `impl`.

    `None` picks, in order: with dropout, unknown lengths or fewer than
    `BLOCKWISE_MIN_SCORES` scores per head, `"sdpa"` where it runs (torch,
    no soft-cap, no dropout, float32 or bfloat16), else `"dense"`;
    `"pallas"` on a JAX GPU;
    `"flex"` on a torch CUDA device; `"xla"` otherwise (CPU, TPU,
    TensorFlow). A named impl that cannot run raises `ValueError` with the
    reason; there is no silent fallback (`keras_encdec.utils.dispatch`).

    Args:
        impl: str or None. Requested implementation.
        query: tensor. The query, `[batch, T, num_heads, head_dim]`.
        key: tensor. The key, `[batch, S, num_kv_heads, head_dim]`.
        probabilities_dropout: callable or None. Defaults to `None`.
        cross_key: tensor or None. The encoder keys of merged attention
            (their length counts towards the scores). Defaults to `None`.
        soft_cap: float or None. The logit soft-cap. Defaults to `None`.

    Returns:
        One of `ATTENTION_IMPLS`.

    Examples:

    >>> import numpy as np
    >>> x = np.zeros((1, 4, 2, 8), "float32")
    >>> resolve_impl(None, x, x, soft_cap=50.0)
    'dense'
    """
    keys = (key,) if cross_key is None else (key, cross_key)
    if impl is None and (
        probabilities_dropout is not None
        or not _static_lengths(query, *keys)
        or query.shape[1] * sum(k.shape[1] for k in keys)
        < BLOCKWISE_MIN_SCORES
    ):
        sdpa = attention_sdpa.unavailable_reason(
            query, soft_cap, probabilities_dropout)
        return "dense" if sdpa else "sdpa"
    # On TPU "pallas" runs when named; None keeps "xla" until measured.
    candidates = ("xla",)
    if dispatch.device_kind(query) == "gpu":
        candidates = ("pallas", "flex", "xla")
    return dispatch.resolve(
        impl, impls=ATTENTION_IMPLS, what="attention impl",
        candidates=candidates,
        unavailable_reason=lambda name: unavailable_reason(
            name, query, key, probabilities_dropout, cross_key, soft_cap))


def attention_mask(
    query_length,
    key_length,
    *,
    query_offset=0,
    causal=False,
    sliding_window=None,
    key_padding_mask=None,
    query_segment_ids=None,
    key_segment_ids=None,
):
    """Builds the boolean visibility mask used by `dot_product_attention`.

    Args:
        query_length: int. Number of query positions `T`.
        key_length: int. Number of key positions `S`.
        query_offset: int or int scalar tensor. Absolute position of the
            first query. Defaults to `0`.
        causal: bool. Whether keys after the query are hidden. Defaults to
            `False`.
        sliding_window: int, `(left, right)` or None. Window (see module
            docstring). Defaults to `None` (full attention).
        key_padding_mask: bool/int tensor or None. `[batch, S]`, true where
            the key is a real token. Defaults to `None`.
        query_segment_ids: int tensor or None. `[batch, T]`, non-negative
            segment ids of the queries (sequence packing): a key is visible
            only from queries of its own segment. Given together with
            `key_segment_ids`. Defaults to `None`.
        key_segment_ids: int tensor or None. `[batch, S]`, non-negative
            segment ids of the keys. Defaults to `None`.

    Returns:
        A bool tensor `[1, T, S]`, or `[batch, T, S]` with a padding mask
        or segment ids.

    Examples:

    >>> m = attention_mask(4, 4, causal=True, sliding_window=2)
    >>> ops.convert_to_numpy(m)[0].astype(int).tolist()
    [[1, 0, 0, 0], [1, 1, 0, 0], [0, 1, 1, 0], [0, 0, 1, 1]]
    """
    rule = MaskRule(
        window=window_from_options(causal, sliding_window),
        key_padding_mask=key_padding_mask,
        query_offset=query_offset,
        query_segment_ids=query_segment_ids,
        key_segment_ids=key_segment_ids,
    )
    return rule.dense_mask(query_length, key_length)


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
    query_segment_ids=None,
    key_segment_ids=None,
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
        sliding_window: int, `(left, right)` or None. See the module
            docstring for the causal, two-sided and asymmetric semantics.
            Defaults to `None`.
        key_padding_mask: tensor or None. `[batch, S]`, true on real keys.
            Defaults to `None`.
        query_offset: int or int scalar tensor. Absolute position of the
            first query (the cache index when decoding). Defaults to `0`.
        query_segment_ids: int tensor or None. `[batch, T]`, non-negative
            segment ids of the queries (sequence packing): a key is visible
            only from queries of its own segment. Given together with
            `key_segment_ids`. Defaults to `None`.
        key_segment_ids: int tensor or None. `[batch, S]`, non-negative
            segment ids of the keys. Defaults to `None`.
        probabilities_dropout: callable or None. Applied to the attention
            probabilities (training only). Defaults to `None`.
        impl: str or None. `"xla"` (blockwise `keras.ops`, memory linear
            in length, every backend), `"pallas"` (JAX flash kernel),
            `"flex"` (torch `flex_attention`), `"sdpa"` (torch
            `scaled_dot_product_attention`), `"dense"` (materializes the
            `[T, S]` scores), or `None` for the best that runs here (see
            `resolve_impl`). Defaults to `None`.

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
    _check_options(soft_cap)
    query, key, value = (ops.convert_to_tensor(t) for t in (query, key, value))
    impl = resolve_impl(impl, query, key, probabilities_dropout,
                        soft_cap=soft_cap)
    check_heads(query, key)
    rule = MaskRule(
        window=window_from_options(causal, sliding_window),
        key_padding_mask=key_padding_mask,
        query_offset=query_offset,
        query_segment_ids=query_segment_ids,
        key_segment_ids=key_segment_ids,
    )
    if impl in DENSE_MASK_IMPLS:
        mask = rule.dense_mask(ops.shape(query)[1], ops.shape(key)[1])
        return attend_masked_parts(
            impl, query, [(key, value, mask)], scale=scale,
            soft_cap=soft_cap, probabilities_dropout=probabilities_dropout)
    return attend_parts(impl, query, [(key, value, rule)], scale=scale,
                        soft_cap=soft_cap)


def attend_masked_parts(impl, query, parts, *, scale, soft_cap=None,
                        probabilities_dropout=None):
    """One softmax over `(key, value, bool mask)` parts, by an impl of
    `DENSE_MASK_IMPLS` (`resolve_impl` has checked that it runs)."""
    if impl == "sdpa":
        return attention_sdpa.sdpa_attention_parts(query, parts, scale=scale)
    return dense_attention_parts(
        query, parts, scale=scale, soft_cap=soft_cap,
        probabilities_dropout=probabilities_dropout)


def _check_options(soft_cap):
    # `soft_cap=0` makes every logit 0 (uniform attention). The window is
    # checked where it becomes a `KeyWindow` (`window_from_options`).
    if soft_cap is not None and not soft_cap > 0:
        raise ValueError(
            f"`soft_cap` must be None or > 0. Received: soft_cap={soft_cap!r}."
        )
