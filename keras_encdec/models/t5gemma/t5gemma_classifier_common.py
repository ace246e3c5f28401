"""What T5Gemma's sequence and token classifiers share.

Both run either encoder-only (on a `T5GemmaEncoderModel`) or
encoder-decoder (on a `T5GemmaBackbone`, feeding the decoder the input
shifted right by one, `decoder_start_token_id` first), as transformers'
`T5GemmaForSequenceClassification` / `T5GemmaForTokenClassification` do,
and end in the same `score` projection (weight and bias).
"""

import logging

import keras
from keras import ops

from keras_encdec.models.t5gemma.t5gemma_backbone import T5GemmaBackbone
from keras_encdec.models.t5gemma.t5gemma_encoder_model import ENCODER_INPUT_NAMES
from keras_encdec.models.t5gemma.t5gemma_encoder_model import T5GemmaEncoderModel
from keras_encdec.models.t5gemma.t5gemma_encoder_model import check_encoder_inputs
from keras_encdec.models import lora as lora_lib

logger = logging.getLogger(__name__)
HEAD_GROUP = "head"


def check_mode(backbone, encoder_only):
    """Resolves `encoder_only` from the backbone type; raises on mismatch."""
    if not isinstance(backbone, (T5GemmaBackbone, T5GemmaEncoderModel)):
        raise TypeError(
            "`backbone` must be a `T5GemmaEncoderModel` (encoder-only) or a "
            f"`T5GemmaBackbone` (encoder-decoder). Received: "
            f"{type(backbone).__name__}."
        )
    is_encoder = isinstance(backbone, T5GemmaEncoderModel)
    if encoder_only is None:
        return is_encoder
    if bool(encoder_only) != is_encoder:
        raise ValueError(
            f"encoder_only={encoder_only} does not fit a "
            f"{type(backbone).__name__} backbone. Encoder-only heads take a "
            "`T5GemmaEncoderModel` (e.g. `T5GemmaEncoderModel.from_preset("
            "preset)`, which reads only the encoder's weights); "
            "encoder-decoder heads take a `T5GemmaBackbone`. Or pass "
            "`encoder_only=` to the task's `from_preset`."
        )
    return is_encoder


def shift_right(values, first_value):
    """`[first_value, values[:, :-1]]` along the last axis."""
    first = ops.ones_like(values[:, :1]) * first_value
    return ops.concatenate([first, values[:, :-1]], axis=1)


def sequence_output(
    backbone, encoder_only, inputs, decoder_start_token_id, mask_decoder=True
):
    """Last hidden states of the head's stack: the encoder's, or the
    decoder's on the input shifted right (transformers' `_shift_right`).

    `mask_decoder=False` lets the decoder attend to the shifted pad tokens
    (causally), as transformers' T5Gemma 2 heads do: they pass no decoder
    mask, where T5Gemma's derive one from the pad id."""
    token_ids, padding_mask = inputs["token_ids"], inputs["padding_mask"]
    if encoder_only:
        return backbone(inputs)["sequence_output"]
    mask = ops.cast(padding_mask, "int32")
    outputs = backbone(
        {
            "encoder_token_ids": token_ids,
            "encoder_padding_mask": mask,
            "decoder_token_ids": shift_right(token_ids, decoder_start_token_id),
            "decoder_padding_mask": (
                shift_right(mask, 1) if mask_decoder else ops.ones_like(mask)
            ),
        }
    )
    return outputs["decoder_sequence_output"]


def head_width(backbone, encoder_only):
    return backbone.hidden_dim if encoder_only else backbone.decoder_hidden_dim


def make_head(num_classes, per_token, initializer_range, activation, dtype):
    """The `score` projection, an `EinsumDense` (so LoRA can target it),
    initialized as transformers does: normal with std
    `initializer_range / sqrt(num_classes)`, zero bias."""
    if not isinstance(num_classes, int) or isinstance(num_classes, bool) or (
        num_classes < 1
    ):
        raise ValueError(
            f"`num_classes` must be a positive int. Received: {num_classes!r}."
        )
    return keras.layers.EinsumDense(
        "btd,dc->btc" if per_token else "bd,dc->bc",
        output_shape=(None, num_classes) if per_token else num_classes,
        bias_axes="c",
        activation=activation,
        kernel_initializer=keras.initializers.RandomNormal(
            stddev=initializer_range * num_classes**-0.5
        ),
        dtype=dtype,
        name="score",
    )


