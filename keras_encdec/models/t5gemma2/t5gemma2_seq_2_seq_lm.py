"""T5Gemma 2 sequence-to-sequence language model task."""

from keras_hub.models import Seq2SeqLM
from keras_hub.src.utils.python_utils import classproperty

from keras_encdec.api import register
from keras_encdec.convert import transformers_t5gemma2
from keras_encdec.models.encdec_seq_2_seq_lm import EncDecSeq2SeqLM
from keras_encdec.models.t5gemma2.t5gemma2_backbone import T5Gemma2Backbone
from keras_encdec.models.t5gemma2.t5gemma2_config import PIXEL_VALUES
from keras_encdec.models.t5gemma2.t5gemma2_config import check_t5gemma2_inputs
from keras_encdec.models.t5gemma2.t5gemma2_fast_decode import T5Gemma2DecodeStep
from keras_encdec.models.t5gemma2.t5gemma2_presets import T5GEMMA2_PRESETS
from keras_encdec.models.t5gemma2.t5gemma2_seq_2_seq_lm_preprocessor import (
    T5Gemma2Seq2SeqLMPreprocessor,
)


@register
class T5Gemma2Seq2SeqLM(EncDecSeq2SeqLM):
    """T5Gemma 2 encoder-decoder language model.

    Everything but the backbone and the inputs is the shared task
    (`keras_encdec.models.encdec_seq_2_seq_lm.EncDecSeq2SeqLM`, as for
    `T5GemmaSeq2SeqLM`): logits from the shared embedding with the
    optional final soft-cap; `generate()` encodes once, computes every decoder block's cross
    keys/values once (`key_norm(key(enc))`, `value(enc)`) and decodes with a
    static self-attention cache (samplers `"greedy"`, `"top_k"`, `"top_p"`,
    `"beam"`, ...; on torch the passes run as plain torch code, see
    `keras_encdec.models.t5gemma2.t5gemma2_fast_decode`); `fit` trains
    with the chunked cross-entropy;
    `export_to_transformers` writes a `T5Gemma2ForConditionalGeneration`
    folder. With a vision tower, inputs also take `pixel_values` float32
    `[batch, num_images, H, W, 3]` (normalised, channels last), in calls
    and in `generate`.

    Args:
        backbone: `keras_encdec.models.T5Gemma2Backbone`.
        preprocessor: `keras_encdec.models.T5Gemma2Seq2SeqLMPreprocessor` or
            None. Defaults to `None`.
        **kwargs: passed to `keras_hub.models.Seq2SeqLM`.

    Examples:

    >>> lm = T5Gemma2Seq2SeqLM.from_preset("t5gemma2_tiny_random")
    >>> lm.compile(sampler="greedy")
    >>> isinstance(lm.generate("the quick brown fox", max_length=8), str)
    True
    """

    backbone_cls = T5Gemma2Backbone
    preprocessor_cls = T5Gemma2Seq2SeqLMPreprocessor
    transformers_converter = transformers_t5gemma2
    backbone_preset_kwargs = ("dtype", "text_only")
    # On torch, `generate` decodes with this functional step.
    torch_decode_step_class = T5Gemma2DecodeStep

    @classproperty
    def presets(cls):
        """Preset names -> metadata and hub handles."""
        return dict(T5GEMMA2_PRESETS)

    def __call__(self, inputs, *args, **kwargs):
        inputs = self.model_inputs(inputs)
        check_t5gemma2_inputs(inputs, self.backbone.vision_config)
        if self.backbone.vision_config is not None and PIXEL_VALUES not in inputs:
            # Text only on a vision model: the functional graph needs pixels.
            return self.call(inputs, training=kwargs.get("training"))
        return Seq2SeqLM.__call__(self, inputs, *args, **kwargs)

    def call(self, inputs, training=None, mask=None):
        inputs = self.model_inputs(inputs)
        if PIXEL_VALUES in inputs or self.backbone.vision_config is None:
            return super().call(inputs, training=training, mask=mask)
        hidden_states = self.backbone(inputs, training=training)[
            "decoder_sequence_output"
        ]
        if self._returns_hidden_states(training):
            return hidden_states
        return self.compute_logits(hidden_states)

    def encode_prompt(self, inputs):
        """Runs the encoder (with `pixel_values` when given) for
        `generate`; returns `(encoder_output, padding_mask)`."""
        padding_mask = inputs["encoder_padding_mask"]
        encoder_output = self.backbone.encode(
            inputs["encoder_token_ids"], padding_mask, inputs.get(PIXEL_VALUES)
        )
        return encoder_output, padding_mask
