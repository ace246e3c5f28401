"""Portable chunked ("cut") linear cross-entropy, written once in keras.ops.

The loss never holds the `[tokens, vocab]` logits. It walks the vocabulary in
column chunks of the output embedding:

- forward: per chunk, logits `[N, chunk]` in fp32, soft-cap, a chunk
  log-sum-exp and the target logit (one-hot compare, no gather/scatter). The
  per-chunk values `[num_chunks, N]` are reduced at the end. Only the fp32
  `LSE[N]` is kept for the backward.
- backward (custom gradient): recompute each chunk's logits,
  `d = softmax - onehot`, optional gradient filtering, soft-cap derivative
  `1 - tanh(x / c)^2` (the recomputed `tanh`), cast `d` to the matmul dtype,
  then `dE += d @ C_chunk` (fp32 accumulator `[N, D]`) and emit
  `dC_chunk = d^T @ E` as a scan output (no `[V, D]` fp32 accumulator).

Why chunk over the vocabulary rather than over tokens: the vocabulary size
is static in every graph mode, while the token count is the dynamic batch
dimension under `tf.function` / dynamic shapes. Vocabulary chunks need no
padding or reshaping of a dynamic dimension, and each `dC` block is written
exactly once. Memory beyond inputs and outputs: forward `O(N * chunk)`
(plus `O(N * V / chunk)` for the chunk LSEs), backward
`O(N * D + N * chunk)`.

When `V` is not a multiple of the chunk, the last chunk is shifted left to
end at `V`, and the columns it shares with the previous chunk are masked, so
no padded copy of the embedding is made.
"""

import math

import keras
from keras import ops

from keras_encdec.losses.dense import soft_cap

DEFAULT_VOCAB_CHUNK = 512  # tuned: tools/benchmark_loss.py, BENCHMARKS.md


def scan(f, init, xs, y_dtypes):
    """`jax.lax.scan` semantics where `ys` may differ from the carry.

    `keras.ops.scan` on tensorflow requires every `y` to have the carry's
    shape, so that backend gets a TensorArray loop here; jax and torch use
    `keras.ops.scan` directly. `f(carry, xs_i)` returns `(carry, ys_i)` with
    `ys_i` a tuple whose dtypes are `y_dtypes`.
    """
    if keras.backend.backend() != "tensorflow":
        return ops.scan(f, init, xs=xs)
    import tensorflow as tf

    xs = tuple(tf.convert_to_tensor(x) for x in xs)
    length = xs[0].shape[0]  # static here: the number of vocab chunks
    arrays = [tf.TensorArray(dtype, size=length) for dtype in y_dtypes]

    def body(i, carry, arrays):
        carry, y = f(carry, tuple(x[i] for x in xs))
        arrays = [a.write(i, v) for a, v in zip(arrays, y)]
        return i + 1, carry, arrays

    _, carry, arrays = tf.while_loop(
        lambda i, *_: i < length, body, (tf.constant(0), init, arrays)
    )
    return carry, tuple(a.stack() for a in arrays)


