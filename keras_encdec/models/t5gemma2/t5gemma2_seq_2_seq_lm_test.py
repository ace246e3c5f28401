"""T5Gemma 2 model classes: configs, parameter counts, presets, LoRA on the
merged attention, fine-tuning and input errors (tiny random models).

Numerical parity with transformers is in `tests/t5gemma2_parity_test.py`.
"""

import keras
import numpy as np
import pytest
from keras import ops

from keras_encdec import testing
from keras_encdec.models import T5Gemma2Backbone
from keras_encdec.models import T5Gemma2Seq2SeqLM
from keras_encdec.models import T5Gemma2Seq2SeqLMPreprocessor
from keras_encdec.models import T5Gemma2Tokenizer
from keras_encdec.models.t5gemma2.t5gemma2_presets import T5GEMMA2_PRESETS
from keras_encdec.models.t5gemma2.t5gemma2_presets import count_parameters

VISION = dict(image_size=28, patch_size=7, hidden_dim=16, num_layers=1,
              num_heads=2, intermediate_dim=32)
jax_only = pytest.mark.skipif(
    keras.backend.backend() != "jax", reason="backend-independent"
)


def _config(**overrides):
    return testing.tiny_t5gemma2_kwargs(**overrides)


def _randomize(model, seed=0):
    rng = np.random.default_rng(seed)
    for weight in model.weights:
        weight.assign(rng.normal(0, 0.3, weight.shape).astype(weight.dtype))


def _batch(seed=0):
    return testing.random_batch(2, 7, 5, 60, padded=True, seed=seed)


@jax_only
@pytest.mark.parametrize("vision", [None, VISION])
def test_count_parameters_equals_built_model(vision):
    config = _config(vision_config=vision)
    backbone = T5Gemma2Backbone(**config)
    assert count_parameters(config) == backbone.count_params()
    # keras-hub keeps a second table and EOI row for the decoder.
    assert count_parameters(config, keras_hub_layout=True) == (
        backbone.count_params() + 65 * 16
    )


@jax_only
def test_published_preset_counts_match_keras_hub():
    # keras-hub's presets list 953,800,816 / 2,417,966,192 / 8,180,020,080;
    # its 270m and 1b entries leave out the two EOI rows (2 * width).
    listed = {"t5gemma2_270m_270m": 953800816, "t5gemma2_1b_1b": 2417966192,
              "t5gemma2_4b_4b": 8180020080}
    for name, count in listed.items():
        entry = T5GEMMA2_PRESETS[name]
        width = entry["config"]["hidden_dim"]
        eoi_rows = 0 if name == "t5gemma2_4b_4b" else 2 * width
        assert entry["metadata"]["params_keras_hub"] == count + eoi_rows
        assert entry["hf_handle"] == "hf://google/" + name.replace(
            "t5gemma2_", "t5gemma-2-").replace("_", "-")
        shared = entry["metadata"]["params"]
        assert shared == entry["metadata"]["params_keras_hub"] - (
            (entry["config"]["vocabulary_size"] + 1) * width
        )


def test_save_to_preset_round_trip_with_vision(tmp_path):
    lm = T5Gemma2Seq2SeqLM(T5Gemma2Backbone(**_config(vision_config=VISION)))
    _randomize(lm)
    batch = dict(_batch(), pixel_values=np.ones((2, 1, 28, 28, 3), "float32"))
    batch["encoder_token_ids"][:, 1:5] = 62
    batch["encoder_padding_mask"][:, :5] = 1
    expected = ops.convert_to_numpy(lm(batch))
    lm.save_to_preset(str(tmp_path))
    restored = T5Gemma2Seq2SeqLM.from_preset(str(tmp_path))
    assert restored.backbone.get_config() == lm.backbone.get_config()
    np.testing.assert_array_equal(ops.convert_to_numpy(restored(batch)), expected)
    # Without pixels the encoder reads the image tokens as plain tokens.
    text_only = {k: v for k, v in batch.items() if k != "pixel_values"}
    assert np.max(np.abs(ops.convert_to_numpy(restored(text_only)) - expected)) > 0.1


def test_cached_generate_equals_uncached_greedy():
    lm = T5Gemma2Seq2SeqLM(T5Gemma2Backbone(**_config()))
    _randomize(lm, seed=1)
    batch = _batch(seed=1)
    prompt = np.zeros((2, 9), "int32")
    prompt[:, 0] = 2
    mask = np.zeros_like(prompt)
    mask[:, 0] = 1
    inputs = dict(batch, decoder_token_ids=prompt, decoder_padding_mask=mask)
    lm.compile(sampler="greedy")
    out = ops.convert_to_numpy(
        lm.generate(inputs, stop_token_ids=None)["decoder_token_ids"]
    )
    tokens = prompt.copy()
    for step in range(1, 9):  # Uncached: rerun the whole prefix each step.
        # One input shape for every step (eager jax compiles per shape): the
        # decoder is causal, so the positions after `step - 1` (zeros here)
        # cannot change its logits.
        logits = ops.convert_to_numpy(lm(dict(
            batch, decoder_token_ids=tokens,
            decoder_padding_mask=np.ones_like(tokens))))
        tokens[:, step] = logits[:, step - 1].argmax(-1)
    np.testing.assert_array_equal(out, tokens)


