import keras
import numpy as np
import pytest

from keras_encdec.convert import keras_hub_t5gemma
from keras_encdec.errors import ConfigError
from keras_encdec.models import T5GemmaBackbone
from keras_encdec.stack_config import StackConfig
from keras_encdec.models.t5gemma.t5gemma_attention import T5GemmaAttention
from keras_encdec.ops import dot_product_attention
from keras_encdec.testing import tiny_backbone_kwargs

pytestmark = pytest.mark.skipif(
    keras.backend.backend() != "jax", reason="config checks: backend-independent"
)

BAD_SETTINGS = [
    ("encoder_sliding_window", 0),
    ("decoder_sliding_window", -3),
    ("decoder_sliding_window", 2.5),
    ("encoder_attention_logit_soft_cap", 0),
    ("decoder_attention_logit_soft_cap", float("nan")),
    ("encoder_query_pre_attn_scalar", -1.0),
    ("decoder_rope_max_wavelength", 0),
    ("encoder_rope_max_wavelength", float("inf")),
    ("rms_norm_eps", -1),
    ("rms_norm_eps", 0.0),
    ("final_logit_soft_cap", 0),
    ("initializer_range", 0),
    ("dropout_rate", 1.0),
    ("attention_dropout", -0.1),
    ("vocabulary_size", 0),
    ("encoder_hidden_dim", True),
    ("decoder_num_layers", 0),
    ("decoder_num_kv_heads", 3),
    ("encoder_layer_types", ["full_attention"]),
    ("decoder_layer_types", "full_attention"),
    ("tie_word_embeddings", "yes"),
]


@pytest.mark.parametrize("name,value", BAD_SETTINGS)
def test_every_bad_setting_is_refused_at_construction(name, value):
    with pytest.raises(ConfigError, match=name.split("_", 1)[-1]) as info:
        T5GemmaBackbone(**tiny_backbone_kwargs(**{name: value}))
    assert "Received" in str(info.value)


def test_good_settings_round_trip_through_get_config():
    backbone = T5GemmaBackbone(
        **tiny_backbone_kwargs(
            encoder_layer_types=["full_attention"] * 2,
            encoder_sliding_window=None,  # no sliding block: allowed
        )
    )
    config = backbone.get_config()
    assert config["decoder_layer_types"] == [
        "sliding_attention", "full_attention"
    ]
    assert config["encoder_sliding_window"] is None
    assert T5GemmaBackbone.from_config(config).get_config() == config
    assert backbone.decoder_config == StackConfig.from_prefixed(config, "decoder")
    assert backbone.decoder_head_dim == 8


def test_stack_config_is_frozen_and_the_only_list_of_stack_fields():
    config = StackConfig(16, 32, 2, 2, 1, 8, sliding_window=4)
    with pytest.raises(AttributeError):
        config.hidden_dim = 32
    hub_fields = set(keras_hub_t5gemma._STACK_KEYS.values()) | set(
        keras_hub_t5gemma._SHARED_STACK_KEYS.values()
    )
    assert hub_fields == set(StackConfig.names())


def test_attention_layer_and_op_refuse_zero_window_and_soft_cap():
    with pytest.raises(ConfigError, match="sliding_window"):
        T5GemmaAttention(16, 2, 1, 8, "self", causal=True, sliding_window=0)
    with pytest.raises(ConfigError, match="logit_soft_cap"):
        T5GemmaAttention(16, 2, 1, 8, "self", logit_soft_cap=0.0)
    q = np.ones((1, 3, 2, 8), "float32")
    kv = np.ones((1, 3, 1, 8), "float32")
    with pytest.raises(ValueError, match="sliding_window"):
        dot_product_attention(q, kv, kv, scale=1.0, causal=True, sliding_window=0)
    with pytest.raises(ValueError, match="soft_cap"):
        dot_product_attention(q, kv, kv, scale=1.0, soft_cap=0)
