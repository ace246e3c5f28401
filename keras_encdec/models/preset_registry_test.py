"""The shared preset registry: package data, expansion, empty registries."""

import os

import keras
import pytest

from keras_encdec.models import preset_registry

pytestmark = pytest.mark.skipif(
    keras.backend.backend() != "jax", reason="backend-independent"
)


def test_presets_root_is_inside_the_package():
    root = preset_registry.presets_root()
    package = os.path.dirname(os.path.dirname(os.path.abspath(
        preset_registry.__file__)))
    assert os.path.commonpath([root, package]) == package
    assert os.path.isdir(os.path.join(root, "t5gemma"))


def test_empty_registry_raises():
    with pytest.raises(ValueError, match="No Nothing presets found"):
        preset_registry.load_registry(
            "nothing", "NoBackbone", lambda config: 0,
            official_name="Nothing", hf_prefix="x/", kaggle_model="x/y",
        )


def test_pair_file_without_config_raises():
    with pytest.raises(ValueError, match="lacks the key 'config'"):
        preset_registry.expand_published(
            "t5gemma", "s_s", {"description": "S-S", "variants": {}},
            "T5Gemma", "google/t5gemma-", "keras/t5-gemma",
        )


def test_pair_file_without_variants_is_one_preset():
    out = preset_registry.expand_published(
        "t5gemma2", "1b_1b",
        {"description": "1B-1B", "kaggle_version": 2, "config": {}},
        "T5Gemma 2", "google/t5gemma-2-", "keras/t5gemma-2",
    )
    assert list(out) == ["t5gemma2_1b_1b"]
    assert out["t5gemma2_1b_1b"]["hf_handle"] == "hf://google/t5gemma-2-1b-1b"
    assert out["t5gemma2_1b_1b"]["kaggle_handle"] == (
        "kaggle://keras/t5gemma-2/keras/t5gemma2_1b_1b/2"
    )
