"""T5Gemma 2 token classification task."""

from keras_hub.src.utils.python_utils import classproperty

from keras_encdec.api import register
from keras_encdec.models.t5gemma.t5gemma_token_classifier import (
    T5GemmaTokenClassifier,
)
from keras_encdec.models.t5gemma2.t5gemma2_backbone import T5Gemma2Backbone
from keras_encdec.models.t5gemma2.t5gemma2_classifier_preprocessor import (
    T5Gemma2TokenClassifierPreprocessor,
)
from keras_encdec.models.t5gemma2.t5gemma2_presets import T5GEMMA2_PRESETS
from keras_encdec.models.t5gemma2.t5gemma2_text_classifier import (
    T5GEMMA2_CONVERTER,
)
from keras_encdec.models.t5gemma2.t5gemma2_text_classifier import (
    check_t5gemma2_backbone,
)


@register
class T5Gemma2TokenClassifier(T5GemmaTokenClassifier):
    """T5Gemma 2 per-token classifier (encoder-decoder).

    Computes exactly what transformers' `T5Gemma2ForTokenClassification`
    does: the head `score` (dense with bias, behind dropout) on every
    hidden state of the decoder fed the input shifted right (position `t`
    reads tokens up to `t - 1`, and the whole input through
    cross-attention). Text only.

    Args:
        backbone: `T5Gemma2Backbone`.
        num_classes: int. Number of token classes.
        preprocessor: `T5Gemma2TokenClassifierPreprocessor` or None.
            Defaults to `None`.
        activation: str, callable or None. Applied to the logits. Defaults
            to `None`.
        dropout: float. Dropout before the head. Defaults to `0.0`.
        encoder_only: None or False. Defaults to `None`.
        decoder_start_token_id: int. First decoder token. Defaults to `2`.
        **kwargs: passed to `keras_hub.models.Task`.

    Examples:

    >>> import numpy as np
    >>> classifier = T5Gemma2TokenClassifier.from_preset(
    ...     "t5gemma2_tiny_random", num_classes=5)
    >>> logits = classifier({"token_ids": np.array([[2, 9, 1, 0]]),
    ...                      "padding_mask": np.array([[1, 1, 1, 0]])})
    >>> tuple(logits.shape)
    (1, 4, 5)
    """

    backbone_cls = T5Gemma2Backbone
    preprocessor_cls = T5Gemma2TokenClassifierPreprocessor
    transformers_architecture = "T5Gemma2ForTokenClassification"
    encoder_model_cls = None
    backbone_preset_kwargs = {"text_only": True}
    transformers_converter = T5GEMMA2_CONVERTER
    masks_decoder_padding = False

    def __init__(self, backbone, num_classes, encoder_only=None, **kwargs):
        check_t5gemma2_backbone(backbone, encoder_only)
        super().__init__(backbone, num_classes, encoder_only=False, **kwargs)

    @classproperty
    def presets(cls):
        """Preset names -> metadata and hub handles."""
        return dict(T5GEMMA2_PRESETS)
