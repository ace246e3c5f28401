"""Preprocessors of T5Gemma 2's text and token classifiers."""

from keras_hub.src.utils.python_utils import classproperty

from keras_encdec.api import register
from keras_encdec.models.t5gemma.t5gemma_text_classifier_preprocessor import (
    T5GemmaTextClassifierPreprocessor,
)
from keras_encdec.models.t5gemma.t5gemma_token_classifier_preprocessor import (
    T5GemmaTokenClassifierPreprocessor,
)
from keras_encdec.models.t5gemma2.t5gemma2_backbone import T5Gemma2Backbone
from keras_encdec.models.t5gemma2.t5gemma2_presets import T5GEMMA2_PRESETS
from keras_encdec.models.t5gemma2.t5gemma2_tokenizer import T5Gemma2Tokenizer


@register
class T5Gemma2TextClassifierPreprocessor(T5GemmaTextClassifierPreprocessor):
    """Tokenizes and packs raw strings for `T5Gemma2TextClassifier`.

    The packing is `T5GemmaTextClassifierPreprocessor`'s (`<bos> text
    <eos>`, padded with `<pad>`), around a `T5Gemma2Tokenizer`.

    Args:
        tokenizer: `keras_encdec.models.T5Gemma2Tokenizer`.
        sequence_length: int. Packed length. Defaults to `512`.
        truncate: str. See `T5GemmaTextClassifierPreprocessor`. Defaults to
            `"round_robin"`.
        **kwargs: passed to `keras_hub.models.TextClassifierPreprocessor`.

    Examples:

    >>> from keras_encdec.testing import train_sentencepiece
    >>> preprocessor = T5Gemma2TextClassifierPreprocessor(
    ...     T5Gemma2Tokenizer(proto=train_sentencepiece()), sequence_length=6)
    >>> tuple(preprocessor(["the fox"])["token_ids"].shape)
    (1, 6)
    """

    backbone_cls = T5Gemma2Backbone
    tokenizer_cls = T5Gemma2Tokenizer

    @classproperty
    def presets(cls):
        """Preset names -> metadata and hub handles."""
        return dict(T5GEMMA2_PRESETS)


@register
class T5Gemma2TokenClassifierPreprocessor(T5GemmaTokenClassifierPreprocessor):
    """Packs raw strings like `T5Gemma2TextClassifierPreprocessor`; labels
    are per packed position (see `T5GemmaTokenClassifierPreprocessor`).

    Args:
        tokenizer: `keras_encdec.models.T5Gemma2Tokenizer`.
        sequence_length: int. Packed length. Defaults to `512`.
        truncate: str. Defaults to `"round_robin"`.
        **kwargs: passed to `keras_hub.models.TextClassifierPreprocessor`.

    Examples:

    >>> import numpy as np
    >>> from keras_encdec.testing import train_sentencepiece
    >>> preprocessor = T5Gemma2TokenClassifierPreprocessor(
    ...     T5Gemma2Tokenizer(proto=train_sentencepiece()), sequence_length=6)
    >>> x, y, w = preprocessor(["hi"], np.zeros((1, 6), "int32"))
    >>> tuple(w.shape)
    (1, 6)
    """

    backbone_cls = T5Gemma2Backbone
    tokenizer_cls = T5Gemma2Tokenizer

    @classproperty
    def presets(cls):
        """Preset names -> metadata and hub handles."""
        return dict(T5GEMMA2_PRESETS)
