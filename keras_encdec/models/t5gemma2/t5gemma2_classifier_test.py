"""T5Gemma2TextClassifier / T5Gemma2TokenClassifier: parity with
transformers' T5Gemma 2 heads, bit-identical export and clear errors."""

import keras
import numpy as np
import pytest
from keras import ops

from keras_encdec import testing
from keras_encdec.convert import transformers_t5gemma2 as hf2
from keras_encdec.convert.safetensors_io import SafetensorsReader
from keras_encdec.models import T5Gemma2Backbone
from keras_encdec.models import T5Gemma2TextClassifier
from keras_encdec.models import T5Gemma2TokenClassifier
from keras_encdec.models import T5GemmaBackbone

# Windows (3 and 2) shorter than the sequence (11).
CASE = dict(encoder=dict(sliding_window=3), decoder=dict(sliding_window=2))
LENGTH = 11
CLASSES = {"sequence": T5Gemma2TextClassifier, "token": T5Gemma2TokenClassifier}


def padded_inputs(seed=0):
    """Right padding of several lengths, a full row (the clamp of the
    shifted index) and a left-padded row."""
    rng = np.random.default_rng(seed)
    ids = rng.integers(3, 60, size=(5, LENGTH)).astype("int32")
    mask = np.ones_like(ids)
    mask[1, 8:] = 0
    mask[2, 4:] = 0
    mask[3, 1:] = 0
    mask[4, :3] = 0  # left padding
    return {"token_ids": ids * mask, "padding_mask": mask}


def text_keys(folder):
    """Checkpoint keys a text-only classifier holds (no vision tower, no
    tied copies)."""
    return sorted(
        key
        for key in SafetensorsReader(folder).keys()
        if not key.startswith(hf2.VISION_PREFIXES) and key not in hf2.TIED_COPIES
    )


@pytest.mark.parametrize("task", ["sequence", "token"])
def test_parity_and_bit_identical_export(tmp_path, task):
    import transformers

    reference = testing.make_transformers_t5gemma2_classifier(task, **CASE)
    reference.save_pretrained(tmp_path / "hf")
    classifier = CLASSES[task].from_preset(str(tmp_path / "hf"))
    assert classifier.num_classes == 3 and not classifier.encoder_only
    assert classifier.backbone.vision_encoder is None

    x = padded_inputs()
    expected = testing.transformers_classifier_logits(
        reference, x["token_ids"], x["padding_mask"]
    )
    actual = ops.convert_to_numpy(classifier(x))
    assert actual.shape == expected.shape
    assert expected.std() > 0.1
    # Every row and (token head) every position, pads included.
    assert np.max(np.abs(actual - expected)) <= 1e-4

    classifier.export_to_transformers(str(tmp_path / "back"))
    original = SafetensorsReader(str(tmp_path / "hf"))
    exported = SafetensorsReader(str(tmp_path / "back"))
    assert sorted(exported.keys()) == text_keys(str(tmp_path / "hf"))
    for name in exported.keys():
        assert exported.get(name).tobytes() == original.get(name).tobytes(), name
    model_cls = getattr(transformers, type(reference).__name__)
    reloaded = model_cls.from_pretrained(
        str(tmp_path / "back"), attn_implementation="eager"
    ).eval()
    again = testing.transformers_classifier_logits(
        reloaded, x["token_ids"], x["padding_mask"]
    )
    assert np.max(np.abs(again - expected)) == 0


@pytest.mark.skipif(keras.backend.backend() != "jax", reason="backend-free")
def test_new_head_from_plain_checkpoint_and_errors(tmp_path):
    reference = testing.make_transformers_t5gemma2(**CASE)
    reference.save_pretrained(tmp_path / "lm")
    folder = str(tmp_path / "lm")
    with pytest.raises(ValueError, match="num_classes"):
        T5Gemma2TextClassifier.from_preset(folder)
    with pytest.raises(ValueError, match="encoder-decoder only"):
        T5Gemma2TextClassifier.from_preset(folder, num_classes=2, encoder_only=True)
    classifier = T5Gemma2TokenClassifier.from_preset(folder, num_classes=4)
    backbone = T5Gemma2Backbone.from_preset(folder, text_only=True)
    for ours, theirs in zip(classifier.backbone.weights, backbone.weights):
        np.testing.assert_array_equal(
            ops.convert_to_numpy(ours), ops.convert_to_numpy(theirs)
        )
    # Our own task preset brings the head back.
    classifier.save_to_preset(str(tmp_path / "ours"))
    again = T5Gemma2TokenClassifier.from_preset(str(tmp_path / "ours"))
    assert again.num_classes == 4
    x = padded_inputs()
    np.testing.assert_array_equal(
        ops.convert_to_numpy(again(x)), ops.convert_to_numpy(classifier(x))
    )
    with pytest.raises(ValueError, match="encoder_only=True"):
        T5Gemma2TokenClassifier(backbone, num_classes=2, encoder_only=True)
    t5gemma = T5GemmaBackbone(
        vocabulary_size=16, encoder_hidden_dim=8, encoder_intermediate_dim=8,
        encoder_num_layers=1, encoder_num_heads=1, encoder_num_kv_heads=1,
        encoder_head_dim=8, decoder_hidden_dim=8, decoder_intermediate_dim=8,
        decoder_num_layers=1, decoder_num_heads=1, decoder_num_kv_heads=1,
        decoder_head_dim=8,
    )
    with pytest.raises(TypeError, match="T5Gemma2Backbone"):
        T5Gemma2TextClassifier(t5gemma, num_classes=2)
