"""PrefixLM and the UL2 mixture of denoisers."""

import dataclasses
import functools

import numpy as np

from keras_encdec.objectives.base import Objective
from keras_encdec.objectives.span_corruption import GEMMA_UNUSED_IDS
from keras_encdec.objectives.span_corruption import noise_counts
from keras_encdec.objectives.span_corruption import span_corruption


def gemma_special_ids(vocabulary="gemma3"):
    """Mode and sentinel ids taken from a Gemma vocabulary's unused tokens.

    Mode tokens are `<unused0>` (R), `<unused1>` (S), `<unused2>` (X); the
    sentinels are the remaining unused tokens in order (`<unused3>`, ...).
    Gemma 2 (T5Gemma): `<unusedN>` is id `7 + N` for N in 0..98, so modes
    7, 8, 9 and 96 sentinels 10..105. Gemma 3 (T5Gemma 2): `<unusedN>` is
    id `6 + N` for N in 0..98 and `256001 + (N - 99)` for N in 99..6241, so
    modes 6, 7, 8 and 6239 sentinels.

    Args:
        vocabulary: str. `"gemma2"` or `"gemma3"`. Defaults to `"gemma3"`.

    Returns:
        `(mode_ids, sentinel_ids)`: a dict `{"R", "S", "X"} -> int` and a
        tuple of ints.

    Examples:

    >>> modes, sentinels = gemma_special_ids("gemma2")
    >>> modes, sentinels[0], len(sentinels)
    ({'R': 7, 'S': 8, 'X': 9}, 10, 96)
    """
    if vocabulary not in GEMMA_UNUSED_IDS:
        raise ValueError(
            f"Unknown `vocabulary`. Received: {vocabulary!r}. Expected one "
            f"of {sorted(GEMMA_UNUSED_IDS)}."
        )
    unused = GEMMA_UNUSED_IDS[vocabulary]
    return dict(zip("RSX", unused[:3])), tuple(unused[3:])


def _prefix_example(obj, tokens, rng, split, mode_id, kind):
    """A PrefixLM chunk: encoder gets `split` (or a random number of)
    tokens, the targets the next `target_capacity`."""
    capacity = obj.encoder_capacity(mode_id)
    prefix = int(rng.integers(1, capacity + 1)) if split is None else split
    chunk = tokens[: prefix + obj.target_capacity]
    if len(chunk) < prefix + 1:  # document tail: keep >= 1 target if any
        prefix = max(len(chunk) - 1, 1) if len(chunk) > 1 else len(chunk)
    head = [] if mode_id is None else [mode_id]
    encoder = np.concatenate([head, chunk[:prefix], [obj.eos_id]])
    example = dict(
        encoder_token_ids=encoder.astype("int32"),
        prefix=chunk[:prefix],
        targets=chunk[prefix:],
        kind=kind,
    )
    return example, len(chunk)


