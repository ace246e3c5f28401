"""Preprocessor of T5Gemma's token classifier."""

import keras
from keras import ops

from keras_encdec.api import register
from keras_encdec.models.t5gemma.t5gemma_text_classifier_preprocessor import (
    T5GemmaTextClassifierPreprocessor,
)


@register
class T5GemmaTokenClassifierPreprocessor(T5GemmaTextClassifierPreprocessor):
    """Packs raw strings like `T5GemmaTextClassifierPreprocessor`; labels
    are per packed position.

    `y`, when given, is an int array `[batch, sequence_length]` of labels
    aligned with the packed `token_ids` (`<bos>` at position 0). Unless a
    `sample_weight` is passed, it is the padding mask, so padding positions
    do not count in the loss or metrics.

    Args:
        tokenizer: `keras_encdec.models.T5GemmaTokenizer`.
        sequence_length: int. Packed length. Defaults to `512`.
        truncate: str. See `T5GemmaTextClassifierPreprocessor`. Defaults to
            `"round_robin"`.
        **kwargs: passed to `keras_hub.models.TextClassifierPreprocessor`.

    Examples:

    >>> import numpy as np
    >>> preprocessor = T5GemmaTokenClassifierPreprocessor.from_preset(
    ...     "t5gemma_tiny_random", sequence_length=6)
    >>> x, y, w = preprocessor(["hi"], np.zeros((1, 6), "int32"))
    >>> [int(v) for v in w[0]] == [int(v) for v in x["padding_mask"][0]]
    True
    """

    def call(self, x, y=None, sample_weight=None):
        output = super().call(x, y, sample_weight)
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(output)
        if y is not None:
            y_shape = tuple(ops.shape(y))
            length = tuple(ops.shape(x["token_ids"]))[-1]
            if len(y_shape) != 2 or y_shape[-1] not in (None, length):
                raise ValueError(
                    "Token labels `y` must have shape [batch, sequence_length]"
                    f" = [batch, {length}], aligned with the packed tokens. "
                    f"Received: shape={y_shape}."
                )
            if sample_weight is None:
                sample_weight = ops.cast(x["padding_mask"], "float32")
        return keras.utils.pack_x_y_sample_weight(x, y, sample_weight)
