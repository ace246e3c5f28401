"""Padding and sequence packing of encoder-decoder examples (numpy).

An example is a dict of 1-D int arrays `encoder_token_ids`,
`decoder_token_ids` and `labels` (`decoder_token_ids` and `labels` have the
same length). Packing places several examples one after another in a row of
each side and marks them with segment ids 1, 2, ... (0 on padding), the
same segment id on the encoder and decoder side of one example, so a model
can keep attention (self and cross) inside a segment: `T5GemmaSeq2SeqLM`
and `T5Gemma2Seq2SeqLM` take the packed `x` as is (`fit`, `evaluate`,
`predict`), and each example gets the loss it gets alone in a row.
"""

import numpy as np


def _check_fits(example, encoder_sequence_length, decoder_sequence_length):
    enc = len(example["encoder_token_ids"])
    dec = len(example["decoder_token_ids"])
    if len(example["labels"]) != dec:
        raise ValueError(
            "`decoder_token_ids` and `labels` must have the same length. "
            f"Received: {dec} and {len(example['labels'])}."
        )
    if enc > encoder_sequence_length or dec > decoder_sequence_length:
        raise ValueError(
            f"An example with {enc} encoder and {dec} decoder tokens does not "
            f"fit encoder_sequence_length={encoder_sequence_length}, "
            f"decoder_sequence_length={decoder_sequence_length}; it would "
            "be truncated."
        )
    return enc, dec


def _row(encoder_sequence_length, decoder_sequence_length, pad_id):
    return dict(
        encoder_token_ids=np.full(encoder_sequence_length, pad_id, "int32"),
        encoder_segment_ids=np.zeros(encoder_sequence_length, "int32"),
        decoder_token_ids=np.full(decoder_sequence_length, pad_id, "int32"),
        decoder_segment_ids=np.zeros(decoder_sequence_length, "int32"),
        labels=np.full(decoder_sequence_length, pad_id, "int32"),
    )


def _finish(row, packed):
    x = {
        "encoder_token_ids": row["encoder_token_ids"],
        "encoder_padding_mask": row["encoder_segment_ids"] > 0,
        "decoder_token_ids": row["decoder_token_ids"],
        "decoder_padding_mask": row["decoder_segment_ids"] > 0,
    }
    if packed:
        x["encoder_segment_ids"] = row["encoder_segment_ids"]
        x["decoder_segment_ids"] = row["decoder_segment_ids"]
    weights = (row["decoder_segment_ids"] > 0).astype("float32")
    return x, row["labels"], weights


def pad_example(example, encoder_sequence_length, decoder_sequence_length,
                pad_id=0):
    """Pads one example to `(x, y, sample_weight)` for `fit`.

    Args:
        example: dict with 1-D int arrays `encoder_token_ids`,
            `decoder_token_ids`, `labels`.
        encoder_sequence_length: int. Encoder row length.
        decoder_sequence_length: int. Decoder row length.
        pad_id: int. Padding id. Defaults to 0.

    Returns:
        `(x, y, sample_weight)`: `x` has `encoder_token_ids`,
        `encoder_padding_mask`, `decoder_token_ids`, `decoder_padding_mask`;
        `y` the padded labels; `sample_weight` float32, 0 on padding.

    Examples:

    >>> x, y, w = pad_example(dict(encoder_token_ids=[5, 1],
    ...     decoder_token_ids=[2, 7], labels=[7, 1]), 4, 3)
    >>> x["encoder_token_ids"].tolist(), y.tolist(), w.tolist()
    ([5, 1, 0, 0], [7, 1, 0], [1.0, 1.0, 0.0])
    """
    enc, dec = _check_fits(
        example, encoder_sequence_length, decoder_sequence_length
    )
    row = _row(encoder_sequence_length, decoder_sequence_length, pad_id)
    _place(row, example, 0, 0, enc, dec, 1)
    return _finish(row, packed=False)


def _place(row, example, enc_at, dec_at, enc, dec, segment):
    row["encoder_token_ids"][enc_at:enc_at + enc] = example["encoder_token_ids"]
    row["encoder_segment_ids"][enc_at:enc_at + enc] = segment
    row["decoder_token_ids"][dec_at:dec_at + dec] = example["decoder_token_ids"]
    row["decoder_segment_ids"][dec_at:dec_at + dec] = segment
    row["labels"][dec_at:dec_at + dec] = example["labels"]


def pack_examples(examples, encoder_sequence_length, decoder_sequence_length,
                  pad_id=0):
    """Packs examples into rows with segment ids (streaming, in order).

    Examples are appended to the current row while both sides fit; then the
    row is yielded and a new one starts (next-fit, order kept). Every token
    of every example is placed exactly once.

    Args:
        examples: iterable of dicts with 1-D int arrays
            `encoder_token_ids`, `decoder_token_ids`, `labels`.
        encoder_sequence_length: int. Encoder row length.
        decoder_sequence_length: int. Decoder row length.
        pad_id: int. Padding id. Defaults to 0.

    Yields:
        `(x, y, sample_weight)` like `pad_example`, where `x` also has
        `encoder_segment_ids` and `decoder_segment_ids` (int32, 1.. per
        example, 0 on padding).

    Examples:

    >>> rows = list(pack_examples([
    ...     dict(encoder_token_ids=[5, 1], decoder_token_ids=[2, 7],
    ...          labels=[7, 1]),
    ...     dict(encoder_token_ids=[6, 1], decoder_token_ids=[2],
    ...          labels=[1]),
    ... ], 4, 4))
    >>> len(rows), rows[0][0]["decoder_segment_ids"].tolist()
    (1, [1, 1, 2, 0])
    """
    row, enc_at, dec_at, segment = None, 0, 0, 0
    for example in examples:
        enc, dec = _check_fits(
            example, encoder_sequence_length, decoder_sequence_length
        )
        if row is not None and (
            enc_at + enc > encoder_sequence_length
            or dec_at + dec > decoder_sequence_length
        ):
            yield _finish(row, packed=True)
            row = None
        if row is None:
            row = _row(encoder_sequence_length, decoder_sequence_length, pad_id)
            enc_at, dec_at, segment = 0, 0, 0
        segment += 1
        _place(row, example, enc_at, dec_at, enc, dec, segment)
        enc_at, dec_at = enc_at + enc, dec_at + dec
    if row is not None:
        yield _finish(row, packed=True)