class PrefixLM(Objective):
    """PrefixLM: the encoder reads a prefix, the decoder predicts the rest.

    Each document is cut into consecutive chunks; a chunk's first `split`
    tokens (or a uniformly random 1..encoder capacity when `split` is None)
    go to the encoder, the next up to `decoder_sequence_length - 1` tokens
    are the targets. At a document's end the last chunk is shorter and keeps
    at least one target token when it has two or more tokens.

    Args:
        encoder_sequence_length: int. Padded encoder length.
        decoder_sequence_length: int. Padded decoder length.
        split: int or None. Prefix length; at most
            `encoder_sequence_length - 1` (`<eos>` is appended). Defaults to
            None (random per chunk).
        teacher_inputs: bool. Also give each `x` the decoder-only teacher's
            input for `PrefixLMDistillation`: `teacher_token_ids` =
            `<bos> prefix targets` and `teacher_padding_mask`, of length
            `encoder_sequence_length + decoder_sequence_length - 1`, with
            `<bos> prefix` left-padded to the first
            `encoder_sequence_length` columns and the targets (right-padded)
            in the last `decoder_sequence_length - 1`, so the teacher
            position predicting decoder label `j` is always
            `encoder_sequence_length - 1 + j`. Not with `packed=True`.
            Defaults to False.
        **kwargs: `tokenizer`, `bos_id`, `eos_id`, `pad_id`, `seed` (see
            `Objective`).

    Examples:

    >>> objective = PrefixLM(8, 6, split=3)
    >>> x, y, w = next(objective([list(range(10, 20))]))
    >>> x["encoder_token_ids"].tolist(), y.tolist()
    ([10, 11, 12, 1, 0, 0, 0, 0], [13, 14, 15, 16, 17, 1])
    >>> x["decoder_token_ids"].tolist()
    [2, 13, 14, 15, 16, 17]
    >>> with_teacher = PrefixLM(5, 4, split=2, teacher_inputs=True)
    >>> x, y, w = next(with_teacher([list(range(10, 14))]))
    >>> x["teacher_token_ids"].tolist(), y.tolist()
    ([0, 0, 2, 10, 11, 12, 13, 0], [12, 13, 1, 0])
    >>> x["teacher_padding_mask"].tolist()
    [False, False, True, True, True, True, True, False]
    """

    def __init__(self, encoder_sequence_length, decoder_sequence_length,
                 split=None, teacher_inputs=False, **kwargs):
        super().__init__(encoder_sequence_length, decoder_sequence_length,
                         **kwargs)
        if split is not None and not (
            isinstance(split, (int, np.integer))
            and 1 <= split <= self.encoder_capacity()
        ):
            raise ValueError(
                "`split` must be None or an int in [1, "
                f"{self.encoder_capacity()}] (encoder length minus <eos>). "
                f"Received: split={split!r}."
            )
        self.split = split
        self.teacher_inputs = bool(teacher_inputs)
        # <bos> + prefix (<= encoder capacity) + targets.
        self.teacher_sequence_length = (
            self.encoder_sequence_length + self.decoder_sequence_length - 1
        )

    def _next_example(self, tokens, rng):
        return _prefix_example(self, tokens, rng, self.split, None, "prefix")

    def __call__(self, documents, batch_size=None, packed=False):
        if packed and self.teacher_inputs:
            raise ValueError(
                "`teacher_inputs=True` needs one example per row: the "
                "teacher's positions are aligned per row. Received: "
                "packed=True. Use packed=False."
            )
        yield from super().__call__(documents, batch_size, packed)

    def teacher_row(self, example):
        """`(teacher_token_ids, teacher_padding_mask)` of one example
        (see `teacher_inputs`)."""
        width = self.encoder_sequence_length
        head = np.concatenate([[self.bos_id], example["prefix"]])
        targets = example["targets"]
        ids = np.full(self.teacher_sequence_length, self.pad_id, "int32")
        ids[width - len(head):width] = head
        ids[width:width + len(targets)] = targets
        mask = np.zeros(self.teacher_sequence_length, bool)
        mask[width - len(head):width + len(targets)] = True
        return ids, mask

    def _pad(self, example, encoder_sequence_length, decoder_sequence_length):
        x, y, w = super()._pad(
            example, encoder_sequence_length, decoder_sequence_length
        )
        if self.teacher_inputs:
            x["teacher_token_ids"], x["teacher_padding_mask"] = (
                self.teacher_row(example)
            )
        return x, y, w

    def _extra_x_spec(self):
        if not self.teacher_inputs:
            return {}
        import tensorflow as tf

        shape = (None, self.teacher_sequence_length)
        return {
            "teacher_token_ids": tf.TensorSpec(shape, tf.int32),
            "teacher_padding_mask": tf.TensorSpec(shape, tf.bool),
        }


@dataclasses.dataclass(frozen=True)
class Denoiser:
    """One UL2 denoiser.

    Args:
        kind: str. `"R"` (regular spans), `"X"` (extreme spans or rates) or
            `"S"` (sequential: PrefixLM with a random split).
        noise_density: float or None. Corruption rate (R/X only).
        mean_noise_span_length: float or None. Mean span length (R/X only).
        rate: float. Relative sampling weight. Defaults to 1.0.
    """

    kind: str
    noise_density: float = None
    mean_noise_span_length: float = None
    rate: float = 1.0


# UL2 (Tay et al. 2022, "UL2: Unifying Language Learning Paradigms"):
# R = {(mu 3, r 0.15), (mu 8, r 0.15)}, X = {(3, 0.5), (8, 0.5), (64, 0.15),
# (64, 0.5)}, S = prefix LM. Rates here: S 0.2, the six others 0.8 / 6.
UL2_DENOISERS = (
    Denoiser("R", 0.15, 3.0, 0.8 / 6),
    Denoiser("R", 0.15, 8.0, 0.8 / 6),
    Denoiser("X", 0.5, 3.0, 0.8 / 6),
    Denoiser("X", 0.5, 8.0, 0.8 / 6),
    Denoiser("X", 0.15, 64.0, 0.8 / 6),
    Denoiser("X", 0.5, 64.0, 0.8 / 6),
    Denoiser("S", rate=0.2),
)


