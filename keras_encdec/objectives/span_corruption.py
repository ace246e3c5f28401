"""T5 span corruption on token ids (numpy), and the Gemma sentinel ids.

The noise mask follows T5's `random_spans_noise_mask`
(`t5/data/preprocessors.py`): the number of noise tokens is
`round(length * noise_density)` clipped to `[1, length - 1]`, the number of
noise spans `max(1, round(noise_tokens / mean_noise_span_length))`; noise and
non-noise tokens are each split into that many non-empty spans by a random
segmentation, and the spans are interleaved starting with non-noise. A
length-1 sequence is masked as if it had length 2 and truncated (as in T5).
The randomness comes from `numpy.random.default_rng(seed)`, so one seed
always gives the same output.
"""

import numpy as np

# Gemma 2 (and Gemma 1) tokenizer, vocabulary 256000: `<unused0>` ..
# `<unused98>` are ids 7 .. 105 (google/gemma_pytorch tokenizer notes).
GEMMA2_UNUSED_IDS = tuple(range(7, 106))
# Gemma 3 tokenizer, vocabulary 262144: `<unused0>` .. `<unused98>` are ids
# 6 .. 104 and `<unused99>` .. `<unused6241>` are ids 256001 .. 262143 (read
# from the Gemma 3 270M GGUF vocabulary).
GEMMA3_UNUSED_IDS = tuple(range(6, 105)) + tuple(range(256001, 262144))
GEMMA_UNUSED_IDS = {"gemma2": GEMMA2_UNUSED_IDS, "gemma3": GEMMA3_UNUSED_IDS}


def noise_counts(length, noise_density, mean_noise_span_length):
    """Returns `(num_noise_tokens, num_noise_spans)` for a length (T5's).

    Args:
        length: int. Sequence length, >= 1.
        noise_density: float. Fraction of tokens to corrupt.
        mean_noise_span_length: float. Average noise span length.

    Returns:
        Tuple of two ints, for `max(length, 2)` tokens.
    """
    length = max(int(length), 2)
    noise = int(np.round(length * noise_density))
    noise = min(max(noise, 1), length - 1)
    spans = max(int(np.round(noise / mean_noise_span_length)), 1)
    return noise, spans


def _random_segmentation(num_items, num_segments, rng):
    """Lengths of a random partition of `num_items` into non-empty parts."""
    first_in_segment = np.zeros(num_items, "int64")
    first_in_segment[1:] = rng.permutation(
        np.arange(num_items - 1) < num_segments - 1
    )
    return np.bincount(np.cumsum(first_in_segment), minlength=num_segments)


def random_spans_noise_mask(
    length, noise_density, mean_noise_span_length, seed
):
    """T5's noise mask: True at the tokens to corrupt.

    Args:
        length: int. Number of tokens, >= 1.
        noise_density: float in (0, 1). Fraction of tokens to corrupt.
        mean_noise_span_length: float >= 1. Average noise span length.
        seed: int, sequence of ints or `numpy.random.Generator`.

    Returns:
        Bool numpy array `[length]`.

    Examples:

    >>> mask = random_spans_noise_mask(20, 0.15, 3.0, seed=0)
    >>> int(mask.sum()), bool(mask[0])
    (3, False)
    """
    _check_noise(noise_density, mean_noise_span_length)
    rng = np.random.default_rng(seed)
    orig_length = int(length)
    if orig_length < 1:
        raise ValueError(f"`length` must be >= 1. Received: length={length}.")
    length = max(orig_length, 2)
    noise, spans = noise_counts(length, noise_density, mean_noise_span_length)
    noise_lengths = _random_segmentation(noise, spans, rng)
    keep_lengths = _random_segmentation(length - noise, spans, rng)
    interleaved = np.stack([keep_lengths, noise_lengths], axis=1).reshape(-1)
    span_index = np.repeat(np.arange(2 * spans), interleaved)
    return (span_index % 2 == 1)[:orig_length]


def _check_noise(noise_density, mean_noise_span_length):
    if not 0.0 < noise_density < 1.0:
        raise ValueError(
            "`noise_density` must be in (0, 1). Received: "
            f"noise_density={noise_density!r}."
        )
    if not mean_noise_span_length >= 1.0:
        raise ValueError(
            "`mean_noise_span_length` must be >= 1. Received: "
            f"mean_noise_span_length={mean_noise_span_length!r}."
        )


