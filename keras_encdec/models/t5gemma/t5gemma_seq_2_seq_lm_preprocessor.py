"""T5Gemma preprocessor: strings to encoder/decoder token tensors."""

import keras
from keras_hub.models import Seq2SeqLMPreprocessor
from keras_hub.src.utils.python_utils import classproperty
from keras_hub.src.utils.tensor_utils import preprocessing_function

from keras_encdec.api import register
from keras_encdec.convert import preset_loader
from keras_encdec.models.t5gemma.t5gemma_backbone import T5GemmaBackbone
from keras_encdec.models.t5gemma.t5gemma_presets import T5GEMMA_PRESETS
from keras_encdec.models.t5gemma.t5gemma_tokenizer import T5GemmaTokenizer


@register
class T5GemmaSeq2SeqLMPreprocessor(Seq2SeqLMPreprocessor):
    """Tokenizes and packs `{"encoder_text", "decoder_text"}` for T5Gemma.

    For `fit`, returns `(x, y, sample_weight)`: the decoder input starts with
    `<bos>`, `y` is the decoder sequence shifted left by one (ending in
    `<eos>`), and `sample_weight` masks padding. The encoder gets `<eos>`
    appended (and `<bos>` prepended when `add_start_token=True`), like
    keras-hub's T5Gemma. For `generate`, a plain string (or list) is the
    encoder text and the decoder prompt is just `<bos>`; unlike keras-hub,
    the encoder input gets the same `<eos>` in `generate` as in `fit`.

    Args:
        tokenizer: `keras_encdec.models.T5GemmaTokenizer`.
        encoder_sequence_length: int. Packed encoder length. Defaults to
            `512`.
        decoder_sequence_length: int. Packed decoder length. Defaults to
            `512`.
        add_start_token: bool. Prepend `<bos>` to the encoder input.
            Defaults to `False`.
        add_end_token: bool. Append `<eos>` to encoder input and targets.
            Defaults to `True`.
        **kwargs: passed to `keras_hub.models.Seq2SeqLMPreprocessor`.

    Examples:

    >>> import io, sentencepiece
    >>> buffer = io.BytesIO()
    >>> sentencepiece.SentencePieceTrainer.train(
    ...     sentence_iterator=iter(["the quick brown fox jumped"] * 10),
    ...     model_writer=buffer, vocab_size=9, model_type="WORD",
    ...     pad_id=0, eos_id=1, bos_id=2, unk_id=3, pad_piece="<pad>",
    ...     eos_piece="<eos>", bos_piece="<bos>", unk_piece="<unk>")
    >>> preprocessor = T5GemmaSeq2SeqLMPreprocessor(
    ...     T5GemmaTokenizer(proto=buffer.getvalue()),
    ...     encoder_sequence_length=6, decoder_sequence_length=4)
    >>> from keras import ops
    >>> x, y, w = preprocessor(
    ...     {"encoder_text": ["the fox"], "decoder_text": ["quick fox"]})
    >>> start = ops.convert_to_numpy(x["decoder_token_ids"])[0, 0]
    >>> int(start), int(ops.convert_to_numpy(y)[0, 2])
    (2, 1)
    """

    backbone_cls = T5GemmaBackbone
    tokenizer_cls = T5GemmaTokenizer

    def __init__(
        self,
        tokenizer,
        encoder_sequence_length=512,
        decoder_sequence_length=512,
        add_start_token=False,
        add_end_token=True,
        **kwargs,
    ):
        super().__init__(
            tokenizer=tokenizer,
            encoder_sequence_length=encoder_sequence_length,
            decoder_sequence_length=decoder_sequence_length,
            **kwargs,
        )
        self.add_start_token = add_start_token
        self.add_end_token = add_end_token

    def _lengths(self, encoder_length, decoder_length, sequence_length):
        if encoder_length is None:
            encoder_length = self.encoder_sequence_length
        decoder_length = decoder_length or sequence_length
        if decoder_length is None:
            decoder_length = self.decoder_sequence_length
        return encoder_length, decoder_length

    def _pack_encoder(self, text, length, add_end):
        return self.encoder_packer(
            self.tokenizer(text),
            sequence_length=length,
            add_start_value=self.add_start_token,
            add_end_value=add_end,
        )

    @preprocessing_function
    def call(
        self,
        x,
        y=None,
        sample_weight=None,
        *,
        encoder_sequence_length=None,
        decoder_sequence_length=None,
        sequence_length=None,
    ):
        if not isinstance(x, dict) or not {"encoder_text", "decoder_text"} <= set(x):
            raise ValueError(
                "T5GemmaSeq2SeqLMPreprocessor expects a dict with keys "
                "'encoder_text' and 'decoder_text'. Received: "
                f"{type(x).__name__} {sorted(x) if isinstance(x, dict) else ''}."
            )
        encoder_length, decoder_length = self._lengths(
            encoder_sequence_length, decoder_sequence_length, sequence_length
        )
        encoder_token_ids, encoder_padding_mask = self._pack_encoder(
            x["encoder_text"], encoder_length, self.add_end_token
        )
        decoder_token_ids, decoder_padding_mask = self.decoder_packer(
            self.tokenizer(x["decoder_text"]),
            sequence_length=decoder_length + 1,
            add_start_value=True,
            add_end_value=self.add_end_token,
        )
        x = {
            "encoder_token_ids": encoder_token_ids,
            "encoder_padding_mask": encoder_padding_mask,
            "decoder_token_ids": decoder_token_ids[..., :-1],
            "decoder_padding_mask": decoder_padding_mask[..., :-1],
        }
        y = decoder_token_ids[..., 1:]
        sample_weight = decoder_padding_mask[..., 1:]
        return keras.utils.pack_x_y_sample_weight(x, y, sample_weight)

    @preprocessing_function
    def generate_preprocess(
        self,
        x,
        *,
        encoder_sequence_length=None,
        decoder_sequence_length=None,
        sequence_length=None,
    ):
        if not self.built:
            self.build(None)
        if isinstance(x, dict):
            encoder_text, decoder_text = x["encoder_text"], x["decoder_text"]
        else:
            encoder_text = x
            decoder_text = self._empty_decoder_text(encoder_text)
        encoder_length, decoder_length = self._lengths(
            encoder_sequence_length, decoder_sequence_length, sequence_length
        )
        # The encoder sees exactly what it saw in training (with `<eos>`).
        encoder_token_ids, encoder_padding_mask = self._pack_encoder(
            encoder_text, None, self.add_end_token
        )
        decoder_token_ids, decoder_padding_mask = self.decoder_packer(
            self.tokenizer(decoder_text),
            sequence_length=decoder_length,
            add_start_value=True,
            add_end_value=False,
        )
        return {
            "encoder_token_ids": encoder_token_ids,
            "encoder_padding_mask": encoder_padding_mask,
            "decoder_token_ids": decoder_token_ids,
            "decoder_padding_mask": decoder_padding_mask,
        }

    @classproperty
    def presets(cls):
        """Preset names -> metadata and hub handles."""
        return dict(T5GEMMA_PRESETS)

    @classmethod
    def from_preset(cls, preset, **kwargs):
        """Loads the preprocessor of any preset `T5GemmaBackbone` accepts;
        foreign checkpoints get a default one around their tokenizer."""
        fmt, folder = preset_loader.resolve(preset, cls.presets)
        if fmt == preset_loader.KERAS_ENCDEC:
            return super().from_preset(folder, **kwargs)
        return cls(tokenizer=cls.tokenizer_cls.from_preset(folder), **kwargs)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "encoder_sequence_length": self.encoder_sequence_length,
                "decoder_sequence_length": self.decoder_sequence_length,
                "add_start_token": self.add_start_token,
                "add_end_token": self.add_end_token,
            }
        )
        return config
