"""Shared fixtures: tiny random Gemma 2 sources (keras-hub and transformers).

Every weight, norms included, is drawn from a normal with std `SCALE`, and
soft-caps are small, so that every sublayer and both caps visibly matter.
Sliding windows (`WINDOW`) are shorter than the test sequences
(`LENGTH`).
"""

import numpy as np
import pytest

from keras_encdec.testing import train_sentencepiece

WINDOW = 3
LENGTH = 10
SCALE = 0.3
ATTENTION_CAP = 5.0
FINAL_CAP = 3.0


def randomize(variables, seed):
    rng = np.random.default_rng(seed)
    for variable in variables:
        value = rng.normal(size=variable.shape) * SCALE
        variable.assign(value.astype("float32"))


def keras_hub_gemma2(proto, hidden_dim=16, num_heads=4, seed=0, **overrides):
    """A tiny random keras-hub `GemmaCausalLM` with Gemma 2 settings."""
    import keras_hub

    tokenizer = keras_hub.models.GemmaTokenizer(proto=proto)
    config = dict(
        vocabulary_size=tokenizer.vocabulary_size(),
        num_layers=2,
        num_query_heads=num_heads,
        num_key_value_heads=2,
        hidden_dim=hidden_dim,
        intermediate_dim=4 * hidden_dim,
        head_dim=8,
        use_post_ffw_norm=True,
        use_post_attention_norm=True,
        attention_logit_soft_cap=ATTENTION_CAP,
        final_logit_soft_cap=FINAL_CAP,
        use_sliding_window_attention=True,
        sliding_window_size=WINDOW,
    )
    config.update(overrides)
    backbone = keras_hub.models.GemmaBackbone(**config)
    randomize(backbone.weights, seed)
    preprocessor = keras_hub.models.GemmaCausalLMPreprocessor(tokenizer)
    return keras_hub.models.GemmaCausalLM(backbone, preprocessor)


def token_batch(vocabulary_size, batch=2, length=LENGTH, seed=0):
    rng = np.random.default_rng(seed)
    ids = rng.integers(3, vocabulary_size, size=(batch, length))
    return ids.astype("int32"), np.ones((batch, length), "int32")


@pytest.fixture(scope="session")
def proto():
    return train_sentencepiece(vocab_size=64)


@pytest.fixture(scope="session")
def gemma2_lm(proto):
    return keras_hub_gemma2(proto)


@pytest.fixture(scope="session")
def hf_gemma2_folder(proto, tmp_path_factory):
    """A tiny random transformers `Gemma2ForCausalLM` folder (eager)."""
    import torch
    from transformers import Gemma2Config
    from transformers import Gemma2ForCausalLM

    from keras_hub.models import GemmaTokenizer

    config = Gemma2Config(
        vocab_size=GemmaTokenizer(proto=proto).vocabulary_size(),
        hidden_size=16,
        intermediate_size=40,
        num_hidden_layers=3,
        num_attention_heads=4,
        num_key_value_heads=1,
        head_dim=8,
        sliding_window=WINDOW,
        query_pre_attn_scalar=12,
        attn_logit_softcapping=ATTENTION_CAP,
        final_logit_softcapping=FINAL_CAP,
        rope_parameters={"rope_type": "default", "rope_theta": 500.0},
        attn_implementation="eager",
    )
    torch.manual_seed(0)
    model = Gemma2ForCausalLM(config).eval()
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.copy_(
                torch.randn(parameter.shape, generator=generator) * SCALE
            )
    folder = tmp_path_factory.mktemp("gemma2_hf")
    model.save_pretrained(folder)
    (folder / "tokenizer.model").write_bytes(proto)
    return folder, model


ADAPT_SEED = 7


@pytest.fixture(scope="session")
def hf_adapted(hf_gemma2_folder):
    """The transformers source adapted with `"zeros"` under a fixed seed
    (the CLI test rebuilds it under the same seed)."""
    import keras

    from keras_encdec.adapt import adapt_decoder_only

    keras.utils.set_random_seed(ADAPT_SEED)
    return adapt_decoder_only(
        str(hf_gemma2_folder[0]), cross_attention_init="zeros"
    )
