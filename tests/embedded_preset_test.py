"""The embedded preset `t5gemma_tiny_random` loads offline by name.

The preset folder (`keras_encdec/presets/t5gemma_tiny_random`) is written by
`tools/make_embedded_preset.py`.
"""

import os

import numpy as np
import pytest
from keras import ops

from keras_encdec.convert import preset_loader
from keras_encdec.models import T5GemmaBackbone
from keras_encdec.models import T5GemmaSeq2SeqLM
from keras_encdec.models import T5GemmaSeq2SeqLMPreprocessor
from keras_encdec.models import T5GemmaTokenizer
from keras_encdec.models.t5gemma.t5gemma_presets import EMBEDDED_PRESET
from keras_encdec.models.t5gemma.t5gemma_presets import T5GEMMA_PRESETS
from keras_encdec.models.t5gemma.t5gemma_presets import count_parameters

PROMPT = "the quick brown fox"


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    """Any download attempt fails the test."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")

    def no_download(handle):
        raise AssertionError(f"Tried to download {handle!r}.")

    monkeypatch.setattr(preset_loader, "download", no_download)


@pytest.fixture(scope="module")
def lm():
    lm = T5GemmaSeq2SeqLM.from_preset(EMBEDDED_PRESET)
    lm.compile(sampler="greedy")
    return lm


@pytest.fixture(scope="module")
def generated(lm):
    """The greedy generation for `PROMPT` (compiled once per module)."""
    return lm.generate(PROMPT, max_length=24)


def batch(lm, texts):
    x, _, _ = lm.preprocessor(
        {"encoder_text": texts, "decoder_text": texts},
        sequence_length=16,
        encoder_sequence_length=16,
    )
    return x


def test_registry_entry():
    entry = T5GEMMA_PRESETS[EMBEDDED_PRESET]
    folder = entry["path"]
    assert os.path.isfile(os.path.join(folder, "model.weights.h5"))
    size = sum(
        os.path.getsize(os.path.join(root, name))
        for root, _, names in os.walk(folder)
        for name in names
    )
    assert size < 2 * 1024**2
    metadata = entry["metadata"]
    assert "tools/make_embedded_preset.py" in metadata["description"]
    assert metadata["params"] == 222592
    assert T5GemmaBackbone.presets[EMBEDDED_PRESET]["metadata"]["params"] == (
        222592
    )


def test_loads_by_name(lm):
    backbone = lm.backbone
    assert isinstance(lm, T5GemmaSeq2SeqLM)
    assert backbone.count_params() == 222592
    assert count_parameters(backbone.get_config()) == 222592
    assert (backbone.encoder_hidden_dim, backbone.decoder_num_layers) == (64, 2)
    assert backbone.encoder_layer_types == ["sliding_attention", "full_attention"]
    assert backbone.decoder_sliding_window == 16
    assert backbone.final_logit_soft_cap == 30.0
    tokenizer = lm.preprocessor.tokenizer
    assert backbone.vocabulary_size == tokenizer.vocabulary_size() == 384


def test_components_load_by_name(lm):
    backbone = T5GemmaBackbone.from_preset(EMBEDDED_PRESET)
    assert len(backbone.weights) == len(lm.backbone.weights) == 60
    for a, b in zip(backbone.weights, lm.backbone.weights):
        np.testing.assert_array_equal(
            ops.convert_to_numpy(a), ops.convert_to_numpy(b)
        )
    tokenizer = T5GemmaTokenizer.from_preset(EMBEDDED_PRESET)
    ids = tokenizer(PROMPT)
    assert tokenizer.detokenize(ids) == PROMPT
    assert [tokenizer.token_to_id(t) for t in ("<pad>", "<eos>", "<bos>")] == [
        0, 1, 2,
    ]
    preprocessor = T5GemmaSeq2SeqLMPreprocessor.from_preset(EMBEDDED_PRESET)
    x = preprocessor.generate_preprocess([PROMPT])
    encoder_ids = np.asarray(x["encoder_token_ids"])[0]
    assert encoder_ids[: len(ids)].tolist() == np.asarray(ids).tolist()
    assert np.asarray(x["decoder_token_ids"])[0, 0] == 2  # Starts with <bos>.


def test_generate_string(generated):
    assert isinstance(generated, str)
    # Trained to continue its text: the continuation comes from it.
    assert "lazy dog" in generated


def test_save_to_preset_round_trip(lm, generated, tmp_path):
    lm.save_to_preset(str(tmp_path))
    restored = T5GemmaSeq2SeqLM.from_preset(str(tmp_path))
    x = batch(lm, [PROMPT, "a stitch in time"])
    logits = ops.convert_to_numpy(lm(x))
    restored_logits = ops.convert_to_numpy(restored(x))
    assert logits.shape == (2, 16, 384)
    assert np.max(np.abs(logits - restored_logits)) == 0.0

    # Identical greedy generations.
    restored.compile(sampler="greedy")
    assert restored.generate(PROMPT, max_length=24) == generated
