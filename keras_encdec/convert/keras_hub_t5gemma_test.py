"""Loading keras-hub `T5GemmaBackbone.save_to_preset` folders.

Tiny random keras-hub models are saved with keras-hub itself, then loaded
through our `from_preset` (the real loading code). Where keras-hub matches
the transformers reference (windows at least as long as the sequence), ours
must give keras-hub's outputs. With a shorter window keras-hub is wrong
(ANCHORS section 2) and ours must instead match transformers.
"""

import json
import os
import re
import shutil

import keras
import keras_hub
import numpy as np
import pytest
from keras import ops

from keras_encdec import testing
from keras_encdec.convert import keras_hub_t5gemma
from keras_encdec.convert.safetensors_io import CheckpointError
from keras_encdec.convert.weight_mapping import WeightMismatchError
from keras_encdec.models import T5GemmaBackbone
from keras_encdec.models import T5GemmaSeq2SeqLM

VOCABULARY_SIZE = 64
ENCODER_LENGTH, DECODER_LENGTH = 16, 12
SAME_AS_KERAS_HUB = 1e-5  # fp32, same weights, same maths.
SAME_AS_TRANSFORMERS = 1e-4  # The project-wide parity bound.
KERAS_HUB_WINDOW_BUG = 1e-2  # keras-hub's error at a short window exceeds it.


def make_keras_hub_backbone(sliding_window, seed=0, scale=0.3, **overrides):
    """A tiny keras-hub T5Gemma: GQA (4 query heads; 2 key/value heads in
    the encoder, 1 in the decoder), soft-caps on, every weight (norm scales
    included) drawn from a normal with std `scale`.

    Encoder and decoder share their other sizes: on JAX each new weight
    shape costs a compilation of the random initializer, and few shapes keep
    the test fast."""
    config = dict(
        vocabulary_size=VOCABULARY_SIZE,
        encoder_hidden_dim=32,
        encoder_intermediate_dim=48,
        encoder_num_layers=2,
        encoder_num_attention_heads=4,
        encoder_num_key_value_heads=2,
        encoder_head_dim=8,
        encoder_layer_types=["sliding_attention", "full_attention"],
        decoder_hidden_dim=32,
        decoder_intermediate_dim=48,
        decoder_num_layers=2,
        decoder_num_attention_heads=4,
        decoder_num_key_value_heads=1,
        decoder_head_dim=8,
        decoder_layer_types=["sliding_attention", "full_attention"],
        query_pre_attn_scalar=6,
        sliding_window=sliding_window,
        attn_logit_softcapping=5.0,
        final_logit_softcapping=4.0,
        rope_max_wavelength=500.0,
    )
    config.update(overrides)
    backbone = keras_hub.models.T5GemmaBackbone(**config)
    rng = np.random.default_rng(seed)
    for weight in backbone.weights:
        value = rng.normal(0.0, scale, weight.shape).astype("float32")
        weight.assign(value)
    return backbone


def save_keras_hub_preset(folder, sliding_window, **overrides):
    """Saves backbone + tokenizer + preprocessor with keras-hub's own
    `save_to_preset`; returns keras-hub's `T5GemmaSeq2SeqLM`."""
    backbone = make_keras_hub_backbone(sliding_window, **overrides)
    tokenizer = keras_hub.models.T5GemmaTokenizer(
        proto=testing.train_sentencepiece(VOCABULARY_SIZE)
    )
    preprocessor = keras_hub.models.T5GemmaSeq2SeqLMPreprocessor(tokenizer)
    backbone.save_to_preset(str(folder))
    preprocessor.save_to_preset(str(folder))
    return keras_hub.models.T5GemmaSeq2SeqLM(backbone=backbone)


def batch():
    return testing.random_batch(
        3, ENCODER_LENGTH, DECODER_LENGTH, VOCABULARY_SIZE, padded=True, seed=1
    )


def max_error(a, b):
    return float(np.max(np.abs(ops.convert_to_numpy(a) - np.asarray(b))))


def all_outputs(lm, inputs):
    """Sequence outputs and logits of a Seq2SeqLM (ours or keras-hub's) in
    one compiled call: `{encoder_sequence_output, decoder_sequence_output,
    logits}`."""
    model = keras.Model(lm.backbone.input, {**lm.backbone.output, "logits": lm.output})
    return model.predict_on_batch(inputs)