def encoder_inputs():
    return {
        name: keras.Input(shape=(None,), dtype="int32", name=name)
        for name in ENCODER_INPUT_NAMES
    }


class T5GemmaClassifierMixin:
    """Checks, LoRA with the head, and config for both classifiers (of
    both families: T5Gemma 2 classes override the class attributes)."""

    # Read by `classifier_preset.load_classifier`.
    encoder_model_cls = T5GemmaEncoderModel
    # Encoder-decoder mode: mask the shifted pad tokens in the decoder.
    masks_decoder_padding = True
    backbone_preset_kwargs = {}
    transformers_converter = "keras_encdec.convert.transformers_t5gemma_heads"

    def __call__(self, inputs, *args, **kwargs):
        check_encoder_inputs(inputs)
        return super().__call__(inputs, *args, **kwargs)

    def enable_lora(self, rank, target="attention", *, alpha=None, train_head=True):
        """Freezes the model and adds LoRA adapters, head included if asked.

        Args:
            rank: int. LoRA rank.
            target: str or list of str. What `T5GemmaBackbone.enable_lora`
                takes, plus `"score"` for LoRA on the classification head.
                Defaults to `"attention"`.
            alpha: float or None. LoRA scale numerator. Defaults to `rank`.
            train_head: bool. When the head is not a LoRA target, train its
                full kernel and bias (a new head starts random, so it has to
                learn). Defaults to `True`.

        Returns:
            int. The number of trainable parameters.

        Examples:

        >>> from keras_encdec.models import T5GemmaTextClassifier
        >>> classifier = T5GemmaTextClassifier.from_preset(
        ...     "t5gemma_tiny_random", num_classes=2, encoder_only=True)
        >>> count = classifier.enable_lora(2, target=["attention", "score"])
        >>> count > 0
        True
        """
        count = lora_lib.enable_lora(self, rank, target=target, alpha=alpha)
        if train_head and not self.score.lora_enabled:
            self.score.trainable = True
            count = lora_lib.trainable_parameter_count(self)
        return count

    def save_lora_weights(self, filepath):
        """Saves the LoRA factors and the head (`kernel`, `bias`) in one
        `.lora.h5` file, so base preset + file rebuild the fine-tuned model.

        Args:
            filepath: str. A path ending in `.lora.h5`.
        """
        import h5py

        lora_lib.save_lora_weights(self, filepath)
        with h5py.File(filepath, "a") as f:
            group = f.create_group(HEAD_GROUP)
            for name, variable in self._head_variables():
                group.create_dataset(name, data=ops.convert_to_numpy(variable))

    def load_lora_weights(self, filepath):
        """Loads a file written by `save_lora_weights` (factors and head).

        Args:
            filepath: str. A `.lora.h5` file.
        """
        import h5py

        lora_lib.load_lora_weights(self, filepath)
        with h5py.File(filepath, "r") as f:
            if HEAD_GROUP not in f:
                raise ValueError(
                    f"'{filepath}' has no `{HEAD_GROUP}` group: it was not "
                    "written by a classifier's `save_lora_weights`."
                )
            group = f[HEAD_GROUP]
            for name, variable in self._head_variables():
                value = group[name][()]
                if tuple(value.shape) != tuple(variable.shape):
                    raise ValueError(
                        f"The head in '{filepath}' has shape {value.shape}; "
                        f"this model's is {tuple(variable.shape)}."
                    )
                variable.assign(value)

    def _head_variables(self):
        # The base kernel: with LoRA on the head, `.kernel` is the merged
        # value, not the variable.
        return [("kernel", self.score._kernel), ("bias", self.score.bias)]

    def merge_lora(self):
        """Folds the adapters (head included) into their kernels.

        Returns:
            int. The number of merged projections.
        """
        return lora_lib.merge_lora(self)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "num_classes": self.num_classes,
                "activation": keras.activations.serialize(self.activation),
                "dropout": self.dropout,
                "encoder_only": self.encoder_only,
                "decoder_start_token_id": self.decoder_start_token_id,
            }
        )
        return config
