"""Analytic parameter counts against shape-only builds of the published
configs (ours and keras-hub's), without allocating any weights."""

import keras
import keras_hub
import pytest
from keras.src.backend.common import global_state
from keras_hub.src.models.gemma3.gemma3_vision_encoder import Gemma3VisionEncoder

from keras_encdec.models.t5gemma2.t5gemma2_presets import T5GEMMA2_PRESETS
from keras_encdec.models.t5gemma2.t5gemma2_presets import count_parameters
from keras_encdec.models import T5Gemma2Backbone
from keras_encdec.utils.shape_only import count_parameters_shape_only

pytestmark = pytest.mark.skipif(
    keras.backend.backend() != "jax", reason="backend-independent counts"
)
PUBLISHED = sorted(n for n, e in T5GEMMA2_PRESETS.items() if "config" in e)
# keras-hub 0.32 `t5gemma2_presets.py` metadata.
KERAS_HUB_METADATA = {
    "t5gemma2_270m_270m": 953_800_816,
    "t5gemma2_1b_1b": 2_417_966_192,
    "t5gemma2_4b_4b": 8_180_020_080,
}


def _pending():
    return global_state.get_global_attribute("uninitialized_variables") or []


@pytest.mark.parametrize("name", PUBLISHED)
def test_analytic_count_equals_shape_only_build(name):
    config = T5GEMMA2_PRESETS[name]["config"]
    pending = len(_pending())
    assert count_parameters_shape_only(T5Gemma2Backbone, config) == (
        count_parameters(config)
    )
    assert len(_pending()) == pending  # Nothing left for a later scope.
    assert T5GEMMA2_PRESETS[name]["metadata"]["params"] == count_parameters(config)


def _keras_hub_text(config):
    kwargs = dict(
        vocabulary_size=config["vocabulary_size"],
        sliding_window=config["encoder_sliding_window"],
    )
    for side in ("encoder", "decoder"):
        kwargs.update({
            f"{side}_hidden_dim": config["hidden_dim"],
            f"{side}_intermediate_dim": config[f"{side}_intermediate_dim"],
            f"{side}_num_layers": config[f"{side}_num_layers"],
            f"{side}_num_attention_heads": config[f"{side}_num_heads"],
            f"{side}_num_key_value_heads": config[f"{side}_num_kv_heads"],
            f"{side}_head_dim": config[f"{side}_head_dim"],
            f"{side}_layer_types": config[f"{side}_layer_types"],
        })
    return lambda: keras_hub.models.T5Gemma2Backbone(**kwargs)


def _keras_hub_vision(config):
    vision = config["vision_config"]
    side = int(config["mm_tokens_per_image"] ** 0.5)
    return lambda: Gemma3VisionEncoder(
        image_size=vision["image_size"], patch_size=vision["patch_size"],
        num_heads=vision["num_heads"], hidden_dim=vision["hidden_dim"],
        num_layers=vision["num_layers"],
        intermediate_dim=vision["intermediate_dim"],
        output_dim=config["hidden_dim"],
        pool_size=vision["image_size"] // vision["patch_size"] // side,
    )


@pytest.mark.parametrize("name", PUBLISHED)
def test_keras_hub_layout_count_equals_keras_hub_build(name):
    # keras-hub's backbone makes its EOI rows with `keras.Variable(zeros)`,
    # which a stateless scope refuses: its text backbone and vision encoder
    # are built shape-only apart, plus the two EOI rows.
    config = T5GEMMA2_PRESETS[name]["config"]
    width = config["hidden_dim"]
    built = (
        count_parameters_shape_only(_keras_hub_text(config), {})
        + count_parameters_shape_only(_keras_hub_vision(config), {})
        + 2 * width
    )
    assert count_parameters(config, keras_hub_layout=True) == built
    # keras-hub's metadata leaves the EOI rows out for 270m and 1b.
    missing = 0 if name == "t5gemma2_4b_4b" else 2 * width
    assert KERAS_HUB_METADATA[name] == built - missing
