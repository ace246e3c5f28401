"""T5Gemma2EncoderModel: equal to transformers' T5Gemma2Encoder (text),
pooled embeddings, encoder-only loading and clear errors."""

import keras
import numpy as np
import pytest
from keras import ops

from keras_encdec import testing
from keras_encdec.models import T5Gemma2EncoderModel

CASE = dict(encoder=dict(sliding_window=3), decoder=dict(sliding_window=2))


def test_equals_transformers_encoder_and_pools(tmp_path):
    import torch

    reference = testing.make_transformers_t5gemma2(**CASE)
    reference.save_pretrained(tmp_path / "hf")
    encoder = T5Gemma2EncoderModel.from_preset(str(tmp_path / "hf"))
    assert encoder.pooling == "mean"
    assert not any("decoder" in w.path for w in encoder.weights)
    assert len(encoder.encoder_layers) == 2

    rng = np.random.default_rng(0)
    ids = rng.integers(3, 60, size=(3, 9)).astype("int32")
    mask = np.ones_like(ids)
    mask[1, 5:] = 0
    mask[2, :2] = 0
    ids = ids * mask
    with torch.no_grad():
        expected = reference.model.encoder(
            input_ids=torch.tensor(ids, dtype=torch.long),
            attention_mask=torch.tensor(mask),
        ).last_hidden_state.numpy()
    out = encoder({"token_ids": ids, "padding_mask": mask})
    hidden = ops.convert_to_numpy(out["sequence_output"])
    assert expected.std() > 0.1
    valid = mask.astype(bool)
    assert np.max(np.abs(hidden - expected)[valid]) <= 1e-4
    weights = mask[:, :, None].astype("float32")
    mean = (expected * weights).sum(1) / weights.sum(1)
    assert np.max(np.abs(ops.convert_to_numpy(out["pooled_output"]) - mean)) <= 1e-4


@pytest.mark.skipif(keras.backend.backend() != "jax", reason="backend-free")
def test_pooling_choice_preset_round_trip_and_errors(tmp_path):
    reference = testing.make_transformers_t5gemma2(**CASE)
    reference.save_pretrained(tmp_path / "hf")
    encoder = T5Gemma2EncoderModel.from_preset(str(tmp_path / "hf"), pooling="last")
    ids = np.array([[5, 6, 7, 0]], "int32")
    mask = np.array([[1, 1, 1, 0]], "int32")
    out = encoder({"token_ids": ids, "padding_mask": mask})
    np.testing.assert_array_equal(
        ops.convert_to_numpy(out["pooled_output"])[0],
        ops.convert_to_numpy(out["sequence_output"])[0, 2],
    )
    encoder.save_to_preset(str(tmp_path / "ours"))
    again = T5Gemma2EncoderModel.from_preset(str(tmp_path / "ours"))
    assert again.pooling == "last"
    np.testing.assert_array_equal(
        ops.convert_to_numpy(again({"token_ids": ids, "padding_mask": mask})[
            "sequence_output"
        ]),
        ops.convert_to_numpy(out["sequence_output"]),
    )
    pooling_dir = tmp_path / "hf" / "1_Pooling"
    pooling_dir.mkdir()
    (pooling_dir / "config.json").write_text('{"pooling_mode_max_tokens": true}')
    assert T5Gemma2EncoderModel.from_preset(str(tmp_path / "hf")).pooling == "max"
    with pytest.raises(ValueError, match="pooling"):
        T5Gemma2EncoderModel.from_preset(str(tmp_path / "hf"), pooling="cls")
    with pytest.raises(ValueError, match="token_ids"):
        encoder({"token_ids": ids})
    # `remat` is switchable after construction, as on T5GemmaEncoderModel
    # (both share `EncoderOnlyModel`), and reaches every block.
    encoder.remat = True
    assert encoder.remat and all(b.remat for b in encoder.encoder_layers)
    with pytest.raises(ValueError, match="remat"):
        encoder.remat = "yes"