@pytest.fixture(scope="module")
def full_window(tmp_path_factory):
    """A keras-hub preset whose window equals the encoder length (untied
    embeddings), and keras-hub's outputs on `batch()`."""
    folder = tmp_path_factory.mktemp("keras_hub_full_window")
    keras_hub_lm = save_keras_hub_preset(
        folder, sliding_window=ENCODER_LENGTH, tie_word_embeddings=False
    )
    return folder, keras_hub_lm, all_outputs(keras_hub_lm, batch())


def test_backbone_and_seq_2_seq_lm_match_keras_hub(full_window):
    folder, _, expected = full_window
    backbone = T5GemmaBackbone.from_preset(str(folder))
    assert backbone.encoder_sliding_window == ENCODER_LENGTH
    assert backbone.decoder_sliding_window == ENCODER_LENGTH
    assert backbone.decoder_num_kv_heads == 1
    assert backbone.decoder_query_pre_attn_scalar == 6
    assert backbone.final_logit_soft_cap == 4.0
    assert not backbone.tie_word_embeddings
    lm = T5GemmaSeq2SeqLM.from_preset(str(folder))
    # Both loaders give the same weights, so one forward pass checks both.
    for ours, lm_weight in zip(backbone.weights, lm.backbone.weights):
        assert ours.path == lm_weight.path
        np.testing.assert_array_equal(
            ops.convert_to_numpy(ours), ops.convert_to_numpy(lm_weight)
        )
    assert expected["logits"].shape == (3, DECODER_LENGTH, VOCABULARY_SIZE)
    assert np.std(expected["logits"]) > 0.1  # Non-trivial logits.
    actual = all_outputs(lm, batch())
    for key in ("encoder_sequence_output", "decoder_sequence_output", "logits"):
        error = max_error(actual[key], expected[key])
        assert error <= SAME_AS_KERAS_HUB, f"{key}: max-abs error {error:.3g}"
    # The tokenizer came from keras-hub's assets and tokenizes the same.
    keras_hub_tokenizer = keras_hub.models.T5GemmaTokenizer.from_preset(
        str(folder)
    )
    text = "the quick brown fox"
    assert np.array_equal(
        np.asarray(lm.preprocessor.tokenizer(text)),
        np.asarray(keras_hub_tokenizer(text)),
    )


def test_short_window_matches_transformers_not_keras_hub(tmp_path):
    import torch
    from transformers import T5GemmaForConditionalGeneration

    keras_hub_lm = save_keras_hub_preset(tmp_path / "hub", sliding_window=4)
    ours = T5GemmaSeq2SeqLM.from_preset(str(tmp_path / "hub"))
    assert ours.backbone.encoder_sliding_window == 4
    ours.export_to_transformers(str(tmp_path / "hf"))
    reference = T5GemmaForConditionalGeneration.from_pretrained(
        str(tmp_path / "hf"), attn_implementation="eager", dtype=torch.float32
    ).eval()
    inputs = batch()
    expected = testing.transformers_logits(reference, inputs)
    ours_error = max_error(all_outputs(ours, inputs)["logits"], expected)
    keras_hub_error = max_error(keras_hub_lm.predict_on_batch(inputs), expected)
    print(
        f"window 4, lengths {ENCODER_LENGTH}/{DECODER_LENGTH}: max-abs logit "
        f"error vs transformers: ours {ours_error:.3g}, keras-hub "
        f"{keras_hub_error:.3g}"
    )
    assert ours_error <= SAME_AS_TRANSFORMERS
    assert keras_hub_error > KERAS_HUB_WINDOW_BUG


def test_sharded_preset_and_config_override(full_window, tmp_path):
    folder, keras_hub_lm, _ = full_window
    # keras-hub shards backbones over `max_shard_size` GB: force ~10 kB.
    keras_hub_lm.backbone.save_to_preset(str(tmp_path), max_shard_size=1e-5)
    assert not os.path.exists(tmp_path / keras_hub_t5gemma.WEIGHTS_FILE)
    ours = T5GemmaBackbone.from_preset(str(tmp_path), final_logit_soft_cap=2.0)
    assert ours.final_logit_soft_cap == 2.0  # kwargs override the config.
    with keras_hub_t5gemma.KerasWeightsReader(str(tmp_path)) as reader:
        assert len(reader.files) > 1
        for variable, name in keras_hub_t5gemma.weight_map(ours):
            # Every weight reaches its place bit for bit.
            np.testing.assert_array_equal(
                ops.convert_to_numpy(variable), reader.get(name), err_msg=name
            )


