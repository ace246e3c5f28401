"""T5Gemma sequence classification task."""

import keras
from keras_hub.models import TextClassifier
from keras_hub.src.utils.python_utils import classproperty

from keras_encdec.api import register
from keras_encdec.convert import classifier_preset
from keras_encdec.models.shuffled_fit import ShuffledFitMixin
from keras_encdec.models.t5gemma import t5gemma_classifier_common as common
from keras_encdec.models.t5gemma.t5gemma_backbone import T5GemmaBackbone
from keras_encdec.models.t5gemma.t5gemma_encoder_model import last_token_index
from keras_encdec.models.t5gemma.t5gemma_encoder_model import take_positions
from keras_encdec.models.t5gemma.t5gemma_presets import T5GEMMA_PRESETS
from keras_encdec.models.t5gemma.t5gemma_text_classifier_preprocessor import (
    T5GemmaTextClassifierPreprocessor,
)


@register
class T5GemmaTextClassifier(
    common.T5GemmaClassifierMixin, ShuffledFitMixin, TextClassifier
):
    """T5Gemma sequence classifier, encoder-only or encoder-decoder.

    Computes exactly what transformers' `T5GemmaForSequenceClassification`
    does. Encoder-only (on a `T5GemmaEncoderModel`): the head reads the
    encoder's hidden state at the rightmost non-pad token. Encoder-decoder
    (on a `T5GemmaBackbone`): the decoder gets the input shifted right
    (`decoder_start_token_id` first) and the head reads its hidden state one
    position later (the same token after the shift, clamped to the last
    position). The head `score` is a dense layer with bias, behind dropout.

    Inputs are a dict with `token_ids` and `padding_mask` (int
    `[batch, length]`), or raw strings with a preprocessor. Outputs are
    `[batch, num_classes]` logits (or `activation` of them).

    Args:
        backbone: `T5GemmaEncoderModel` (encoder-only) or `T5GemmaBackbone`
            (encoder-decoder).
        num_classes: int. Number of classes.
        preprocessor: `T5GemmaTextClassifierPreprocessor` or None. Defaults
            to `None` (inputs are token dicts).
        activation: str, callable or None. Applied to the logits, e.g.
            `"softmax"`. Defaults to `None` (logits).
        dropout: float. Dropout before the head (transformers'
            `classifier_dropout_rate`). Defaults to `0.0`.
        encoder_only: bool or None. Must agree with the backbone type; None
            takes it from there. Defaults to `None`.
        decoder_start_token_id: int. First decoder token in encoder-decoder
            mode (transformers' `decoder.bos_token_id`). Defaults to `2`.
        **kwargs: passed to `keras_hub.models.TextClassifier`.

    Examples:

    >>> import numpy as np
    >>> from keras_encdec.models import T5GemmaEncoderModel
    >>> encoder = T5GemmaEncoderModel(
    ...     vocabulary_size=64, hidden_dim=16, intermediate_dim=32,
    ...     num_layers=2, num_heads=2, num_kv_heads=1, head_dim=8)
    >>> classifier = T5GemmaTextClassifier(encoder, num_classes=3)
    >>> logits = classifier({"token_ids": np.array([[2, 9, 1, 0]]),
    ...                      "padding_mask": np.array([[1, 1, 1, 0]])})
    >>> tuple(logits.shape)
    (1, 3)
    >>> classifier = T5GemmaTextClassifier.from_preset(
    ...     "t5gemma_tiny_random", num_classes=2, encoder_only=True)
    >>> classifier.predict(["a fine day"], verbose=0).shape
    (1, 2)
    """

    backbone_cls = T5GemmaBackbone
    preprocessor_cls = T5GemmaTextClassifierPreprocessor
    transformers_architecture = "T5GemmaForSequenceClassification"

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
            per_token=False,
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
        index = last_token_index(
            inputs["padding_mask"], shift=0 if encoder_only else 1
        )
        pooled = take_positions(hidden_states, index)
        outputs = self.score(self.output_dropout(pooled))
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

        Loads transformers `T5GemmaForSequenceClassification` folders (mode
        and head from their config), any other transformers T5Gemma folder,
        and keras-encdec task or backbone presets. Encoder-only models read
        only the encoder's tensors. A saved head is kept unless a different
        `num_classes` is passed.

        Args:
            preset: str. The preset to load.
            load_weights: bool. Load the weights. Defaults to `True`.
            **kwargs: `num_classes`, `encoder_only` (defaults to the
                checkpoint's mode: a transformers config's
                `is_encoder_decoder`, or the saved backbone type),
                `preprocessor` (defaults to one around the preset's
                tokenizer), backbone settings (`dtype`, `remat`,
                `attention_impl`) and task arguments.

        Examples:

        >>> classifier = T5GemmaTextClassifier.from_preset(
        ...     "t5gemma_tiny_random", num_classes=4)
        >>> classifier.encoder_only, classifier.num_classes
        (False, 4)
        """
        return classifier_preset.load_classifier(
            cls, preset, load_weights=load_weights, **kwargs
        )

    def export_to_transformers(self, path, max_shard_bytes=2 * 1024**3):
        """Writes a transformers `T5GemmaForSequenceClassification` folder.

        `config.json` (with `is_encoder_decoder`, `num_labels`,
        `classifier_dropout_rate`), safetensors weights in their dtype (a
        round trip is bit-identical) and, with a preprocessor,
        `tokenizer.model`. `activation` is not exported: transformers
        returns logits.

        Args:
            path: str. Output folder.
            max_shard_bytes: int. Largest safetensors shard. Defaults to
                2 GiB.

        Examples:

        >>> import os, tempfile
        >>> classifier = T5GemmaTextClassifier.from_preset(
        ...     "t5gemma_tiny_random", num_classes=2, encoder_only=True)
        >>> folder = tempfile.mkdtemp()
        >>> classifier.export_to_transformers(folder)
        >>> sorted(os.listdir(folder))
        ['config.json', 'model.safetensors', 'tokenizer.model']
        """
        classifier_preset.export(self, path, max_shard_bytes)
