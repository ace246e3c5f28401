"""T5GemmaTokenClassifier: parity with transformers' token classifier in
both modes, bit-identical export, own presets and its preprocessor."""

import keras
import numpy as np
import pytest
from keras import ops

from keras_encdec import testing
from keras_encdec.convert.safetensors_io import SafetensorsReader
from keras_encdec.models import T5GemmaTokenClassifier
from keras_encdec.models import T5GemmaTokenClassifierPreprocessor
from keras_encdec.models import T5GemmaTokenizer

CASE = dict(
    encoder=dict(sliding_window=3, hidden_size=40, head_dim=10),
    decoder=dict(sliding_window=2),
)


@pytest.mark.parametrize("encoder_only", [True, False])
def test_parity_and_bit_identical_export(tmp_path, encoder_only):
    from transformers import T5GemmaForTokenClassification

    reference = testing.make_transformers_t5gemma_classifier(
        "token", encoder_only=encoder_only, num_labels=4, **CASE
    )
    reference.save_pretrained(tmp_path / "hf")
    classifier = T5GemmaTokenClassifier.from_preset(str(tmp_path / "hf"))
    assert (classifier.encoder_only, classifier.num_classes) == (encoder_only, 4)

    batch = testing.random_batch(3, 10, 1, 64, padded=True, seed=5)
    ids, mask = batch["encoder_token_ids"], batch["encoder_padding_mask"]
    expected = testing.transformers_classifier_logits(reference, ids, mask)
    actual = ops.convert_to_numpy(
        classifier({"token_ids": ids, "padding_mask": mask})
    )
    assert actual.shape == (3, 10, 4)
    assert expected.std() > 0.1
    # Every position, padding included, as transformers computes it.
    assert np.max(np.abs(actual - expected)) <= 1e-4

    classifier.export_to_transformers(str(tmp_path / "back"))
    original = SafetensorsReader(str(tmp_path / "hf"))
    exported = SafetensorsReader(str(tmp_path / "back"))
    assert sorted(exported.keys()) == sorted(original.keys())
    for name in original.keys():
        assert exported.get(name).tobytes() == original.get(name).tobytes(), name
    reloaded = T5GemmaForTokenClassification.from_pretrained(
        str(tmp_path / "back"), attn_implementation="eager"
    ).eval()
    again = testing.transformers_classifier_logits(reloaded, ids, mask)
    assert np.max(np.abs(again - expected)) == 0


def test_own_preset_round_trip(tmp_path):
    classifier = T5GemmaTokenClassifier.from_preset(
        "t5gemma_tiny_random", num_classes=3, encoder_only=True
    )
    classifier.save_to_preset(str(tmp_path / "preset"))
    restored = T5GemmaTokenClassifier.from_preset(str(tmp_path / "preset"))
    classifier.preprocessor.sequence_length = 12
    x = classifier.preprocessor(["the quick brown fox"])
    expected = ops.convert_to_numpy(classifier(x))
    assert np.abs(expected).max() > 0
    np.testing.assert_array_equal(ops.convert_to_numpy(restored(x)), expected)


@pytest.mark.skipif(
    keras.backend.backend() != "jax", reason="tokenization, backend-free"
)
def test_preprocessor_weights_padding_and_checks_label_shape():
    tokenizer = T5GemmaTokenizer(proto=testing.train_sentencepiece(64))
    preprocessor = T5GemmaTokenClassifierPreprocessor(tokenizer, sequence_length=8)
    labels = np.arange(16).reshape(2, 8) % 3
    x, y, weight = preprocessor(["the quick fox", "a"], labels)
    np.testing.assert_array_equal(np.asarray(y), labels)
    np.testing.assert_array_equal(
        np.asarray(weight), np.asarray(x["padding_mask"]).astype("float32")
    )
    assert np.asarray(weight)[1].sum() < 8
    with pytest.raises(ValueError, match="shape \\[batch, sequence_length\\]"):
        preprocessor(["a"], np.zeros((1, 5), "int32"))
