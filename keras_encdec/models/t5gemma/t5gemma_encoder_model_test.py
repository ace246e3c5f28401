"""T5GemmaEncoderModel: hidden states and pooled embeddings equal to
transformers' `T5GemmaEncoderModel`, encoder-only loading of full presets."""

import json
import os

import keras
import numpy as np
import pytest
from keras import ops

from keras_encdec import testing
from keras_encdec.models import T5GemmaBackbone
from keras_encdec.models import T5GemmaEncoderModel

ENCODER = dict(sliding_window=3, hidden_size=40, head_dim=10)


def _transformers_encoder(tmp_path):
    """A random transformers `T5GemmaEncoderModel` saved to `tmp_path/hf`
    (tensor names `encoder.*`)."""
    import torch
    from transformers import T5GemmaEncoderModel as HFEncoder

    config = testing.make_transformers_t5gemma(encoder=ENCODER).config
    config.is_encoder_decoder = False
    model = HFEncoder(config).eval()
    generator = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.3)
    model.save_pretrained(tmp_path / "hf")
    return model


def _inputs():
    batch = testing.random_batch(3, 11, 1, 64, padded=True, seed=4)
    return batch["encoder_token_ids"], batch["encoder_padding_mask"]


def test_embeddings_equal_transformers_hidden_states_pooled(tmp_path):
    import torch

    reference = _transformers_encoder(tmp_path)
    ids, mask = _inputs()
    with torch.no_grad():
        hidden = reference(
            input_ids=torch.tensor(ids, dtype=torch.long),
            attention_mask=torch.tensor(mask),
        ).last_hidden_state.numpy()
    keep = mask[:, :, None].astype(bool)
    last = mask.shape[1] - 1 - np.argmax(mask[:, ::-1], axis=1)
    expected = {
        "mean": (hidden * keep).sum(1) / keep.sum(1),
        "max": np.where(keep, hidden, -np.inf).max(1),
        "first": hidden[:, 0],
        "last": hidden[np.arange(len(ids)), last],
    }
    assert hidden.std() > 0.1
    for pooling, pooled in expected.items():
        encoder = T5GemmaEncoderModel.from_preset(
            str(tmp_path / "hf"), pooling=pooling
        )
        out = encoder({"token_ids": ids, "padding_mask": mask})
        sequence = ops.convert_to_numpy(out["sequence_output"])
        assert np.max(np.abs(sequence - hidden)) <= 1e-4
        actual = ops.convert_to_numpy(out["pooled_output"])
        assert np.max(np.abs(actual - pooled)) <= 1e-4, pooling


@pytest.mark.skipif(
    keras.backend.backend() != "jax", reason="config reading, backend-free"
)
def test_sentence_transformers_pooling_config_is_used(tmp_path):
    _transformers_encoder(tmp_path)
    os.makedirs(tmp_path / "hf" / "1_Pooling")
    with open(tmp_path / "hf" / "1_Pooling" / "config.json", "w") as f:
        json.dump({"pooling_mode_lasttoken": True,
                   "pooling_mode_mean_tokens": False}, f)
    encoder = T5GemmaEncoderModel.from_preset(str(tmp_path / "hf"))
    assert encoder.pooling == "last"
    assert T5GemmaEncoderModel.from_preset(
        str(tmp_path / "hf"), pooling="max"
    ).pooling == "max"


def test_full_preset_loads_only_the_encoder(tmp_path):
    backbone = T5GemmaBackbone.from_preset("t5gemma_tiny_random")
    encoder = T5GemmaEncoderModel.from_preset("t5gemma_tiny_random")
    encoder_weights = [w for w in backbone.weights if "decoder" not in w.path]
    assert len(encoder.weights) == len(encoder_weights) < len(backbone.weights)
    assert encoder.count_params() < backbone.count_params()
    ids, mask = _inputs()
    expected = ops.convert_to_numpy(backbone.encode(ids, mask))
    out = encoder({"token_ids": ids, "padding_mask": mask})
    np.testing.assert_array_equal(
        ops.convert_to_numpy(out["sequence_output"]), expected
    )
    # Our own encoder preset round-trips (keras-hub's loader).
    encoder.save_to_preset(str(tmp_path / "encoder"))
    restored = T5GemmaEncoderModel.from_preset(str(tmp_path / "encoder"))
    np.testing.assert_array_equal(
        ops.convert_to_numpy(restored({"token_ids": ids, "padding_mask": mask})[
            "pooled_output"]),
        ops.convert_to_numpy(out["pooled_output"]),
    )


@pytest.mark.skipif(
    keras.backend.backend() != "jax", reason="argument checks, backend-free"
)
def test_clear_errors():
    with pytest.raises(ValueError, match="Unknown `pooling`"):
        T5GemmaEncoderModel(
            vocabulary_size=8, hidden_dim=8, intermediate_dim=8, num_layers=1,
            num_heads=1, num_kv_heads=1, head_dim=8, pooling="cls",
        )
    encoder = T5GemmaEncoderModel.from_preset("t5gemma_tiny_random")
    with pytest.raises(TypeError, match="`token_ids` must be an integer"):
        encoder({"token_ids": np.ones((1, 2), "float32"),
                 "padding_mask": np.ones((1, 2), "int32")})
