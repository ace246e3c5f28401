"""Shared machinery of the pretraining objectives: documents in, `fit` out.

An objective walks each document (raw text through a tokenizer, or token
ids) from its first token to its last, cutting consecutive chunks sized so
that the encoder input and the targets always fit the configured lengths.
Every token of every document lands in exactly one example (in the encoder
input or in the targets): nothing is truncated, repeated or dropped. Each
example becomes the dict `T5GemmaSeq2SeqLM.fit` takes, with the
preprocessor's conventions: the encoder input ends in `<eos>`, the decoder
input is `<bos>` + targets, the labels are targets + `<eos>`, and the sample
weights are 1 on the labels and 0 on padding.
"""

import numpy as np

from keras_encdec.objectives.packing import pad_example
from keras_encdec.objectives.packing import pack_examples


class Objective:
    """Base class. Subclasses implement `_next_example(tokens, rng)`.

    Args:
        encoder_sequence_length: int. Padded encoder length.
        decoder_sequence_length: int. Padded decoder length.
        tokenizer: callable or None. Maps a string to token ids (e.g. a
            `T5GemmaTokenizer`); needed for raw-text documents. Its
            `start_token_id`, `end_token_id` and `pad_token_id` are used
            when present. Defaults to None.
        bos_id: int. `<bos>` id when the tokenizer has none. Defaults to 2.
        eos_id: int. `<eos>` id when the tokenizer has none. Defaults to 1.
        pad_id: int. `<pad>` id when the tokenizer has none. Defaults to 0.
        seed: int. Seed of the random choices. Defaults to 0.
    """

    def __init__(
        self,
        encoder_sequence_length,
        decoder_sequence_length,
        *,
        tokenizer=None,
        bos_id=2,
        eos_id=1,
        pad_id=0,
        seed=0,
    ):
        for name, value in (
            ("encoder_sequence_length", encoder_sequence_length),
            ("decoder_sequence_length", decoder_sequence_length),
        ):
            if not isinstance(value, (int, np.integer)) or value < 3:
                raise ValueError(
                    f"`{name}` must be an int >= 3. Received: {name}={value!r}."
                )
        self.encoder_sequence_length = int(encoder_sequence_length)
        self.decoder_sequence_length = int(decoder_sequence_length)
        self.tokenizer = tokenizer
        self.bos_id = getattr(tokenizer, "start_token_id", None) or bos_id
        self.eos_id = getattr(tokenizer, "end_token_id", None) or eos_id
        pad = getattr(tokenizer, "pad_token_id", None)
        self.pad_id = pad if pad is not None else pad_id
        self.seed = seed
        # Room for targets: the labels are targets + <eos>.
        self.target_capacity = self.decoder_sequence_length - 1

    def encoder_capacity(self, mode_id=None):
        """Encoder tokens left after `<eos>` and an optional mode token."""
        return self.encoder_sequence_length - 1 - (mode_id is not None)

    def _tokens(self, document):
        if isinstance(document, bytes):
            document = document.decode("utf-8")
        if isinstance(document, str):
            if self.tokenizer is None:
                raise ValueError(
                    "A raw-text document needs `tokenizer=`. Received a "
                    "string and tokenizer=None; pass token ids or a tokenizer."
                )
            document = self.tokenizer(document)
        tokens = np.asarray(document)
        if tokens.ndim != 1 or not np.issubdtype(tokens.dtype, np.integer):
            raise ValueError(
                "Each document must be a string or a 1-D sequence of int "
                f"token ids. Received: shape={tokens.shape}, "
                f"dtype={tokens.dtype}."
            )
        return tokens.astype("int64")

    def _next_example(self, tokens, rng):
        """Returns `(example, consumed)` for a chunk at the start of
        `tokens`: `example` has int arrays `encoder_token_ids` (with mode
        and `<eos>`), `targets` and a str `kind`."""
        raise NotImplementedError

    def _pad(self, example, encoder_sequence_length, decoder_sequence_length):
        """One unpacked example as padded `(x, y, sample_weight)`."""
        return pad_example(example, encoder_sequence_length,
                           decoder_sequence_length, self.pad_id)

    def _extra_x_spec(self):
        """`tf.TensorSpec`s of inputs a subclass adds to `x` (by name)."""
        return {}

    def examples(self, documents):
        """Yields unpadded examples, in document order.

        Each example is a dict with `encoder_token_ids` (mode token, input,
        `<eos>`), `decoder_token_ids` (`<bos>` + targets), `labels`
        (targets + `<eos>`), `targets` and `kind`. Deterministic for a seed.

        Args:
            documents: iterable of str, bytes or 1-D token id sequences
                (a list, a generator, or a `tf.data.Dataset`).
        """
        rng = np.random.default_rng(self.seed)
        if hasattr(documents, "as_numpy_iterator"):
            documents = documents.as_numpy_iterator()
        for document in documents:
            tokens = self._tokens(document)
            while len(tokens):
                example, consumed = self._next_example(tokens, rng)
                tokens = tokens[consumed:]
                targets = example["targets"].astype("int32")
                example["decoder_token_ids"] = np.concatenate(
                    [[self.bos_id], targets]
                ).astype("int32")
                example["labels"] = np.concatenate(
                    [targets, [self.eos_id]]
                ).astype("int32")
                yield example

    def __call__(self, documents, batch_size=None, packed=False):
        """Yields `(x, y, sample_weight)` for `fit`, one example or batch.

        Args:
            documents: iterable of str, bytes or token id sequences.
            batch_size: int or None. Stack this many rows (the last batch
                may be smaller). Defaults to None (single rows).
            packed: bool. Pack several examples per row with segment ids
                (`pack_examples`). Defaults to False (one example per row,
                padded).
        """
        lengths = (self.encoder_sequence_length, self.decoder_sequence_length)
        examples = self.examples(documents)
        if packed:
            rows = pack_examples(examples, *lengths, pad_id=self.pad_id)
        else:
            rows = (self._pad(e, *lengths) for e in examples)
        if batch_size is None:
            yield from rows
            return
        batch = []
        for row in rows:
            batch.append(row)
            if len(batch) == batch_size:
                yield _stack(batch)
                batch = []
        if batch:
            yield _stack(batch)

    def as_dataset(self, documents, batch_size, packed=False):
        """A `tf.data.Dataset` of `(x, y, sample_weight)` batches.

        Args:
            documents: iterable or `tf.data.Dataset` of documents (strings
                or token ids). Re-iterated on each epoch.
            batch_size: int. Rows per batch.
            packed: bool. Pack with segment ids. Defaults to False.
        """
        import tensorflow as tf

        enc, dec = self.encoder_sequence_length, self.decoder_sequence_length
        x_spec = {
            "encoder_token_ids": tf.TensorSpec((None, enc), tf.int32),
            "encoder_padding_mask": tf.TensorSpec((None, enc), tf.bool),
            "decoder_token_ids": tf.TensorSpec((None, dec), tf.int32),
            "decoder_padding_mask": tf.TensorSpec((None, dec), tf.bool),
        }
        x_spec.update(self._extra_x_spec())
        if packed:
            x_spec["encoder_segment_ids"] = tf.TensorSpec((None, enc), tf.int32)
            x_spec["decoder_segment_ids"] = tf.TensorSpec((None, dec), tf.int32)
        signature = (
            x_spec,
            tf.TensorSpec((None, dec), tf.int32),
            tf.TensorSpec((None, dec), tf.float32),
        )
        return tf.data.Dataset.from_generator(
            lambda: self(documents, batch_size=batch_size, packed=packed),
            output_signature=signature,
        )


def _stack(rows):
    xs, ys, ws = zip(*rows)
    x = {key: np.stack([r[key] for r in xs]) for key in xs[0]}
    return x, np.stack(ys), np.stack(ws)
