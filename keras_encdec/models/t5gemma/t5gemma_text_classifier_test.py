"""T5GemmaTextClassifier: parity with transformers' sequence classifier in
both modes, bit-identical export, own presets and clear errors."""


import keras
import numpy as np
import pytest
from keras import ops

from keras_encdec import testing
from keras_encdec.convert.safetensors_io import SafetensorsReader
from keras_encdec.models import T5GemmaBackbone
from keras_encdec.models import T5GemmaEncoderModel
from keras_encdec.models import T5GemmaTextClassifier
from keras_encdec.models import T5GemmaTextClassifierPreprocessor
from keras_encdec.models import T5GemmaTokenizer

# Windows (3 and 2) shorter than the sequence (11); widths differ per side.
CASE = dict(
    encoder=dict(sliding_window=3, hidden_size=40, head_dim=10),
    decoder=dict(sliding_window=2),
)
LENGTH = 11


def padded_inputs(seed=0):
    """Right padding of several lengths, a full row (exercises the clamp
    of the shifted index) and a left-padded row."""
    rng = np.random.default_rng(seed)
    ids = rng.integers(3, 64, size=(5, LENGTH)).astype("int32")
    mask = np.ones_like(ids)
    mask[1, 8:] = 0
    mask[2, 4:] = 0
    mask[3, 1:] = 0
    mask[4, :3] = 0  # left padding
    return {"token_ids": ids * mask, "padding_mask": mask}


@pytest.mark.parametrize("encoder_only", [True, False])
def test_parity_and_bit_identical_export(tmp_path, encoder_only):
    from transformers import T5GemmaForSequenceClassification

    reference = testing.make_transformers_t5gemma_classifier(
        "sequence", encoder_only=encoder_only, **CASE
    )
    reference.save_pretrained(tmp_path / "hf")
    classifier = T5GemmaTextClassifier.from_preset(str(tmp_path / "hf"))
    assert classifier.encoder_only == encoder_only
    assert classifier.num_classes == 3
    has_decoder = any("decoder" in w.path for w in classifier.weights)
    assert has_decoder == (not encoder_only)

    x = padded_inputs()
    expected = testing.transformers_classifier_logits(
        reference, x["token_ids"], x["padding_mask"]
    )
    actual = ops.convert_to_numpy(classifier(x))
    assert expected.std() > 0.1
    assert np.max(np.abs(actual - expected)) <= 1e-4

    classifier.export_to_transformers(str(tmp_path / "back"))
    original = SafetensorsReader(str(tmp_path / "hf"))
    exported = SafetensorsReader(str(tmp_path / "back"))
    assert sorted(exported.keys()) == sorted(original.keys())
    for name in original.keys():
        assert exported.get(name).tobytes() == original.get(name).tobytes(), name
    reloaded = T5GemmaForSequenceClassification.from_pretrained(
        str(tmp_path / "back"), attn_implementation="eager"
    ).eval()
    assert reloaded.config.is_encoder_decoder == (not encoder_only)
    again = testing.transformers_classifier_logits(
        reloaded, x["token_ids"], x["padding_mask"]
    )
    assert np.max(np.abs(again - expected)) == 0


def test_encoder_only_from_full_checkpoint_reads_only_the_encoder(tmp_path):
    reference = testing.make_transformers_t5gemma(**CASE)
    reference.save_pretrained(tmp_path / "hf")
    classifier = T5GemmaTextClassifier.from_preset(
        str(tmp_path / "hf"), num_classes=2, encoder_only=True
    )
    assert isinstance(classifier.backbone, T5GemmaEncoderModel)
    assert not any("decoder" in w.path for w in classifier.weights)
    x = padded_inputs(1)
    import torch

    with torch.no_grad():
        hidden = reference.model.encoder(
            input_ids=torch.tensor(x["token_ids"], dtype=torch.long),
            attention_mask=torch.tensor(x["padding_mask"]),
        ).last_hidden_state.numpy()
    ours = classifier.backbone(x)["sequence_output"]
    assert np.max(np.abs(ops.convert_to_numpy(ours) - hidden)) <= 1e-4


