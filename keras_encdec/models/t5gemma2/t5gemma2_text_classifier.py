"""T5Gemma 2 sequence classification task."""

from keras_hub.src.utils.python_utils import classproperty

from keras_encdec.api import register
from keras_encdec.models.t5gemma.t5gemma_text_classifier import (
    T5GemmaTextClassifier,
)
from keras_encdec.models.t5gemma2.t5gemma2_backbone import T5Gemma2Backbone
from keras_encdec.models.t5gemma2.t5gemma2_classifier_preprocessor import (
    T5Gemma2TextClassifierPreprocessor,
)
from keras_encdec.models.t5gemma2.t5gemma2_presets import T5GEMMA2_PRESETS

T5GEMMA2_CONVERTER = "keras_encdec.convert.transformers_t5gemma2_heads"


def check_t5gemma2_backbone(backbone, encoder_only):
    """Raises unless `backbone` is a `T5Gemma2Backbone` and the mode is
    encoder-decoder (the only one transformers has for T5Gemma 2)."""
    if not isinstance(backbone, T5Gemma2Backbone):
        raise TypeError(
            "`backbone` must be a `T5Gemma2Backbone`. Received: "
            f"{type(backbone).__name__}."
        )
    if encoder_only:
        raise ValueError(
            "T5Gemma 2 classifiers run encoder-decoder only (transformers "
            "rejects is_encoder_decoder=False for T5Gemma 2). Received: "
            f"encoder_only={encoder_only}."
        )


@register
class T5Gemma2TextClassifier(T5GemmaTextClassifier):
    """T5Gemma 2 sequence classifier (encoder-decoder).

    Computes exactly what transformers' `T5Gemma2ForSequenceClassification`
    does: the encoder reads the tokens, the decoder reads them shifted
    right (`decoder_start_token_id` first), and the head `score` (dense with
    bias, behind dropout) reads the decoder's hidden state at the last
    non-pad position of the shifted input (the rightmost non-pad token's
    index plus one, clamped to the last position). Text only.

    Inputs are a dict with `token_ids` and `padding_mask` (int
    `[batch, length]`), or raw strings with a preprocessor. Outputs are
    `[batch, num_classes]` logits (or `activation` of them).

    Args:
        backbone: `T5Gemma2Backbone` (without vision tower is enough).
        num_classes: int. Number of classes.
        preprocessor: `T5Gemma2TextClassifierPreprocessor` or None.
            Defaults to `None` (inputs are token dicts).
        activation: str, callable or None. Applied to the logits. Defaults
            to `None` (logits).
        dropout: float. Dropout before the head (transformers'
            `classifier_dropout_rate`). Defaults to `0.0`.
        encoder_only: None or False. T5Gemma 2 has no encoder-only head.
            Defaults to `None`.
        decoder_start_token_id: int. First decoder token (transformers'
            `decoder.bos_token_id`). Defaults to `2`.
        **kwargs: passed to `keras_hub.models.TextClassifier`.

    Examples:

    >>> import numpy as np
    >>> classifier = T5Gemma2TextClassifier.from_preset(
    ...     "t5gemma2_tiny_random", num_classes=3)
    >>> logits = classifier({"token_ids": np.array([[2, 9, 1, 0]]),
    ...                      "padding_mask": np.array([[1, 1, 1, 0]])})
    >>> tuple(logits.shape)
    (1, 3)
    """

    backbone_cls = T5Gemma2Backbone
    preprocessor_cls = T5Gemma2TextClassifierPreprocessor
    transformers_architecture = "T5Gemma2ForSequenceClassification"
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
