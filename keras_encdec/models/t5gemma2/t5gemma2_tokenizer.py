"""T5Gemma 2 SentencePiece tokenizer (Gemma 3 vocabulary)."""

from keras_hub.src.utils.python_utils import classproperty

from keras_encdec.api import register
from keras_encdec.models.t5gemma.t5gemma_tokenizer import T5GemmaTokenizer
from keras_encdec.models.t5gemma2.t5gemma2_backbone import T5Gemma2Backbone
from keras_encdec.models.t5gemma2.t5gemma2_presets import T5GEMMA2_PRESETS

IMAGE_TOKENS = ("<start_of_image>", "<end_of_image>", "<image_soft_token>")


@register
class T5Gemma2Tokenizer(T5GemmaTokenizer):
    """Gemma 3's SentencePiece tokenizer (262k ids with image tokens).

    `<bos>`, `<eos>` and `<pad>` are required; the image tokens
    (`<start_of_image>`, `<end_of_image>`, `<image_soft_token>`) are looked
    up when the vocabulary has them (`image_token_ids()`).

    Args:
        proto: str or bytes. A path to a SentencePiece `.model` file, or its
            serialized bytes.
        **kwargs: passed to `keras_hub.models.SentencePieceTokenizer`.

    Examples:

    >>> from keras_encdec.testing import train_sentencepiece
    >>> tokenizer = T5Gemma2Tokenizer(proto=train_sentencepiece())
    >>> tokenizer.detokenize(tokenizer("the quick brown fox"))
    'the quick brown fox'
    """

    backbone_cls = T5Gemma2Backbone

    @classproperty
    def presets(cls):
        """Preset names -> metadata and hub handles."""
        return dict(T5GEMMA2_PRESETS)

    def image_token_ids(self):
        """`{token: id}` for the image tokens this vocabulary holds."""
        ids = {}
        for token in IMAGE_TOKENS:
            token_id = self.token_to_id(token)
            if self.id_to_token(token_id) == token:  # unknown tokens map to <unk>
                ids[token] = token_id
        return ids
