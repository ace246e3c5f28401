"""Raw images -> pixel values, against transformers' Gemma 3 image processor.

Tolerance: transformers (PIL backend here: torchvision is not installed)
resizes with PIL's antialiased bilinear filter and rounds the resized image
to uint8 before normalising; ours resizes in float with Keras' antialiased
bilinear resize. The rounding alone moves a value by up to half a uint8
level and the filters' float arithmetic by a little more, so the bound is
one uint8 level on the [-1, 1] scale: 2 / 255 (~0.0078).
"""

import keras
import numpy as np
import pytest

from keras_encdec import testing
from keras_encdec.models import T5Gemma2Backbone
from keras_encdec.models import T5Gemma2Seq2SeqLM
from keras_encdec.models.t5gemma2.t5gemma2_image_converter import (
    T5Gemma2ImageConverter,
)
from keras_encdec.models.t5gemma2.t5gemma2_seq_2_seq_lm_preprocessor import (
    T5Gemma2Seq2SeqLMPreprocessor,
)
from keras_encdec.models.t5gemma2.t5gemma2_tokenizer import IMAGE_TOKENS
from keras_encdec.models.t5gemma2.t5gemma2_tokenizer import T5Gemma2Tokenizer

SIZE = 28
ONE_UINT8_LEVEL = 2.0 / 255.0
# Down- and up-sampling, square and both aspect ratios, odd sizes.
IMAGE_SHAPES = [(50, 37), (20, 90), (28, 28), (13, 17), (300, 200), (29, 27)]


def _images(seed=0):
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for h, w in IMAGE_SHAPES]


def test_matches_transformers_gemma3_image_processor():
    from transformers.models.gemma3.image_processing_pil_gemma3 import (
        Gemma3ImageProcessorPil,
    )

    processor = Gemma3ImageProcessorPil(size={"height": SIZE, "width": SIZE})
    images = _images()
    actual = T5Gemma2ImageConverter(SIZE).convert(images)
    assert actual.shape == (len(images), SIZE, SIZE, 3)
    for image, pixels in zip(images, actual):
        expected = processor(images=image, return_tensors="np")["pixel_values"]
        expected = expected[0].transpose(1, 2, 0)
        error = np.max(np.abs(pixels - expected))
        assert error <= ONE_UINT8_LEVEL, f"{image.shape}: max-abs {error:.4g}"


@pytest.mark.skipif(
    keras.backend.backend() != "jax", reason="backend-independent checks"
)
def test_bad_images_raise():
    converter = T5Gemma2ImageConverter(SIZE)
    with pytest.raises(ValueError, match=r"rank 2"):
        converter.convert([np.zeros((4, 4), "uint8")])
    with pytest.raises(ValueError, match=r"3 \(RGB\) channels.*\(4, 4, 4\)"):
        converter.convert([np.zeros((4, 4, 4), "uint8")])
    with pytest.raises(TypeError, match="dtype int32"):
        converter.convert([np.zeros((4, 4, 3), "int32")])
    with pytest.raises(ValueError, match="wrap it in a list"):
        converter.convert(np.zeros((4, 4, 3), "uint8"))
    preprocessor = _preprocessor()
    with pytest.raises(ValueError, match="same number of images"):
        preprocessor.generate_preprocess({
            "encoder_text": ["a", "b"],
            "images": [[_images()[0]], _images()[:2]],
        })
    with pytest.raises(ValueError, match="for 2 examples"):
        preprocessor.generate_preprocess(
            {"encoder_text": ["a", "b"], "images": _images()[:3]}
        )


def _preprocessor():
    tokenizer = T5Gemma2Tokenizer(proto=testing.train_sentencepiece(
        64, user_defined_symbols=list(IMAGE_TOKENS)
    ))
    return T5Gemma2Seq2SeqLMPreprocessor(
        tokenizer,
        image_converter=T5Gemma2ImageConverter(SIZE),
        mm_tokens_per_image=4,
        encoder_sequence_length=24,
        decoder_sequence_length=8,
    )


def test_generate_from_raw_images():
    preprocessor = _preprocessor()
    ids = preprocessor.tokenizer.image_token_ids()
    backbone = T5Gemma2Backbone(
        vocabulary_size=preprocessor.tokenizer.vocabulary_size(),
        hidden_dim=16, encoder_intermediate_dim=32, encoder_num_layers=1,
        encoder_num_heads=2, encoder_num_kv_heads=1, encoder_head_dim=8,
        decoder_intermediate_dim=32, decoder_num_layers=1,
        decoder_num_heads=2, decoder_num_kv_heads=1, decoder_head_dim=8,
        encoder_layer_types=["full_attention"],
        decoder_layer_types=["full_attention"],
        eoi_token_index=ids["<end_of_image>"],
        image_token_index=ids["<image_soft_token>"],
        vision_config=dict(image_size=SIZE, patch_size=7, hidden_dim=16,
                           num_layers=1, num_heads=2, intermediate_dim=32),
        mm_tokens_per_image=4,
    )
    lm = T5Gemma2Seq2SeqLM(backbone, preprocessor)
    images = _images()
    x = preprocessor.generate_preprocess(
        {"encoder_text": ["the fox", "a dog"], "images": [images[0], images[1]]}
    )
    pixels = keras.ops.convert_to_numpy(x["pixel_values"])
    np.testing.assert_array_equal(
        pixels[:, 0], preprocessor.image_converter.convert(images[:2])
    )
    row = keras.ops.convert_to_numpy(x["encoder_token_ids"])[0].tolist()
    assert row[:6] == [ids["<start_of_image>"]] + [ids["<image_soft_token>"]] * 4 + [
        ids["<end_of_image>"]
    ]
    # Training batches carry the pixels too.
    batch, _, _ = preprocessor({
        "encoder_text": ["the fox"], "decoder_text": ["a dog"],
        "images": [images[2]],
    })
    assert tuple(batch["pixel_values"].shape) == (1, 1, SIZE, SIZE, 3)
    lm.compile(sampler="greedy")
    output = lm.generate(
        {"encoder_text": "the fox", "images": images[3]}, max_length=6
    )
    assert isinstance(output[0] if isinstance(output, list) else output, str)