def resolve_vocab_chunk(vocab_size, chunk_size=None):
    """Chooses the number of vocabulary columns per chunk.

    Args:
        vocab_size: int. V.
        chunk_size: int or None. Requested columns per chunk. Defaults to
            None, meaning `DEFAULT_VOCAB_CHUNK`.

    Returns:
        int in `[1, vocab_size]`. Without an explicit request, a divisor of
        `vocab_size` within `[chunk / 2, chunk]` is preferred, which avoids
        the overlapping last chunk.
    """
    if chunk_size is not None:
        return max(1, min(int(chunk_size), vocab_size))
    target = min(DEFAULT_VOCAB_CHUNK, vocab_size)
    for candidate in range(target, max(target // 2, 1) - 1, -1):
        if vocab_size % candidate == 0:
            return candidate
    return target


def vocab_chunk_plan(vocab_size, chunk_size=None):
    """Returns `(chunk, starts [K], first_new [K])` for a vocabulary walk.

    Chunk k covers columns `[starts[k], starts[k] + chunk)`; only columns
    `>= first_new[k]` are new (the last chunk may overlap its predecessor
    when `chunk` does not divide `vocab_size`).
    """
    chunk = resolve_vocab_chunk(vocab_size, chunk_size)
    num_chunks = math.ceil(vocab_size / chunk)
    first_new = ops.arange(num_chunks, dtype="int32") * chunk  # [K]
    starts = ops.minimum(first_new, vocab_size - chunk)  # [K]
    return chunk, starts, first_new


def chunk_matmul(hidden, embedding, start, chunk, logit_soft_cap=None):
    """Returns `(w [C, D], raw fp32 [N, C], soft_cap(raw) [N, C])` for the
    embedding rows `[start, start + chunk)`."""
    w = ops.slice(embedding, [start, 0], [chunk, embedding.shape[1]])
    raw = ops.cast(ops.matmul(hidden, ops.transpose(w)), "float32")
    return w, raw, soft_cap(raw, logit_soft_cap)


def join_vocab_blocks(blocks, vocab_size):
    """Joins scan-emitted `[K, C, D]` gradient blocks into `[V, D]`,
    dropping the columns the last (overlapping) chunk repeats."""
    num_chunks, chunk, dim = blocks.shape
    overlap = num_chunks * chunk - vocab_size
    if not overlap:
        return ops.reshape(blocks, (vocab_size, dim))
    return ops.concatenate(
        [ops.reshape(blocks[:-1], (-1, dim)), blocks[-1, overlap:]], axis=0
    )


def chunked_token_losses(
    hidden,
    embedding,
    labels,
    valid,
    logit_soft_cap=None,
    chunk_size=None,
    filter_eps=None,
):
    """Per-token cross-entropy without materializing the logits.

    Args:
        hidden: tensor. `[N, D]` hidden states, float (N may be dynamic).
        embedding: tensor. `[V, D]` output embedding, same dtype as hidden.
        labels: tensor. `[N]` int32 target ids.
        valid: tensor. `[N]` bool, False where the label is ignored.
        logit_soft_cap: float or None. Soft-cap value. Defaults to None.
        chunk_size: int or None. Vocabulary columns per chunk. Defaults to
            None (see `resolve_vocab_chunk`).
        filter_eps: float or None. Zero gradient entries with
            `|softmax - onehot| < filter_eps`. Defaults to None (exact).

    Returns:
        `[N]` float32 losses, 0 where `valid` is False.
    """
    vocab_size, dim = embedding.shape
    chunk, starts, first_new = vocab_chunk_plan(vocab_size, chunk_size)
    num_chunks = math.ceil(vocab_size / chunk)
    has_overlap = num_chunks * chunk != vocab_size
    labels = ops.where(valid, ops.cast(labels, "int32"), -1)  # [N]

    def chunk_logits(hidden_, embedding_, start, first):
        """Returns (w [C, D], capped fp32 [N, C], tanh [N, C] or None,
        cols [C]); `capped = c * tanh` as `soft_cap` computes it."""
        w, raw, _ = chunk_matmul(hidden_, embedding_, start, chunk)
        tanh, capped = None, raw
        if logit_soft_cap is not None:
            tanh = ops.tanh(raw / logit_soft_cap)
            capped = tanh * logit_soft_cap
        cols = start + ops.arange(chunk, dtype="int32")  # [C]
        if has_overlap:
            # -2 never equals a label (ignored labels are -1).
            cols = ops.where(cols >= first, cols, -2)
        return w, capped, tanh, cols

    @ops.custom_gradient
    def token_losses(hidden_, embedding_, labels_):
        def forward_chunk(carry, xs):
            start, first = xs
            _, z, _, cols = chunk_logits(hidden_, embedding_, start, first)
            onehot = ops.equal(labels_[:, None], cols[None, :])  # [N, C]
            target = ops.sum(ops.where(onehot, z, 0.0), axis=-1)  # [N]
            if has_overlap:
                z = ops.where(cols[None, :] >= 0, z, float("-inf"))
            return carry, (ops.logsumexp(z, axis=-1), target)

        _, (chunk_lse, chunk_target) = scan(
            forward_chunk,
            ops.zeros((), "float32"),
            xs=(starts, first_new),
            y_dtypes=("float32", "float32"),
        )  # [K, N] each
        lse = ops.logsumexp(chunk_lse, axis=0)  # [N] fp32
        target = ops.sum(chunk_target, axis=0)  # [N]
        is_valid = ops.greater_equal(labels_, 0)
        losses = ops.where(is_valid, lse - target, 0.0)

        def grad(*args, upstream=None):
            if upstream is None:
                (upstream,) = args
            scale = ops.where(is_valid, ops.cast(upstream, "float32"), 0.0)

            def backward_chunk(d_hidden, xs):
                start, first = xs
                w, z, tanh, cols = chunk_logits(
                    hidden_, embedding_, start, first
                )
                onehot = ops.equal(labels_[:, None], cols[None, :])
                probs = ops.exp(z - lse[:, None])  # [N, C]
                if has_overlap:
                    probs = ops.where(cols[None, :] >= 0, probs, 0.0)
                d = probs - ops.cast(onehot, "float32")
                if filter_eps is not None:
                    d = ops.where(ops.abs(d) < filter_eps, 0.0, d)
                d = d * scale[:, None]
                if logit_soft_cap is not None:
                    d = d * (1.0 - ops.square(tanh))
                d = ops.cast(d, hidden_.dtype)  # matmul dtype
                d_hidden = d_hidden + ops.cast(ops.matmul(d, w), "float32")
                d_w = ops.matmul(ops.transpose(d), hidden_)  # [C, D]
                return d_hidden, (d_w,)

            d_hidden, (d_blocks,) = scan(
                backward_chunk,
                ops.zeros_like(hidden_, dtype="float32"),
                xs=(starts, first_new),
                y_dtypes=(hidden_.dtype,),
            )  # [N, D] fp32, ([K, C, D],)
            d_embedding = join_vocab_blocks(d_blocks, vocab_size)
            return (
                ops.cast(d_hidden, hidden_.dtype),
                ops.cast(d_embedding, embedding_.dtype),
                None,
            )

        return losses, grad

    return token_losses(hidden, embedding, labels)