def test_lora_targets_name_the_merged_attention(tmp_path):
    backbone = T5Gemma2Backbone(**_config())
    count = backbone.enable_lora(2, target="decoder.merged_attention")
    paths = sorted(w.path for w in backbone.trainable_weights)
    assert len(paths) == 3 * 4 * 2  # 3 blocks x q/k/v/o x (A, B)
    assert all("/merged_attention/" in p for p in paths)
    assert count == sum(int(np.prod(w.shape)) for w in backbone.trainable_weights)
    path = str(tmp_path / "adapter.lora.h5")
    backbone.save_lora_weights(path)
    fresh = T5Gemma2Backbone(**_config())
    fresh.load_lora_weights(path)
    assert len(fresh.trainable_weights) == len(paths)
    assert backbone.merge_lora() == 12


def test_fit_with_chunked_loss_and_preprocessor():
    keras.utils.set_random_seed(0)  # Else the result depends on test order.
    tokenizer = T5Gemma2Tokenizer(proto=testing.train_sentencepiece(64))
    preprocessor = T5Gemma2Seq2SeqLMPreprocessor(
        tokenizer, encoder_sequence_length=12, decoder_sequence_length=10
    )
    lm = T5Gemma2Seq2SeqLM(
        T5Gemma2Backbone(**_config(remat=True)), preprocessor=preprocessor
    )
    lm.compile(optimizer=keras.optimizers.Adam(1e-2))
    data = {"encoder_text": testing.TINY_TEXT[:4],
            "decoder_text": testing.TINY_TEXT[3:7]}
    history = lm.fit(data, epochs=2, batch_size=4, verbose=0)
    losses = history.history["loss"]
    assert losses[-1] < losses[0]
    assert isinstance(lm.generate("the quick", max_length=6), str)


def test_clear_errors():
    text_only = T5Gemma2Backbone(**_config())
    with pytest.raises(ValueError, match="text-only"):
        text_only(dict(_batch(), pixel_values=np.ones((2, 1, 28, 28, 3))))
    vision = T5Gemma2Backbone(**_config(vision_config=VISION))
    with pytest.raises(ValueError, match="channels last"):
        vision(dict(_batch(), pixel_values=np.ones((2, 1, 3, 28, 28))))
    with pytest.raises(ValueError, match="mm_tokens_per_image"):
        T5Gemma2Backbone(**_config(vision_config=VISION, mm_tokens_per_image=3))
    with pytest.raises(ValueError, match="decoder_layer_types"):
        T5Gemma2Backbone(**_config(decoder_layer_types=["full_attention"]))
    with pytest.raises(ValueError, match="merged attention"):
        T5Gemma2Backbone(**_config(attention_dropout=0.1))


@jax_only
def test_layout_map_covers_the_vision_tower():
    mesh = keras.distribution.DeviceMesh(
        (1, 1), ["batch", "model"], keras.distribution.list_devices()[:1]
    )
    layout_map = T5Gemma2Backbone.get_layout_map(mesh)
    backbone = T5Gemma2Backbone(**_config(vision_config=dict(
        image_size=28, patch_size=7, num_heads=2, hidden_dim=16,
        num_layers=1, intermediate_dim=32)))
    vision = {w.path: w for w in backbone.weights if "vision" in w.path}
    replicated = ("embedding_conv/kernel", "position_embedding/embeddings")
    matrices = [p for p, w in vision.items() if len(w.shape) == 2
                and not p.endswith(replicated)]
    assert len(matrices) == 7  # q, k, v, o, 2 MLP kernels, the projection
    for path in matrices:
        layout = layout_map[path]
        assert layout is not None and len(layout.axes) == 2, path
    axes = {p.split("/")[-2]: layout_map[p].axes for p in matrices}
    assert axes["query_proj"] == axes["mlp_dense_1"] == ("batch", "model")
    assert axes["out_proj"] == axes["mlp_dense_2"] == ("model", "batch")
    for path in vision:
        if path.endswith(replicated):
            assert layout_map[path] is None, path


@jax_only
def test_layout_map_covers_the_shared_embedding():
    mesh = keras.distribution.DeviceMesh(
        (1, 1), ["batch", "model"], keras.distribution.list_devices()[:1]
    )
    layout_map = T5Gemma2Backbone.get_layout_map(mesh)
    assert layout_map["token_embedding/embeddings"].axes == ("model", "batch")
    assert layout_map["decoder_layer_0/merged_attention/query/kernel"].axes == (
        "batch", "model", None)
