"""T5Gemma 2 preprocessor: strings to encoder/decoder token tensors."""

from keras_hub.src.utils.python_utils import classproperty

from keras_encdec.api import register
from keras_encdec.models.t5gemma.t5gemma_seq_2_seq_lm_preprocessor import (
    T5GemmaSeq2SeqLMPreprocessor,
)
from keras_encdec.models.t5gemma2.t5gemma2_backbone import T5Gemma2Backbone
from keras_encdec.models.t5gemma2.t5gemma2_presets import T5GEMMA2_PRESETS
from keras_encdec.models.t5gemma2.t5gemma2_tokenizer import T5Gemma2Tokenizer


@register
class T5Gemma2Seq2SeqLMPreprocessor(T5GemmaSeq2SeqLMPreprocessor):
    """Tokenizes and packs `{"encoder_text", "decoder_text"}` for T5Gemma 2.

    The packing is T5Gemma's (`T5GemmaSeq2SeqLMPreprocessor`): the encoder
    gets `text <eos>` (`<bos>` first with `add_start_token=True`), the
    decoder input `<bos> target` and the labels `target <eos>`; `generate`
    starts the decoder from `<bos>` (id 2).

    Args:
        tokenizer: `keras_encdec.models.T5Gemma2Tokenizer`.
        encoder_sequence_length: int. Defaults to `512`.
        decoder_sequence_length: int. Defaults to `512`.
        **kwargs: as for `T5GemmaSeq2SeqLMPreprocessor`.

    Examples:

    >>> from keras_encdec.testing import train_sentencepiece
    >>> preprocessor = T5Gemma2Seq2SeqLMPreprocessor(
    ...     T5Gemma2Tokenizer(proto=train_sentencepiece()),
    ...     encoder_sequence_length=8, decoder_sequence_length=8)
    >>> x, y, w = preprocessor({"encoder_text": ["the fox"],
    ...                         "decoder_text": ["a dog"]})
    >>> tuple(x["encoder_token_ids"].shape)
    (1, 8)
    """

    backbone_cls = T5Gemma2Backbone
    tokenizer_cls = T5Gemma2Tokenizer

    @classproperty
    def presets(cls):
        """Preset names -> metadata and hub handles."""
        return dict(T5GEMMA2_PRESETS)
