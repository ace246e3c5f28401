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
- key padding: key `k` of row `b` is visible when `key_padding_mask[b, k]`.

`q` is the absolute query position, `query_offset + i` for row `i`.

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

`impl=None` (see `resolve_impl`): `"dense"` for small score matrices
(`T * S < BLOCKWISE_MIN_SCORES`, e.g. decode steps and tiny models), with
dropout, or with unknown lengths; else `"pallas"` on a JAX GPU, `"flex"` on
torch CUDA, and `"xla"` everywhere else (CPU, TPU, TensorFlow). On TPU,
`"pallas"` runs when named; `None` keeps `"xla"` until it is measured there.
"""

import keras
from keras import ops

from keras_encdec.ops.mask_rule import window_from_options

ATTENTION_IMPLS = ("xla", "pallas", "flex", "dense")

# Large negative logit for masked keys. Finite, so a fully masked row gives a
# uniform distribution instead of NaN (as transformers' additive mask does).
_MASKED_LOGIT = -1e30

# `impl=None` keeps "dense" below this many scores per head (`T * S`): the
# score matrix is small (< 4 MiB per head in float32) and one fused matmul
# beats a loop over key blocks. Decode steps (`T = 1`) always stay dense.
BLOCKWISE_MIN_SCORES = 1024 * 1024


def _static_lengths(query, key):
    lengths = (query.shape[1], key.shape[1])
    return all(isinstance(n, int) for n in lengths)


def _device_kind(query):
    """`"cpu"`, `"gpu"` or `"tpu"`: where this backend computes `query`."""
    backend = keras.backend.backend()
    if backend == "jax":
        import jax

        return jax.default_backend()
    if backend == "torch":
        device = getattr(query, "device", None)
        kind = getattr(device, "type", "cpu")
        return "gpu" if kind == "cuda" else kind
    if backend == "tensorflow":
        import tensorflow as tf

        return "gpu" if tf.config.list_logical_devices("GPU") else "cpu"
    return "cpu"


def unavailable_reason(impl, query, key, probabilities_dropout=None):
    """Why `impl` cannot run on these inputs here, or `None` if it can.

    Args:
        impl: str. One of `ATTENTION_IMPLS`.
        query: tensor. The query, `[batch, T, num_heads, head_dim]`.
        key: tensor. The key, `[batch, S, num_kv_heads, head_dim]`.
        probabilities_dropout: callable or None. Dropout on probabilities
            (only `"dense"` applies it). Defaults to `None`.

    Returns:
        A string, or `None`.

    Examples:

    >>> import numpy as np
    >>> x = np.zeros((1, 4, 2, 8), "float32")
    >>> unavailable_reason("dense", x, x) is None
    True
    """
    backend = keras.backend.backend()
    device = _device_kind(query)
    if impl == "dense":
        return None
    if probabilities_dropout is not None:
        return (
            f"impl={impl!r} cannot apply `probabilities_dropout` (it never "
            "holds the probabilities); use impl='dense' or dropout_rate=0"
        )
    if not _static_lengths(query, key):
        return (
            f"impl={impl!r} needs static sequence lengths. Received: "
            f"query.shape={tuple(query.shape)}, key.shape={tuple(key.shape)}"
        )
    if impl == "xla":
        return None
    if impl == "pallas":
        if backend != "jax":
            return (
                "impl='pallas' needs the JAX backend on GPU or TPU (or "
                f"Pallas interpret mode); this process runs {backend} on "
                f"{device}"
            )
        from keras_encdec.ops import attention_pallas

        return attention_pallas.unavailable_reason(query, key)
    if impl == "flex":
        if backend != "torch":
            return (
                "impl='flex' needs the torch backend (torch.nn.attention."
                f"flex_attention); this process runs {backend} on {device}"
            )
        from keras_encdec.ops import attention_flex

        return attention_flex.unavailable_reason(query, key)
    raise ValueError(
        f"Unknown attention impl. Received: impl={impl!r}. Expected one "
        f"of {ATTENTION_IMPLS} or None (pick the best available)."
    )


def resolve_impl(impl, query, key, probabilities_dropout=None):
    """The implementation `dot_product_attention` runs for `impl`.

    `None` picks, in order: `"dense"` with dropout, unknown lengths or fewer
    than `BLOCKWISE_MIN_SCORES` scores per head; `"pallas"` on a JAX GPU;
    `"flex"` on a torch CUDA device; `"xla"` otherwise (CPU, TPU,
    TensorFlow). A named impl that cannot run raises `ValueError` with the
    reason; there is no silent fallback.

    Args:
        impl: str or None. Requested implementation.
        query: tensor. The query, `[batch, T, num_heads, head_dim]`.
        key: tensor. The key, `[batch, S, num_kv_heads, head_dim]`.
        probabilities_dropout: callable or None. Defaults to `None`.

    Returns:
        One of `ATTENTION_IMPLS`.

    Examples:

    >>> import numpy as np
    >>> x = np.zeros((1, 4, 2, 8), "float32")
    >>> resolve_impl(None, x, x)
    'dense'
    """
    if impl is not None:
        if impl not in ATTENTION_IMPLS:
            raise ValueError(
                f"Unknown attention impl. Received: impl={impl!r}. Expected "
                f"one of {ATTENTION_IMPLS} or None (pick the best available)."
            )
        reason = unavailable_reason(impl, query, key, probabilities_dropout)
        if reason is not None:
            raise ValueError(reason + ".")
        return impl
    if (
        probabilities_dropout is not None
        or not _static_lengths(query, key)
        or query.shape[1] * key.shape[1] < BLOCKWISE_MIN_SCORES
    ):
        return "dense"
    device = _device_kind(query)
    backend = keras.backend.backend()
    for candidate, needs in (("pallas", "jax"), ("flex", "torch")):
        if backend == needs and device == "gpu":
            if unavailable_reason(candidate, query, key) is None:
                return candidate
    return "xla"


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
        sliding_window: int, `(left, right)` or None. Window (see module
            docstring). Defaults to `None` (full attention).
        key_padding_mask: bool/int tensor or None. `[batch, S]`, true where
            the key is a real token. Defaults to `None`.

    Returns:
        A bool tensor `[1, T, S]`, or `[batch, T, S]` with a padding mask.

    Examples:

    >>> m = attention_mask(4, 4, causal=True, sliding_window=2)
    >>> ops.convert_to_numpy(m)[0].astype(int).tolist()
    [[1, 0, 0, 0], [1, 1, 0, 0], [0, 1, 1, 0], [0, 0, 1, 1]]
    """
    window = window_from_options(causal, sliding_window)
    q = ops.arange(query_length, dtype="int32")[:, None] + ops.cast(
        query_offset, "int32"
    )  # [T, 1]
    k = ops.arange(key_length, dtype="int32")[None, :]  # [1, S]
    mask = window.visible(q, k)
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
        sliding_window: int, `(left, right)` or None. See the module
            docstring for the causal, two-sided and asymmetric semantics.
            Defaults to `None`.
        key_padding_mask: tensor or None. `[batch, S]`, true on real keys.
            Defaults to `None`.
        query_offset: int or int scalar tensor. Absolute position of the
            first query (the cache index when decoding). Defaults to `0`.
        probabilities_dropout: callable or None. Applied to the attention
            probabilities (training only). Defaults to `None`.
        impl: str or None. `"xla"` (blockwise `keras.ops`, memory linear
            in length, every backend), `"pallas"` (JAX flash kernel),
            `"flex"` (torch `flex_attention`), `"dense"` (materializes the
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
    impl = resolve_impl(impl, query, key, probabilities_dropout)
    window_from_options(causal, sliding_window)  # validates early
    if impl != "dense":
        _check_heads(query, key)
        options = dict(
            scale=scale,
            soft_cap=soft_cap,
            causal=causal,
            sliding_window=sliding_window,
            key_padding_mask=key_padding_mask,
            query_offset=query_offset,
        )
        if impl == "xla":
            from keras_encdec.ops.attention_blockwise import (
                blockwise_attention,
            )

            return blockwise_attention(query, key, value, **options)
        if impl == "pallas":
            from keras_encdec.ops.attention_pallas import pallas_attention

            return pallas_attention(query, key, value, **options)
        from keras_encdec.ops.attention_flex import flex_attention

        return flex_attention(query, key, value, **options)
    return _dense_attention(
        query,
        key,
        value,
        scale=scale,
        soft_cap=soft_cap,
        causal=causal,
        sliding_window=sliding_window,
        key_padding_mask=key_padding_mask,
        query_offset=query_offset,
        probabilities_dropout=probabilities_dropout,
    )


def _check_heads(query, key):
    num_heads, num_kv_heads = query.shape[-2], key.shape[-2]
    if num_heads % num_kv_heads:
        raise ValueError(
            "The number of query heads must be a multiple of the number of "
            f"key/value heads. Received: num_heads={num_heads}, "
            f"num_kv_heads={num_kv_heads}."
        )


def dense_attention_parts(query, parts, *, scale, soft_cap=None,
                          probabilities_dropout=None):
    """Reference attention with ONE softmax over several key sets.

    Materializes `[T, S1 + S2 + ...]` scores: the logits of every part are
    concatenated, masked, soft-maxed together and split again.

    Args:
        query: tensor. `[batch, T, num_heads, head_dim]`.
        parts: list of `(key, value, mask)`: key/value `[batch, S_i,
            num_kv_heads, head_dim]`, mask a bool `[batch or 1, T, S_i]`.
        scale: float. Multiplies the query-key logits.
        soft_cap: float or None. `tanh(x / c) * c` on the scaled logits.
            Defaults to `None`.
        probabilities_dropout: callable or None. Defaults to `None`.

    Returns:
        A tensor `[batch, T, num_heads, head_dim]` in `query.dtype`.
    """
    for key, _, _ in parts:
        _check_heads(query, key)
    num_heads, head_dim = query.shape[-2], query.shape[-1]
    num_kv_heads = parts[0][0].shape[-2]
    groups = num_heads // num_kv_heads
    batch, query_length = ops.shape(query)[0], ops.shape(query)[1]
    query = ops.reshape(
        query, (batch, query_length, num_kv_heads, groups, head_dim)
    )
    logits, lengths = [], []
    for key, _, mask in parts:
        part = ops.einsum("btkgh,bskh->bkgts", query, key)
        part = ops.cast(part, "float32") * scale
        if soft_cap is not None:
            part = ops.tanh(part / soft_cap) * soft_cap
        logits.append(ops.where(mask[:, None, None, :, :], part,
                                _MASKED_LOGIT))
        lengths.append(ops.shape(key)[1])
    logits = logits[0] if len(parts) == 1 else ops.concatenate(logits, -1)
    probabilities = ops.softmax(logits, axis=-1)  # [B, K, G, T, sum S_i]
    probabilities = ops.cast(probabilities, parts[0][1].dtype)
    if probabilities_dropout is not None:
        probabilities = probabilities_dropout(probabilities)
    output, start = 0, 0
    for (_, value, _), length in zip(parts, lengths):
        weights = probabilities[..., start:start + length]
        start = start + length
        output = output + ops.einsum("bkgts,bskh->btkgh", weights, value)
    return ops.reshape(output, (batch, query_length, num_heads, head_dim))


def _dense_attention(
    query,
    key,
    value,
    *,
    scale,
    soft_cap,
    causal,
    sliding_window,
    key_padding_mask,
    query_offset,
    probabilities_dropout,
):
    """The reference: materializes the `[T, S]` scores (impl `"dense"`)."""
    mask = attention_mask(
        ops.shape(query)[1],
        ops.shape(key)[1],
        query_offset=query_offset,
        causal=causal,
        sliding_window=sliding_window,
        key_padding_mask=key_padding_mask,
    )  # [batch|1, T, S]
    return dense_attention_parts(
        query, [(key, value, mask)], scale=scale, soft_cap=soft_cap,
        probabilities_dropout=probabilities_dropout)