def test_bfloat16_tensors_read_bit_exact(tmp_path):
    import ml_dtypes
    from keras.src.saving.saving_lib import H5IOStore

    # Keras' own weights writer (the one `save_to_preset` uses) stores
    # bfloat16 as 2-byte opaque data tagged with a `dtype` attribute.
    value = np.random.default_rng(0).normal(size=(4, 3)).astype(
        ml_dtypes.bfloat16
    )
    store = H5IOStore(str(tmp_path / keras_hub_t5gemma.WEIGHTS_FILE), mode="w")
    store.make("layers/embedding")["0"] = value
    store.close()
    with keras_hub_t5gemma.KerasWeightsReader(str(tmp_path)) as reader:
        assert reader.keys() == ["layers/embedding/vars/0"]
        read = reader.get("layers/embedding/vars/0")
    assert read.dtype == ml_dtypes.bfloat16
    np.testing.assert_array_equal(read.view("uint16"), value.view("uint16"))


def test_dtype_policy_maps_to_ours(full_window):
    config = keras_hub_t5gemma.read_config(str(full_window[0]))
    assert keras_hub_t5gemma.backbone_kwargs_from_config(config)["dtype"] == (
        "float32"
    )
    config["dtype"] = {
        "module": "keras",
        "class_name": "DTypePolicy",
        "config": {"name": "mixed_bfloat16"},
    }
    kwargs = keras_hub_t5gemma.backbone_kwargs_from_config(config)
    assert kwargs["dtype"] == "mixed_bfloat16"
    assert kwargs["encoder_num_kv_heads"] == 2
    assert kwargs["decoder_attention_logit_soft_cap"] == 5.0
    assert kwargs["decoder_rope_max_wavelength"] == 500.0


def _edited_copy(source, target, **changes):
    shutil.copytree(source, target)
    path = os.path.join(target, "config.json")
    with open(path) as f:
        config = json.load(f)
    config["config"].update(changes)
    with open(path, "w") as f:
        json.dump(config, f)
    return str(target)


def test_config_not_matching_weights_names_weight_and_shapes(
    full_window, tmp_path
):
    # Two decoder key/value heads where the weights have one.
    folder = _edited_copy(
        full_window[0], tmp_path / "x", decoder_num_key_value_heads=2
    )
    message = (
        "layers/t5_gemma_decoder_layer/self_attn/key_dense/vars/0': the "
        "checkpoint gives (32, 1, 8) after layout conversion, the model "
        "expects (32, 2, 8)"
    )
    with pytest.raises(WeightMismatchError, match=re.escape(message)):
        T5GemmaBackbone.from_preset(folder)


def test_missing_weights_file(full_window, tmp_path):
    folder = _edited_copy(full_window[0], tmp_path / "x")
    os.remove(os.path.join(folder, keras_hub_t5gemma.WEIGHTS_FILE))
    with pytest.raises(CheckpointError, match="Expected 'model.weights.h5'"):
        T5GemmaBackbone.from_preset(folder)
    # Without weights, the config alone still builds the model.
    assert T5GemmaBackbone.from_preset(folder, load_weights=False).built


@pytest.mark.parametrize(
    "changes, message",
    [
        (dict(attention_bias=True), "attention_bias=True is not supported"),
        (dict(cross_attention_hidden_size=24), "cross_attention_hidden_size=24"),
        (dict(use_qk_norm=True), "Unsupported keras-hub T5GemmaBackbone"),
        (
            dict(dtype={"class_name": "DTypePolicyMap", "config": {}}),
            "Only float dtype policies",
        ),
    ],
)
def test_unsupported_config_is_rejected(full_window, tmp_path, changes, message):
    folder = _edited_copy(full_window[0], tmp_path / "x", **changes)
    with pytest.raises(CheckpointError, match=re.escape(message)):
        T5GemmaBackbone.from_preset(folder)


def test_reader_lists_every_tensor(full_window):
    with keras_hub_t5gemma.KerasWeightsReader(str(full_window[0])) as reader:
        names = reader.keys()
        value = reader.get("layers/embedding/vars/0")
    # 2 embeddings + 2 final norms, 11 tensors per encoder layer (4
    # attention kernels, 4 norms, 3 MLP kernels), 17 per decoder layer.
    # (+1: the untied LM head).
    assert len(names) == 4 + 2 * 11 + 2 * 17 + 1
    assert value.shape == (VOCABULARY_SIZE, 32) and value.dtype == "float32"
