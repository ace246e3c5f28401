"""`from_preset` on bad input: each error names what it received and what
it expected, and says how to fix it."""

import json
import os

import huggingface_hub
import pytest

from keras_encdec.convert.preset_loader import PresetDownloadError
from keras_encdec.convert.safetensors_io import CheckpointError
from keras_encdec.convert.weight_mapping import WeightMismatchError
from keras_encdec.models import T5GemmaBackbone
from keras_encdec.models import T5GemmaSeq2SeqLM
from keras_encdec.testing import make_transformers_t5gemma


@pytest.fixture(scope="module")
def transformers_folder(tmp_path_factory):
    """A tiny transformers T5Gemma checkpoint (hidden 32, 2+2 blocks)."""
    folder = tmp_path_factory.mktemp("transformers")
    make_transformers_t5gemma().save_pretrained(folder)
    return folder


def copy_folder(source, target, skip=()):
    os.makedirs(target, exist_ok=True)
    for name in os.listdir(source):
        if name not in skip:
            with open(os.path.join(source, name), "rb") as f:
                data = f.read()
            with open(os.path.join(target, name), "wb") as f:
                f.write(data)
    return target


def edit_config(folder, edit):
    path = os.path.join(folder, "config.json")
    with open(path) as f:
        config = json.load(f)
    edit(config)
    with open(path, "w") as f:
        json.dump(config, f)


def test_unknown_name_is_named_with_known_names():
    with pytest.raises(ValueError) as info:
        T5GemmaSeq2SeqLM.from_preset("t5gemma_2b_2b_prefix_it")
    message = str(info.value)
    assert "Unknown preset 't5gemma_2b_2b_prefix_it'" in message
    assert "Did you mean 't5gemma_2b_2b_prefixlm_it'" in message
    assert "Known names (33" in message
    assert "t5gemma_tiny_random" in message and "t5gemma_9b_2b_ul2" in message


def test_unknown_name_without_close_match():
    with pytest.raises(ValueError, match="Unknown preset 'bert_base_en'") as info:
        T5GemmaBackbone.from_preset("bert_base_en")
    assert "Did you mean" not in str(info.value)
    assert "t5gemma_s_s_prefixlm" in str(info.value)


def test_corrupt_config(tmp_path):
    (tmp_path / "config.json").write_text('{"model_type": "t5gemma", ')
    with pytest.raises(CheckpointError, match="Corrupt JSON") as info:
        T5GemmaBackbone.from_preset(str(tmp_path))
    assert str(tmp_path / "config.json") in str(info.value)


def test_folder_without_config(tmp_path):
    with pytest.raises(CheckpointError, match="has no config.json") as info:
        T5GemmaSeq2SeqLM.from_preset(str(tmp_path))
    assert str(tmp_path) in str(info.value)


def test_missing_safetensors(transformers_folder, tmp_path):
    folder = copy_folder(transformers_folder, tmp_path, skip=("model.safetensors",))
    with pytest.raises(CheckpointError) as info:
        T5GemmaSeq2SeqLM.from_preset(str(folder))
    message = str(info.value)
    assert f"No safetensors weights in '{folder}'" in message
    assert "'model.safetensors' or 'model.safetensors.index.json'" in message


def test_truncated_safetensors(transformers_folder, tmp_path):
    folder = copy_folder(transformers_folder, tmp_path)
    path = os.path.join(folder, "model.safetensors")
    size = os.path.getsize(path)
    with open(path, "r+b") as f:
        f.truncate(size - 100)
    with pytest.raises(CheckpointError, match="is truncated") as info:
        T5GemmaBackbone.from_preset(str(folder))
    assert f"the file has {size - 100} bytes" in str(info.value)


def test_config_does_not_match_weights(transformers_folder, tmp_path):
    folder = copy_folder(transformers_folder, tmp_path)
    edit_config(folder, lambda c: c["encoder"].update(hidden_size=48))
    with pytest.raises(WeightMismatchError) as info:
        T5GemmaBackbone.from_preset(str(folder))
    message = str(info.value)
    # The weight, both shapes, and the diagnosis.
    assert "Shape mismatch for 'encoder_token_embedding/embeddings'" in message
    assert "from 'model.encoder.embed_tokens.weight'" in message
    assert "the checkpoint gives (64, 32)" in message
    assert "the model expects (64, 48)" in message
    assert "The config does not match the weights." in message


def test_not_a_t5gemma_config(transformers_folder, tmp_path):
    folder = copy_folder(transformers_folder, tmp_path)
    edit_config(folder, lambda c: c.update(model_type="gemma2"))
    with pytest.raises(CheckpointError) as info:
        T5GemmaSeq2SeqLM.from_preset(str(folder))
    message = str(info.value)
    assert "is not a T5Gemma preset" in message
    assert "model_type='gemma2'" in message
    assert "model_type 't5gemma'" in message


@pytest.mark.parametrize(
    "preset", ["hf://google/t5gemma-2b-2b-prefixlm", "t5gemma_2b_2b_prefixlm"]
)
def test_hf_handle_offline(preset, tmp_path, monkeypatch):
    # huggingface_hub reads HF_HUB_OFFLINE at import: patch its constant too.
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path))
    with pytest.raises(PresetDownloadError) as info:
        T5GemmaSeq2SeqLM.from_preset(preset)
    message = str(info.value)
    assert "Could not download preset 'hf://google/t5gemma-2b-2b-prefixlm'" in (
        message
    )
    assert "pass the local folder instead" in message
    assert "from_preset('/path/to/folder')" in message
