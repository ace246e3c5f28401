"""Bad inputs get clear errors; a failed call leaves the model usable."""

import json
import os

import keras
import numpy as np
import pytest

from keras_encdec import errors
from keras_encdec.convert.safetensors_io import SafetensorsReader
from keras_encdec.convert.safetensors_io import SafetensorsWriter
from keras_encdec.models import T5GemmaBackbone
from keras_encdec.models import T5GemmaSeq2SeqLM
from keras_encdec.testing import random_batch
from keras_encdec.testing import tiny_seq2seq_lm

JAX_ONLY = pytest.mark.skipif(
    keras.backend.backend() != "jax", reason="backend-independent check"
)
VOCAB = 64


@pytest.fixture(scope="module")
def lm():
    keras.utils.set_random_seed(0)
    model = tiny_seq2seq_lm()
    model.compile(optimizer="sgd", sampler="greedy")
    return model


def batch_and_labels(seed=0):
    x = random_batch(2, 6, 5, VOCAB, seed=seed)
    return x, np.roll(x["decoder_token_ids"], -1, axis=1)


@pytest.mark.parametrize(
    "key,value", [("encoder_token_ids", VOCAB), ("decoder_token_ids", -1)]
)
def test_out_of_range_token_ids_are_refused(lm, key, value):
    x, y = batch_and_labels()
    x[key] = x[key].copy()
    x[key][1, 2] = value
    with pytest.raises(errors.InputError, match=rf"{key}\[1, 2\]={value}"):
        lm(x)
    with pytest.raises(errors.InputError, match=key):
        lm.fit(x, y, verbose=0)


def test_labels_out_of_range_are_refused_and_minus_100_is_allowed(lm):
    x, y = batch_and_labels()
    y[0, 0] = -7
    with pytest.raises(errors.InputError, match=r"labels y\[0, 0\]=-7"):
        lm.fit(x, y, verbose=0)
    y[0, 0] = VOCAB
    with pytest.raises(errors.InputError, match="or -100"):
        lm.evaluate(x, y, verbose=0)
    y[0, 0] = -100
    loss = lm.evaluate(x, y, verbose=0)
    assert np.isfinite(loss) and loss > 1.0  # ~log(64) at random init


@JAX_ONLY
def test_first_dataset_batch_is_checked_and_the_switch_turns_it_off(lm):
    import tensorflow as tf

    x, y = batch_and_labels()
    x["encoder_token_ids"][1, 0] = VOCAB + 5
    data = tf.data.Dataset.from_tensor_slices((x, y)).batch(2)
    with pytest.raises(errors.InputError, match="encoder_token_ids"):
        lm.fit(data, verbose=0)
    lm.check_token_ranges = False
    try:
        lm.predict(x, verbose=0)  # unchecked: runs
    finally:
        lm.check_token_ranges = True


def test_different_encoder_and_decoder_batch_sizes_are_refused(lm):
    x, _ = batch_and_labels()
    x["decoder_token_ids"] = x["decoder_token_ids"][:1]
    x["decoder_padding_mask"] = x["decoder_padding_mask"][:1]
    with pytest.raises(ValueError, match="2 encoder rows and 1 decoder rows"):
        lm(x)


def test_label_shape_error_is_clear(lm):
    x, y = batch_and_labels()
    with pytest.raises(errors.InputError, match="shape of `decoder_token_ids`"):
        lm.fit(x, y[:, :3], verbose=0)


def test_model_is_usable_after_failed_fit_evaluate_predict(lm):
    """A failure inside the compiled step (checks off) must not leave JAX
    variables detached: the next calls work and give finite numbers."""
    x, y = batch_and_labels()
    before = [keras.ops.convert_to_numpy(w) for w in lm.backbone.weights]
    lm.check_token_ranges = False
    try:
        with pytest.raises(Exception):
            lm.fit(x, y[:, :3], verbose=0)
        with pytest.raises(Exception):
            lm.evaluate(x, y[:, :3], verbose=0)
        bad = dict(x, decoder_token_ids=x["decoder_token_ids"][:, :2])
        with pytest.raises(ValueError, match="same shape"):  # in the step
            lm.predict(bad, verbose=0)
    finally:
        lm.check_token_ranges = True
    after = [keras.ops.convert_to_numpy(w) for w in lm.backbone.weights]
    for a, b in zip(before, after):
        np.testing.assert_array_equal(a, b)  # failed fit changed nothing
    history = lm.fit(x, y, verbose=0).history["loss"]
    assert np.isfinite(history[0]) and history[0] > 1.0
    assert np.isfinite(lm.evaluate(x, y, verbose=0))
    assert lm.predict(x, verbose=0).shape == (2, 5, VOCAB)


