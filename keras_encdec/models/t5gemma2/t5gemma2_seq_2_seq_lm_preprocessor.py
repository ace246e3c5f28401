"""T5Gemma 2 preprocessor: strings (and raw images) to model inputs."""

import keras
import numpy as np
from keras import ops
from keras_hub.src.utils.python_utils import classproperty

from keras_encdec.api import register
from keras_encdec.models.t5gemma.t5gemma_seq_2_seq_lm_preprocessor import (
    T5GemmaSeq2SeqLMPreprocessor,
)
from keras_encdec.models.t5gemma2.t5gemma2_backbone import T5Gemma2Backbone
from keras_encdec.models.t5gemma2.t5gemma2_config import PIXEL_VALUES
from keras_encdec.models.t5gemma2.t5gemma2_image_converter import (
    T5Gemma2ImageConverter,
)
from keras_encdec.models.t5gemma2.t5gemma2_presets import T5GEMMA2_PRESETS
from keras_encdec.models.t5gemma2.t5gemma2_tokenizer import IMAGE_TOKENS
from keras_encdec.models.t5gemma2.t5gemma2_tokenizer import T5Gemma2Tokenizer


@register
class T5Gemma2Seq2SeqLMPreprocessor(T5GemmaSeq2SeqLMPreprocessor):
    """Tokenizes and packs `{"encoder_text", "decoder_text"}` for T5Gemma 2.

    The packing is T5Gemma's (`T5GemmaSeq2SeqLMPreprocessor`): the encoder
    gets `text <eos>` (`<bos>` first with `add_start_token=True`), the
    decoder input `<bos> target` and the labels `target <eos>`; `generate`
    starts the decoder from `<bos>` (id 2).

    With an `image_converter`, the input dict may also hold `"images"`: per
    example one raw image (uint8 or float 0-255 `[H, W, 3]`, any size) or a
    list of them (the same count in every example), or an array
    `[batch, H, W, 3]` / `[batch, num_images, H, W, 3]`. Images are resized
    and normalised as transformers' Gemma 3 image processor does (see
    `T5Gemma2ImageConverter`) into `pixel_values`
    `[batch, num_images, size, size, 3]`, and each image puts
    `<start_of_image>`, `mm_tokens_per_image` x `<image_soft_token>`,
    `<end_of_image>` before the encoder text (the tokenizer must hold these
    tokens, with the backbone's `image_token_index` / `eoi_token_index`
    ids). Images are read eagerly (lists or numpy, not `tf.data`).

    Args:
        tokenizer: `keras_encdec.models.T5Gemma2Tokenizer`.
        image_converter: `T5Gemma2ImageConverter` or None. Defaults to
            `None` (text only).
        mm_tokens_per_image: int or None. Image tokens per image (the
            backbone's); required with `image_converter`. Defaults to
            `None`.
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
    image_converter_cls = T5Gemma2ImageConverter

    def __init__(
        self, tokenizer, image_converter=None, mm_tokens_per_image=None, **kwargs
    ):
        super().__init__(tokenizer=tokenizer, **kwargs)
        if image_converter is not None and not mm_tokens_per_image:
            raise ValueError(
                "`mm_tokens_per_image` (the backbone's) is required with an "
                f"`image_converter`. Received: {mm_tokens_per_image!r}."
            )
        self.image_converter = image_converter
        self.mm_tokens_per_image = mm_tokens_per_image

    def _image_prefix_ids(self):
        ids = self.tokenizer.image_token_ids()
        missing = [t for t in IMAGE_TOKENS if t not in ids]
        if missing:
            raise ValueError(
                f"The tokenizer lacks the image tokens {missing}; images "
                f"need {list(IMAGE_TOKENS)} in its vocabulary."
            )
        boi, eoi, image = (ids[t] for t in IMAGE_TOKENS)
        return [boi] + [image] * self.mm_tokens_per_image + [eoi]

    def _pack_encoder(self, text, length, add_end):
        tokens = self.tokenizer(text)
        if getattr(self, "_num_images", 0):
            import tensorflow as tf

            if not isinstance(tokens, (tf.Tensor, tf.RaggedTensor)):
                tokens = tf.ragged.constant(tokens, dtype="int32")
            prefix = self._image_prefix_ids() * self._num_images
            prefix = tf.tile(tf.constant([prefix], tokens.dtype), [tokens.nrows(), 1])
            tokens = tf.concat([tf.RaggedTensor.from_tensor(prefix), tokens], 1)
        return self.encoder_packer(
            tokens,
            sequence_length=length,
            add_start_value=self.add_start_token,
            add_end_value=add_end,
        )

    def _split_images(self, x):
        """Pops `"images"` from `x`; returns `(x, pixel_values or None)`.
        `_pack_encoder` puts the image tokens before each encoder text."""
        if not isinstance(x, dict) or "images" not in x:
            return x, None
        if self.image_converter is None:
            raise ValueError(
                "This preprocessor has no `image_converter`, so it cannot "
                "take 'images'. Build it with `image_converter="
                "T5Gemma2ImageConverter(image_size)` and `mm_tokens_per_image`."
            )
        x = dict(x)
        images = x.pop("images")
        texts = x["encoder_text"]
        if isinstance(texts, (str, bytes)):
            texts = [texts]
        texts = [_to_str(t) for t in texts]
        per_example = _image_lists(images, len(texts))
        counts = sorted({len(row) for row in per_example})
        if len(counts) != 1:
            raise ValueError(
                "Every example needs the same number of images. Received "
                f"counts {counts}."
            )
        self._image_prefix_ids()  # The tokenizer must hold the tokens.
        x["encoder_text"] = texts
        pixels = np.stack(
            [self.image_converter.convert(row) for row in per_example]
        )
        return x, pixels

    def _check_image_tokens(self, x, pixels):
        expected = pixels.shape[1] * self.mm_tokens_per_image
        ids = ops.convert_to_numpy(x["encoder_token_ids"])
        counts = (ids == self.tokenizer.image_token_ids()[IMAGE_TOKENS[2]]).sum(-1)
        if np.any(counts != expected):
            raise ValueError(
                f"Each encoder row needs {expected} image tokens; after "
                f"packing they hold {counts.tolist()}. Raise "
                "`encoder_sequence_length` so the images fit."
            )
        return dict(x, **{PIXEL_VALUES: ops.convert_to_tensor(pixels)})

    def call(self, x, y=None, sample_weight=None, **kwargs):
        x, pixels = self._split_images(x)
        self._num_images = 0 if pixels is None else pixels.shape[1]
        try:
            output = super().call(x, y, sample_weight, **kwargs)
        finally:
            self._num_images = 0
        if pixels is None:
            return output
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(output)
        x = self._check_image_tokens(x, pixels)
        return keras.utils.pack_x_y_sample_weight(x, y, sample_weight)

    def generate_preprocess(self, x, **kwargs):
        x, pixels = self._split_images(x)
        if pixels is not None and "decoder_text" not in x:
            x = x["encoder_text"]
        self._num_images = 0 if pixels is None else pixels.shape[1]
        try:
            output = super().generate_preprocess(x, **kwargs)
        finally:
            self._num_images = 0
        if pixels is None:
            return output
        return self._check_image_tokens(output, pixels)

    def get_config(self):
        config = super().get_config()
        config["mm_tokens_per_image"] = self.mm_tokens_per_image
        return config

    @classproperty
    def presets(cls):
        """Preset names -> metadata and hub handles."""
        return dict(T5GEMMA2_PRESETS)


def _to_str(text):
    text = np.asarray(text).item() if not isinstance(text, (str, bytes)) else text
    return text.decode("utf-8") if isinstance(text, bytes) else str(text)


def _image_lists(images, batch):
    """Raw images in any accepted layout -> one list of images per example."""
    if isinstance(images, np.ndarray) and images.ndim in (4, 5):
        if len(images) != batch:
            raise ValueError(
                f"'images' holds {len(images)} examples for {batch} texts."
            )
        return [list(row) if images.ndim == 5 else [row] for row in images]
    if isinstance(images, np.ndarray) and images.ndim == 3 and batch == 1:
        return [[images]]
    if isinstance(images, (list, tuple)) and len(images) == batch:
        return [
            list(row) if isinstance(row, (list, tuple)) else [row]
            for row in images
        ]
    shape = getattr(images, "shape", None)
    raise ValueError(
        f"'images' must give one image (or list of images) per example, for "
        f"{batch} examples. Received: {type(images).__name__}"
        f"{f' of shape {shape}' if shape is not None else ''}"
        f"{f' of length {len(images)}' if isinstance(images, (list, tuple)) else ''}. "
        "Expected a list of [H, W, 3] arrays (or of lists of them), or an "
        "array [batch, H, W, 3] / [batch, num_images, H, W, 3]."
    )