class UL2(Objective):
    """UL2 mixture of denoisers with mode tokens.

    Per example, a denoiser is drawn with probability proportional to its
    `rate`. R and X denoisers apply T5 span corruption
    (`span_corruption`) to the longest chunk whose corrupted input and
    targets fit the lengths; S is PrefixLM with a random split. The
    encoder input starts with the denoiser's mode token and ends in
    `<eos>`. Default ids come from the unused tokens of the Gemma
    vocabulary (`gemma_special_ids`): Gemma 3 (T5Gemma 2) modes
    `<unused0..2>` = ids 6, 7, 8, sentinels `<unused3>` onwards.

    Args:
        encoder_sequence_length: int. Padded encoder length.
        decoder_sequence_length: int. Padded decoder length.
        denoisers: sequence of `Denoiser`. Defaults to `UL2_DENOISERS`.
        mode_ids: dict or None. `{"R": id, "S": id, "X": id}`. Defaults to
            None (from `vocabulary`).
        sentinel_ids: sequence of int or None. Defaults to None (from
            `vocabulary`).
        vocabulary: str. `"gemma3"` or `"gemma2"`, for the default ids.
            Defaults to `"gemma3"`.
        **kwargs: `tokenizer`, `bos_id`, `eos_id`, `pad_id`, `seed` (see
            `Objective`).

    Examples:

    >>> ul2 = UL2(64, 64, seed=1)
    >>> x, y, w = next(ul2([list(range(1000, 1300))]))
    >>> int(x["encoder_token_ids"][0]) in (6, 7, 8)
    True
    """

    def __init__(self, encoder_sequence_length, decoder_sequence_length,
                 denoisers=UL2_DENOISERS, mode_ids=None, sentinel_ids=None,
                 vocabulary="gemma3", **kwargs):
        super().__init__(encoder_sequence_length, decoder_sequence_length,
                         **kwargs)
        default_modes, default_sentinels = gemma_special_ids(vocabulary)
        self.mode_ids = dict(default_modes if mode_ids is None else mode_ids)
        self.sentinel_ids = tuple(
            default_sentinels if sentinel_ids is None else sentinel_ids
        )
        self.denoisers = tuple(denoisers)
        if not self.denoisers:
            raise ValueError("`denoisers` must not be empty.")
        for d in self.denoisers:
            if d.kind not in ("R", "S", "X") or d.kind not in self.mode_ids:
                raise ValueError(
                    f"Unknown or unmapped denoiser kind {d.kind!r}; expected "
                    f"'R', 'S' or 'X' with a mode id in {self.mode_ids}."
                )
            if not d.rate > 0:
                raise ValueError(f"Denoiser rates must be > 0. Received {d}.")
            if d.kind != "S":
                length = self._chunk_length(d)
                spans = noise_counts(length, d.noise_density,
                                     d.mean_noise_span_length)[1]
                if spans > len(self.sentinel_ids):
                    raise ValueError(
                        f"{d} makes up to {spans} spans per example but only "
                        f"{len(self.sentinel_ids)} sentinel ids are given "
                        "(Gemma 2 has 96 unused ids; use shorter sequences "
                        "or vocabulary='gemma3')."
                    )
        rates = np.array([d.rate for d in self.denoisers], "float64")
        self._probabilities = rates / rates.sum()

    @functools.lru_cache(maxsize=None)
    def _chunk_length(self, denoiser):
        """Longest raw chunk whose corrupted input and targets fit."""
        capacity = self.encoder_capacity(self.mode_ids[denoiser.kind])
        best = 0
        for length in range(1, capacity + self.target_capacity + 1):
            noise, spans = noise_counts(
                length, denoiser.noise_density, denoiser.mean_noise_span_length
            )
            noise = min(noise, length)  # a length-1 chunk has no noise
            if (length - noise + spans > capacity
                    or noise + spans > self.target_capacity):
                break  # both sizes grow with the length
            best = length
        if best < 1:
            raise ValueError(
                f"{denoiser} cannot fit even one token in "
                f"encoder_sequence_length={self.encoder_sequence_length}, "
                f"decoder_sequence_length={self.decoder_sequence_length}."
            )
        return best

    def _next_example(self, tokens, rng):
        index = int(rng.choice(len(self.denoisers), p=self._probabilities))
        denoiser = self.denoisers[index]
        mode = self.mode_ids[denoiser.kind]
        if denoiser.kind == "S":
            return _prefix_example(self, tokens, rng, None, mode, "S")
        chunk = tokens[: self._chunk_length(denoiser)]
        inputs, targets = span_corruption(
            chunk,
            noise_density=denoiser.noise_density,
            mean_noise_span_length=denoiser.mean_noise_span_length,
            sentinel_ids=self.sentinel_ids,
            seed=rng,
        )
        encoder = np.concatenate([[mode], inputs, [self.eos_id]])
        example = dict(
            encoder_token_ids=encoder.astype("int32"),
            targets=targets,
            kind=denoiser.kind,
            denoiser=index,
        )
        return example, len(chunk)