@pytest.mark.parametrize("encoder_only", [True, False])
def test_own_preset_round_trip_with_raw_strings(tmp_path, encoder_only):
    classifier = T5GemmaTextClassifier.from_preset(
        "t5gemma_tiny_random", num_classes=3, encoder_only=encoder_only
    )
    classifier.preprocessor.sequence_length = 12
    classifier.save_to_preset(str(tmp_path / "preset"))
    restored = T5GemmaTextClassifier.from_preset(str(tmp_path / "preset"))
    assert restored.encoder_only == encoder_only
    assert restored.preprocessor.sequence_length == 12
    # Raw strings through each model's own preprocessor (eager calls).
    text = ["the quick brown fox", "a stitch in time saves nine"]
    expected = ops.convert_to_numpy(classifier(classifier.preprocessor(text)))
    actual = ops.convert_to_numpy(restored(restored.preprocessor(text)))
    assert np.abs(expected).max() > 0
    np.testing.assert_array_equal(actual, expected)
    # A different `num_classes` starts a new head on the same backbone.
    fresh = T5GemmaTextClassifier.from_preset(
        str(tmp_path / "preset"), num_classes=5
    )
    assert tuple(fresh(fresh.preprocessor(text)).shape) == (2, 5)


@pytest.mark.skipif(
    keras.backend.backend() != "jax", reason="argument checks, backend-free"
)
def test_clear_errors(tmp_path):
    encoder = T5GemmaEncoderModel.from_preset("t5gemma_tiny_random")
    with pytest.raises(ValueError, match="encoder_only=False does not fit"):
        T5GemmaTextClassifier(encoder, num_classes=2, encoder_only=False)
    with pytest.raises(ValueError, match="num_classes` must be a positive"):
        T5GemmaTextClassifier(encoder, num_classes=0)
    with pytest.raises(ValueError, match="`num_classes` is needed"):
        T5GemmaTextClassifier.from_preset("t5gemma_tiny_random")
    classifier = T5GemmaTextClassifier(encoder, num_classes=2)
    with pytest.raises(ValueError, match="Received: \\['token_ids'\\]"):
        classifier({"token_ids": np.ones((1, 3), "int32")})
    reference = testing.make_transformers_t5gemma_classifier(
        "sequence", encoder_only=True, **CASE
    )
    reference.save_pretrained(tmp_path / "hf")
    with pytest.raises(ValueError, match="head trained encoder-only"):
        T5GemmaTextClassifier.from_preset(str(tmp_path / "hf"), encoder_only=False)


@pytest.mark.skipif(
    keras.backend.backend() != "jax", reason="tokenization, backend-free"
)
def test_preprocessor_packs_bos_text_eos():
    tokenizer = T5GemmaTokenizer(proto=testing.train_sentencepiece(64))
    preprocessor = T5GemmaTextClassifierPreprocessor(tokenizer, sequence_length=16)
    x, y = preprocessor(["the quick fox", "a"], [1, 0])
    body = [int(i) for i in tokenizer("the quick fox")]
    packed = [2] + body + [1]
    assert len(packed) < 16
    expected = packed + [0] * (16 - len(packed))
    assert np.asarray(x["token_ids"])[0].tolist() == expected
    mask = np.asarray(x["padding_mask"]).astype(int)[0].tolist()
    assert mask == [1] * len(packed) + [0] * (16 - len(packed))
    assert sorted(x) == ["padding_mask", "token_ids"]
    assert np.asarray(y).tolist() == [1, 0]


def test_encoder_decoder_needs_a_full_backbone():
    backbone = T5GemmaBackbone.from_preset("t5gemma_tiny_random")
    with pytest.raises(ValueError, match="encoder_only=True does not fit"):
        T5GemmaTextClassifier(backbone, num_classes=2, encoder_only=True)