def span_corruption(
    token_ids, *, noise_density, mean_noise_span_length, sentinel_ids, seed
):
    """T5 span corruption: returns `(inputs, targets)` token ids.

    Each noise span of `token_ids` is replaced in `inputs` by the next
    sentinel id (`sentinel_ids[0]`, `sentinel_ids[1]`, ...); `targets` holds
    each sentinel followed by the tokens it replaced. No `<eos>` is added.
    `span_corruption_inverse(inputs, targets, sentinel_ids)` rebuilds
    `token_ids` exactly.

    Args:
        token_ids: 1-D int sequence. At least one token; must not contain a
            sentinel id (the result would be ambiguous).
        noise_density: float in (0, 1). Fraction of tokens to corrupt.
        mean_noise_span_length: float >= 1. Average noise span length.
        sentinel_ids: sequence of int. Distinct ids, at least as many as
            noise spans (`noise_counts(...)[1]`), e.g. `GEMMA3_UNUSED_IDS`.
        seed: int, sequence of ints or `numpy.random.Generator`.

    Returns:
        `(inputs, targets)`, 1-D int32 numpy arrays.

    Examples:

    >>> tokens = list(range(100, 120))
    >>> inputs, targets = span_corruption(
    ...     tokens, noise_density=0.15, mean_noise_span_length=3.0,
    ...     sentinel_ids=[7, 8, 9], seed=0)
    >>> len(inputs) + len(targets) == len(tokens) + 2 * 1
    True
    >>> span_corruption_inverse(inputs, targets, [7, 8, 9]).tolist() == tokens
    True
    """
    tokens = np.asarray(token_ids)
    if tokens.ndim != 1 or tokens.size == 0:
        raise ValueError(
            "`token_ids` must be a non-empty 1-D sequence. Received: "
            f"shape={tokens.shape}."
        )
    if not np.issubdtype(tokens.dtype, np.integer):
        raise TypeError(
            f"`token_ids` must be integers. Received: dtype={tokens.dtype}."
        )
    sentinels = np.asarray(sentinel_ids, "int64").reshape(-1)
    if len(np.unique(sentinels)) != len(sentinels):
        raise ValueError("`sentinel_ids` must be distinct.")
    clash = np.isin(tokens, sentinels)
    if clash.any():
        raise ValueError(
            "`token_ids` contains sentinel id "
            f"{int(tokens[clash][0])}; span corruption could not be undone. "
            "Choose sentinels that never occur in the data."
        )
    mask = random_spans_noise_mask(
        len(tokens), noise_density, mean_noise_span_length, seed
    )
    starts = mask & ~np.concatenate([[False], mask[:-1]])
    num_spans = int(starts.sum())
    if num_spans > len(sentinels):
        raise ValueError(
            f"{num_spans} noise spans need as many sentinel ids. Received "
            f"{len(sentinels)} `sentinel_ids`. Pass more (e.g. "
            "GEMMA3_UNUSED_IDS) or use shorter sequences."
        )
    span_of = np.cumsum(starts) - 1  # span index at noise tokens
    inputs = np.where(starts, sentinels[np.maximum(span_of, 0)], tokens)
    inputs = inputs[~mask | starts]
    # Targets: sentinel k, then span k's tokens.
    noise_positions = np.flatnonzero(mask)
    keys = np.concatenate([2 * noise_positions + 1, 2 * np.flatnonzero(starts)])
    values = np.concatenate(
        [tokens[noise_positions], sentinels[:num_spans]]
    )
    targets = values[np.argsort(keys, kind="stable")]
    return inputs.astype("int32"), targets.astype("int32")


def span_corruption_inverse(inputs, targets, sentinel_ids):
    """Rebuilds the original token ids from `span_corruption`'s output.

    Args:
        inputs: 1-D int sequence. Corrupted inputs.
        targets: 1-D int sequence. Sentinels and the tokens they replaced.
        sentinel_ids: sequence of int. The sentinels used.

    Returns:
        1-D int32 numpy array.

    Examples:

    >>> span_corruption_inverse([5, 7, 9], [7, 6], [7]).tolist()
    [5, 6, 9]
    """
    inputs, targets = np.asarray(inputs), np.asarray(targets)
    sentinels = set(int(s) for s in np.asarray(sentinel_ids).reshape(-1))
    spans, current = {}, None
    for token in targets.tolist():
        if token in sentinels:
            current = spans.setdefault(token, [])
        elif current is None:
            raise ValueError("`targets` must start with a sentinel id.")
        else:
            current.append(token)
    out = []
    for token in inputs.tolist():
        if token in sentinels:
            if token not in spans:
                raise ValueError(f"Sentinel {token} is missing in `targets`.")
            out.extend(spans.pop(token))
        else:
            out.append(token)
    if spans:
        raise ValueError(f"Sentinels {sorted(spans)} are not in `inputs`.")
    return np.asarray(out, "int32")
