"""Published preset configs, handles and parameter counts.

Real-size configs are built shape-only: variables are created inside a
`keras.StatelessScope(initialize_variables=False)`, which gives them a shape
and an initializer but no value, so a 20B-parameter backbone costs no
memory. The decoder blocks' output spec is given directly instead of traced,
which keeps the 8 builds fast; every weight is still created by the real
`build()` methods.
"""

import itertools
import math

import keras
import pytest
from keras.src.backend.common import global_state
from keras_hub.src.models.t5gemma.t5gemma_presets import (
    backbone_presets as keras_hub_presets,
)

from keras_encdec.convert import preset_loader
from keras_encdec.models import T5GemmaBackbone
from keras_encdec.models.t5gemma.t5gemma_presets import T5GEMMA_PRESETS
from keras_encdec.models.t5gemma.t5gemma_presets import count_parameters

# ANCHORS §1: layers, width, FFN width, heads, head width, kv heads.
SIZES = {
    "s": (8, 512, 1024, 8, 64, 8),
    "b": (12, 768, 2048, 12, 64, 12),
    "l": (24, 1024, 2816, 16, 64, 16),
    "ml": (26, 1152, 6912, 4, 256, 4),
    "xl": (24, 2048, 5120, 32, 64, 32),
    "2b": (26, 2304, 9216, 8, 256, 4),
    "9b": (42, 3584, 14336, 16, 256, 8),
}
# ANCHORS §1, at the precision stated there.
PUBLISHED_COUNTS = {
    "s_s": "312.5M",
    "b_b": "591.5M",
    "l_l": "1.24B",
    "ml_ml": "2.20B",
    "xl_xl": "3.77B",
    "2b_2b": "5.60B",
    "9b_2b": "12.29B",
    "9b_9b": "20.33B",
}
PAIRS = list(PUBLISHED_COUNTS)
VARIANTS = ["prefixlm", "ul2", "prefixlm_it", "ul2_it"]
PUBLISHED_NAMES = [
    f"t5gemma_{pair}_{variant}"
    for pair, variant in itertools.product(PAIRS, VARIANTS)
]
STACK_FIELDS = ("num_layers", "hidden_dim", "intermediate_dim", "num_heads",
                "head_dim", "num_kv_heads")


def rounded_like(count, published):
    """`count` written at the precision of `published` (e.g. '1.24B')."""
    unit = {"M": 1e6, "B": 1e9}[published[-1]]
    decimals = len(published[:-1].split(".")[1])
    return f"{count / unit:.{decimals}f}{published[-1]}"


def test_all_published_presets_are_registered():
    published = {k: v for k, v in T5GEMMA_PRESETS.items() if "path" not in v}
    assert sorted(published) == sorted(PUBLISHED_NAMES)
    assert len(published) == 32
    # Same names and Kaggle handles as keras-hub's registry.
    assert sorted(published) == sorted(keras_hub_presets)
    for name in PUBLISHED_NAMES:
        assert (
            T5GEMMA_PRESETS[name]["kaggle_handle"]
            == keras_hub_presets[name]["kaggle_handle"]
        )


@pytest.mark.parametrize("name", PUBLISHED_NAMES)
def test_preset_handles_and_metadata(name):
    entry = T5GEMMA_PRESETS[name]
    encoder, decoder, variant = name.removeprefix("t5gemma_").split("_", 2)
    hf_name = f"google/t5gemma-{encoder}-{decoder}-{variant.replace('_', '-')}"
    assert entry["hf_handle"] == f"hf://{hf_name}"
    assert entry["kaggle_handle"] == f"kaggle://keras/t5-gemma/keras/{name}/1"
    metadata = entry["metadata"]
    assert metadata["official_name"] == "T5Gemma"
    assert metadata["path"] == "t5gemma"
    assert metadata["model_card"] == f"https://huggingface.co/{hf_name}"
    assert f"{encoder.upper()}-{decoder.upper()}" in metadata["description"]
    # Computed at load time, and the same in the backbone's `presets`.
    assert metadata["params"] == count_parameters(entry["config"])
    assert T5GemmaBackbone.presets[name]["metadata"]["params"] == (
        metadata["params"]
    )