@JAX_ONLY
def test_bad_sampler_max_length_and_misspelled_keywords_are_refused(lm):
    with pytest.raises(ValueError, match="Unknown sampler.*'bogus'"):
        lm.compile(sampler="bogus")
    lm.compile(optimizer="sgd", sampler="greedy")
    x, _ = batch_and_labels()
    prompt = {k: v for k, v in x.items() if k.startswith("encoder")}
    with pytest.raises(ValueError, match="max_length=0"):
        lm.generate(prompt, max_length=0)
    with pytest.raises(TypeError, match="`remt` -> `remat`"):
        T5GemmaSeq2SeqLM.from_preset("t5gemma_tiny_random", remt=True)
    with pytest.raises(TypeError, match="`dtyp` -> `dtype`"):
        T5GemmaBackbone.from_preset("t5gemma_tiny_random", dtyp="bfloat16")


@JAX_ONLY
def test_int32_tensor_for_a_float_weight_is_refused(tmp_path, lm):
    folder = str(tmp_path / "export")
    lm.export_to_transformers(folder)
    reader = SafetensorsReader(folder)
    tensors = {name: reader.get(name) for name in reader.keys()}
    name = sorted(n for n in tensors if "q_proj" in n)[0]
    tensors[name] = tensors[name].astype("int32")
    os.remove(os.path.join(folder, "model.safetensors"))
    with SafetensorsWriter(folder) as writer:
        for key, value in tensors.items():
            writer.add(key, value)
    with pytest.raises(errors.WeightMismatchError, match="stores int32"):
        T5GemmaSeq2SeqLM.from_preset(folder)


@JAX_ONLY
def test_missing_config_key_names_the_key_and_file(tmp_path, lm):
    folder = str(tmp_path / "export")
    lm.export_to_transformers(folder)
    path = os.path.join(folder, "config.json")
    with open(path) as f:
        config = json.load(f)
    del config["decoder"]["num_key_value_heads"]
    with open(path, "w") as f:
        json.dump(config, f)
    with pytest.raises(
        errors.CheckpointError, match="decoder.num_key_value_heads"
    ) as info:
        T5GemmaSeq2SeqLM.from_preset(folder)
    assert path in str(info.value)


@JAX_ONLY
def test_corrupt_weights_file_error_names_the_folder(tmp_path, lm):
    folder = str(tmp_path / "preset")
    lm.save_to_preset(folder)
    with open(os.path.join(folder, "model.weights.h5"), "r+b") as f:
        f.truncate(1000)
    with pytest.raises(errors.CheckpointError, match="preset") as info:
        T5GemmaSeq2SeqLM.from_preset(folder)
    assert folder in str(info.value)


@JAX_ONLY
def test_adapter_from_a_deeper_model_is_refused(tmp_path):
    keras.utils.set_random_seed(0)
    deep = tiny_seq2seq_lm(encoder_num_layers=4, decoder_num_layers=4)
    deep.backbone.enable_lora(2)
    path = str(tmp_path / "deep.lora.h5")
    deep.backbone.save_lora_weights(path)
    shallow = tiny_seq2seq_lm()
    with pytest.raises(errors.WeightMismatchError, match="does not have"):
        shallow.backbone.load_lora_weights(path)
    assert len(shallow.backbone.trainable_weights) == len(
        shallow.backbone.weights
    )  # nothing was enabled or frozen
    wide = tiny_seq2seq_lm(
        encoder_num_layers=4, decoder_num_layers=4, decoder_head_dim=16
    )
    with pytest.raises(errors.WeightMismatchError, match="does not fit"):
        wide.backbone.load_lora_weights(path)
