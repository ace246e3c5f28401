"""T5Gemma sequence-to-sequence language model task."""

from keras_hub.src.utils.python_utils import classproperty

from keras_encdec.api import register
from keras_encdec.convert import transformers_t5gemma
from keras_encdec.models.encdec_seq_2_seq_lm import EncDecSeq2SeqLM
from keras_encdec.models.t5gemma.t5gemma_backbone import T5GemmaBackbone
from keras_encdec.models.t5gemma.t5gemma_backbone import check_inputs
from keras_encdec.models.t5gemma.t5gemma_presets import T5GEMMA_PRESETS
from keras_encdec.models.t5gemma.t5gemma_seq_2_seq_lm_preprocessor import (
    T5GemmaSeq2SeqLMPreprocessor,
)


@register
class T5GemmaSeq2SeqLM(EncDecSeq2SeqLM):
    """T5Gemma encoder-decoder language model for generation and fine-tuning.

    Calling the model on a backbone input dict returns logits
    `[batch, decoder_len, vocab]` from the tied (or untied) decoder embedding,
    with the final soft-cap applied. `generate()` encodes once, computes the
    cross-attention keys/values once, and decodes with a static KV cache; the
    sampler is chosen with `compile(sampler=...)` (keras-hub samplers:
    `"greedy"`, `"top_k"`, `"top_p"`, `"beam"`, ...).

    Args:
        backbone: `keras_encdec.models.T5GemmaBackbone`.
        preprocessor: `keras_encdec.models.T5GemmaSeq2SeqLMPreprocessor` or
            None. With None, inputs must be token dicts. Defaults to `None`.
        **kwargs: passed to `keras_hub.models.Seq2SeqLM`.

    Examples:

    >>> import numpy as np
    >>> from keras_encdec.models import T5GemmaBackbone, T5GemmaSeq2SeqLM
    >>> backbone = T5GemmaBackbone(
    ...     vocabulary_size=32,
    ...     encoder_hidden_dim=16, encoder_intermediate_dim=32,
    ...     encoder_num_layers=2, encoder_num_heads=2,
    ...     encoder_num_kv_heads=1, encoder_head_dim=8,
    ...     decoder_hidden_dim=16, decoder_intermediate_dim=32,
    ...     decoder_num_layers=2, decoder_num_heads=2,
    ...     decoder_num_kv_heads=1, decoder_head_dim=8,
    ... )
    >>> lm = T5GemmaSeq2SeqLM(backbone)
    >>> out = lm.generate({
    ...     "encoder_token_ids": np.array([[2, 5, 6, 1]]),
    ...     "encoder_padding_mask": np.array([[1, 1, 1, 1]]),
    ...     "decoder_token_ids": np.array([[2, 0, 0, 0, 0]]),
    ...     "decoder_padding_mask": np.array([[1, 0, 0, 0, 0]]),
    ... }, stop_token_ids=None)
    >>> out["decoder_token_ids"].shape
    (1, 5)
    """

    backbone_cls = T5GemmaBackbone
    preprocessor_cls = T5GemmaSeq2SeqLMPreprocessor
    # Config and weight mapping of `export_to_transformers`.
    transformers_converter = transformers_t5gemma
    # `from_preset` kwargs that go to the backbone for foreign checkpoints.
    backbone_preset_kwargs = ("dtype",)

    def __call__(self, inputs, *args, **kwargs):
        inputs = self.model_inputs(inputs)
        check_inputs(inputs)
        return super().__call__(inputs, *args, **kwargs)

    @classproperty
    def presets(cls):
        """Preset names -> metadata and hub handles."""
        return dict(T5GEMMA_PRESETS)
