"""T5Gemma SentencePiece tokenizer."""

from keras_hub.src.utils.python_utils import classproperty
from keras_hub.tokenizers import SentencePieceTokenizer

from keras_encdec.api import register
from keras_encdec.convert import preset_loader
from keras_encdec.errors import MissingTokenizerError
from keras_encdec.models.t5gemma.t5gemma_backbone import T5GemmaBackbone
from keras_encdec.models.t5gemma.t5gemma_presets import T5GEMMA_PRESETS
from keras_encdec.utils.quiet import native_stderr_filter


@register
class T5GemmaTokenizer(SentencePieceTokenizer):
    """Gemma's SentencePiece tokenizer with `<bos>`, `<eos>` and `<pad>`.

    Args:
        proto: str or bytes. A path to a SentencePiece `.model` file, or its
            serialized bytes. The vocabulary must contain `<bos>`, `<eos>`
            and `<pad>`.
        **kwargs: passed to `keras_hub.models.SentencePieceTokenizer`.

    Examples:

    >>> import io, sentencepiece
    >>> buffer = io.BytesIO()
    >>> sentencepiece.SentencePieceTrainer.train(
    ...     sentence_iterator=iter(["the quick brown fox jumped"] * 10),
    ...     model_writer=buffer, vocab_size=9, model_type="WORD",
    ...     pad_id=0, eos_id=1, bos_id=2, unk_id=3, pad_piece="<pad>",
    ...     eos_piece="<eos>", bos_piece="<bos>", unk_piece="<unk>")
    >>> tokenizer = T5GemmaTokenizer(proto=buffer.getvalue())
    >>> tokenizer.detokenize(tokenizer("the quick fox"))
    'the quick fox'
    """

    backbone_cls = T5GemmaBackbone

    def __init__(self, proto, **kwargs):
        self._add_special_token("<bos>", "start_token")
        self._add_special_token("<eos>", "end_token")
        self._add_special_token("<pad>", "pad_token")
        super().__init__(proto=proto, **kwargs)

    def set_proto(self, proto):
        # Building the SentencePiece op prints TensorFlow's device probing
        # and SentencePiece's normalizer notice from C++; drop those two.
        with native_stderr_filter():
            super().set_proto(proto)

    @classproperty
    def presets(cls):
        """Preset names -> metadata and hub handles."""
        return dict(T5GEMMA_PRESETS)

    @classmethod
    def from_preset(cls, preset, **kwargs):
        """Loads the tokenizer of any preset `T5GemmaBackbone` accepts.

        Raises `keras_encdec.errors.MissingTokenizerError` (a
        `FileNotFoundError`) naming the folder when a transformers or
        keras-hub checkpoint carries no SentencePiece model.
        """
        fmt, folder = preset_loader.resolve(preset, cls.presets)
        if fmt == preset_loader.KERAS_ENCDEC:
            return super().from_preset(folder, **kwargs)
        proto = preset_loader.foreign_tokenizer_file(fmt, folder)
        if proto is None:
            raise MissingTokenizerError(
                f"No tokenizer in '{folder}'. Expected 'tokenizer.model' (a "
                "SentencePiece model) beside the weights."
            )
        return cls(proto=proto, **kwargs)