@pytest.mark.parametrize("name", PUBLISHED_NAMES)
def test_preset_config_follows_the_size_table(name):
    encoder, decoder = name.split("_")[1:3]
    config = T5GEMMA_PRESETS[name]["config"]
    for side, size in (("encoder", encoder), ("decoder", decoder)):
        for field, value in zip(STACK_FIELDS, SIZES[size]):
            assert config[f"{side}_{field}"] == value, (side, field)
        num_layers = SIZES[size][0]
        assert config[f"{side}_layer_types"] == [
            ("sliding_attention", "full_attention")[i % 2]
            for i in range(num_layers)
        ]
        assert config[f"{side}_sliding_window"] == 4096
        assert config[f"{side}_attention_logit_soft_cap"] == 50.0
        assert config[f"{side}_query_pre_attn_scalar"] == SIZES[size][4]
        assert config[f"{side}_rope_max_wavelength"] == 10000.0
    assert config["vocabulary_size"] == 256000
    assert config["final_logit_soft_cap"] == 30.0
    assert config["tie_word_embeddings"] is True
    assert config["rms_norm_eps"] == 1e-6
    assert config["hidden_activation"] == "gelu_approximate"


@pytest.mark.parametrize("pair", PAIRS)
def test_count_parameters_matches_published(pair):
    counts = {
        count_parameters(T5GEMMA_PRESETS[f"t5gemma_{pair}_{v}"]["config"])
        for v in VARIANTS
    }
    assert len(counts) == 1
    (count,) = counts
    assert rounded_like(count, PUBLISHED_COUNTS[pair]) == PUBLISHED_COUNTS[pair]
    # keras-hub's registry states the exact integer.
    assert count == keras_hub_presets[f"t5gemma_{pair}_prefixlm"]["metadata"][
        "params"
    ]


def test_count_parameters_untied_adds_an_lm_head():
    config = dict(T5GEMMA_PRESETS["t5gemma_9b_2b_ul2"]["config"])
    tied = count_parameters(config)
    config["tie_word_embeddings"] = False
    assert count_parameters(config) - tied == 256000 * 2304


@pytest.fixture
def shape_only_build():
    pending = global_state.get_global_attribute(
        "uninitialized_variables", [], set_to_default=True
    )
    before = list(pending)
    yield
    # Forget the shape-only variables, or the next StatelessScope to close
    # would try to allocate them.
    global_state.set_global_attribute("uninitialized_variables", before)


@pytest.mark.parametrize("pair", PAIRS)
def test_real_size_backbone_shape_only(pair, shape_only_build):
    config = T5GEMMA_PRESETS[f"t5gemma_{pair}_prefixlm"]["config"]
    with keras.StatelessScope(initialize_variables=False):
        backbone = T5GemmaBackbone(**config)
    variables = backbone.weights
    assert all(v._value is None for v in variables)  # Nothing allocated.
    built = sum(math.prod(v.shape) for v in variables)
    assert built == count_parameters(config)
    assert built == keras_hub_presets[f"t5gemma_{pair}_prefixlm"]["metadata"][
        "params"
    ]
    assert rounded_like(built, PUBLISHED_COUNTS[pair]) == PUBLISHED_COUNTS[pair]
    assert backbone.count_params() == built
    assert count_parameters(backbone.get_config()) == built


@pytest.mark.parametrize("name", PUBLISHED_NAMES)
def test_registry_name_resolves_to_its_hf_handle(name, tmp_path, monkeypatch):
    (tmp_path / "config.json").write_text('{"model_type": "t5gemma"}')
    requested = []

    def fake_download(handle):
        requested.append(handle)
        return str(tmp_path)

    monkeypatch.setattr(preset_loader, "download", fake_download)
    fmt, folder = preset_loader.resolve(name, T5GEMMA_PRESETS)
    assert requested == [T5GEMMA_PRESETS[name]["hf_handle"]]
    assert (fmt, folder) == (preset_loader.TRANSFORMERS, str(tmp_path))
