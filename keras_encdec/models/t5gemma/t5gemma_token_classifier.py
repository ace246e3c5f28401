"""T5Gemma token classification task."""

import keras
from keras_hub.models import Task
from keras_hub.src.utils.python_utils import classproperty

from keras_encdec.api import register
from keras_encdec.convert import classifier_preset
from keras_encdec.models.shuffled_fit import ShuffledFitMixin
from keras_encdec.models.t5gemma import t5gemma_classifier_common as common
from keras_encdec.models.t5gemma.t5gemma_backbone import T5GemmaBackbone
from keras_encdec.models.t5gemma.t5gemma_presets import T5GEMMA_PRESETS
from keras_encdec.models.t5gemma.t5gemma_token_classifier_preprocessor import (
    T5GemmaTokenClassifierPreprocessor,
)


@register
class T5GemmaTokenClassifier(
    common.T5GemmaClassifierMixin, ShuffledFitMixin, Task
):
    """T5Gemma per-token classifier, encoder-only or encoder-decoder.

    Computes exactly what transformers' `T5GemmaForTokenClassification`
    does: the head `score` (dense with bias, behind dropout) on every
    hidden state of the encoder (encoder-only, on a `T5GemmaEncoderModel`)
    or of the decoder fed the input shifted right (encoder-decoder, on a
    `T5GemmaBackbone`; position `t` of the output then reads tokens up to
    `t - 1`).

    Inputs are a dict with `token_ids` and `padding_mask` (int
    `[batch, length]`), or raw strings with a preprocessor. Outputs are
    `[batch, length, num_classes]` logits (or `activation` of them).

    Args:
        backbone: `T5GemmaEncoderModel` or `T5GemmaBackbone`.
        num_classes: int. Number of token classes.
        preprocessor: `T5GemmaTokenClassifierPreprocessor` or None. Defaults
            to `None`.
        activation: str, callable or None. Applied to the logits. Defaults
            to `None`.
        dropout: float. Dropout before the head. Defaults to `0.0`.
        encoder_only: bool or None. Must agree with the backbone type.
            Defaults to `None`.
        decoder_start_token_id: int. First decoder token in encoder-decoder
            mode. Defaults to `2`.
        **kwargs: passed to `keras_hub.models.Task`.

    Examples:

    >>> import numpy as np
    >>> classifier = T5GemmaTokenClassifier.from_preset(
    ...     "t5gemma_tiny_random", num_classes=5, encoder_only=True)
    >>> logits = classifier({"token_ids": np.array([[2, 9, 1, 0]]),
    ...                      "padding_mask": np.array([[1, 1, 1, 0]])})
    >>> tuple(logits.shape)
    (1, 4, 5)
    """

    backbone_cls = T5GemmaBackbone
    preprocessor_cls = T5GemmaTokenClassifierPreprocessor
    transformers_architecture = "T5GemmaForTokenClassification"

    def __init__(
        self,
        backbone,
        num_classes,
        preprocessor=None,
        activation=None,
        dropout=0.0,
        encoder_only=None,
        decoder_start_token_id=2,
        **kwargs,
    ):
        encoder_only = common.check_mode(backbone, encoder_only)
        # === Layers ===
        self.backbone = backbone
        self.preprocessor = preprocessor
        self.output_dropout = keras.layers.Dropout(
            dropout, dtype=backbone.dtype_policy, name="output_dropout"
        )
        self.score = common.make_head(
            num_classes,
            per_token=True,
            initializer_range=backbone.initializer_range,
            activation=activation,
            dtype=backbone.dtype_policy,
        )

        # === Functional model ===
        inputs = common.encoder_inputs()
        hidden_states = common.sequence_output(
            backbone,
            encoder_only,
            inputs,
            decoder_start_token_id,
            mask_decoder=self.masks_decoder_padding,
        )
        outputs = self.score(self.output_dropout(hidden_states))
        super().__init__(inputs=inputs, outputs=outputs, **kwargs)

        # === Config ===
        self.num_classes = num_classes
        self.activation = keras.activations.get(activation)
        self.dropout = dropout
        self.encoder_only = encoder_only
        self.decoder_start_token_id = decoder_start_token_id

    @classproperty
    def presets(cls):
        """Preset names -> metadata and hub handles."""
        return dict(T5GEMMA_PRESETS)

    @classmethod
    def from_preset(cls, preset, load_weights=True, **kwargs):
        """Builds the classifier from a preset name, folder or hub handle.

        Same sources and arguments as `T5GemmaTextClassifier.from_preset`;
        transformers `T5GemmaForTokenClassification` folders bring their
        head.

        Args:
            preset: str. The preset to load.
            load_weights: bool. Load the weights. Defaults to `True`.
            **kwargs: `num_classes`, `encoder_only`, `preprocessor`,
                backbone settings and task arguments.

        Examples:

        >>> classifier = T5GemmaTokenClassifier.from_preset(
        ...     "t5gemma_tiny_random", num_classes=3)
        >>> classifier.encoder_only
        False
        """
        return classifier_preset.load_classifier(
            cls, preset, load_weights=load_weights, **kwargs
        )

    def compile(self, optimizer="auto", loss="auto", *, weighted_metrics="auto",
                **kwargs):
        """Configures training: Adam (5e-5), sparse categorical
        cross-entropy and token accuracy, weighted by `sample_weight` (the
        padding mask, from the preprocessor), by default.

        Args:
            optimizer: `"auto"` or a Keras optimizer.
            loss: `"auto"` or a Keras loss.
            weighted_metrics: `"auto"` or a list of Keras metrics.
            **kwargs: passed to `keras.Model.compile`.
        """
        if optimizer == "auto":
            optimizer = keras.optimizers.Adam(5e-5)
        if loss == "auto":
            activation = keras.activations.get(getattr(self, "activation", None))
            from_logits = activation != keras.activations.softmax
            loss = keras.losses.SparseCategoricalCrossentropy(from_logits)
        if weighted_metrics == "auto":
            weighted_metrics = [keras.metrics.SparseCategoricalAccuracy()]
        super().compile(
            optimizer=optimizer,
            loss=loss,
            weighted_metrics=weighted_metrics,
            **kwargs,
        )

    def export_to_transformers(self, path, max_shard_bytes=2 * 1024**3):
        """Writes a transformers `T5GemmaForTokenClassification` folder
        (see `T5GemmaTextClassifier.export_to_transformers`).

        Args:
            path: str. Output folder.
            max_shard_bytes: int. Largest safetensors shard. Defaults to
                2 GiB.
        """
        classifier_preset.export(self, path, max_shard_bytes)
