"""T5GemmaSeq2SeqLM: generation, samplers, caches, dtypes, presets, errors."""

import numpy as np
import pytest
from keras import ops
from keras_hub.samplers import BeamSampler

import keras
from keras_encdec import testing
from keras_encdec.models import fast_decode
from keras_encdec.models import T5GemmaBackbone
from keras_encdec.models import T5GemmaSeq2SeqLM
from keras_encdec.models import T5GemmaSeq2SeqLMPreprocessor
from keras_encdec.models import T5GemmaTokenizer
from keras_encdec.testing import UNBALANCED_GQA_CONFIG

CONFIG = UNBALANCED_GQA_CONFIG
# bf16 logits agree with fp32 to this fraction of the largest fp32 logit
# (random std-0.3 weights, 2+2 blocks: measured 1.5-5.5% across backends).
BF16_RELATIVE_TOLERANCE = 0.10


def _lm(preprocessor=None, **overrides):
    keras.utils.set_random_seed(0)
    lm = T5GemmaSeq2SeqLM(
        T5GemmaBackbone(**{**CONFIG, **overrides}), preprocessor=preprocessor
    )
    lm.compile(sampler="greedy")
    return lm


def _prompt(batch, length):
    batch = testing.random_batch(batch, 7, length, 64, padded=True, seed=4)
    ids = np.zeros_like(batch["decoder_token_ids"])
    ids[:, 0] = 2
    mask = np.zeros_like(ids)
    mask[:, 0] = 1
    batch["decoder_token_ids"], batch["decoder_padding_mask"] = ids, mask
    return batch


def _uncached_greedy(lm, batch):
    """Reference decoding: the full model re-run at every step, no cache;
    prompt tokens (mask true) are kept."""
    inputs = {k: np.array(v) for k, v in batch.items()}
    ids, mask = inputs["decoder_token_ids"], inputs["decoder_padding_mask"]
    prompt = mask.astype(bool)
    for step in range(1, ids.shape[1]):
        logits = ops.convert_to_numpy(lm(inputs))
        ids[:, step] = np.where(prompt[:, step], ids[:, step],
                                np.argmax(logits[:, step - 1], axis=-1))
        mask[:, step] = 1
    return ids


def test_cached_greedy_equals_uncached_decoding():
    lm = _lm()
    batch = _prompt(2, 9)  # 8 new tokens, past the sliding window of 3.
    out = lm.generate(batch, stop_token_ids=None)
    np.testing.assert_array_equal(
        out["decoder_token_ids"], _uncached_greedy(lm, batch)
    )


@pytest.mark.parametrize("lengths", [(3, 4), (1, 3)])
def test_cached_greedy_after_longer_prompts_equals_uncached(lengths):
    # (3, 4): the prefill runs every position (shortest prompt > 1);
    # (1, 3): it runs position 0 only and the steps go through row 1's
    # prompt.
    lm = _lm()
    batch = _prompt(2, 9)
    for row, length in enumerate(lengths):
        prompt = [5 + row, 9, 11][: length - 1]
        batch["decoder_token_ids"][row, 1:length] = prompt
        batch["decoder_padding_mask"][row, :length] = 1
    out = lm.generate(batch, stop_token_ids=None)
    np.testing.assert_array_equal(
        out["decoder_token_ids"], _uncached_greedy(lm, batch)
    )


def test_cross_attention_keys_values_computed_once_per_input(monkeypatch):
    lm = _lm()
    calls = []
    if keras.backend.backend() == "torch":
        # The functional torch step projects every layer's cross keys and
        # values once, in `start`; its steps read them from the cache.
        original_start = fast_decode.TorchDecodeStep.start

        def counting_start(self, *args, **kwargs):
            calls.extend([1] * len(self.blocks))
            return original_start(self, *args, **kwargs)

        monkeypatch.setattr(fast_decode.TorchDecodeStep, "start", counting_start)
    for layer in lm.backbone.decoder_layers:
        original = layer.cross_attention.compute_key_value

        def counting(*args, _original=original, **kwargs):
            calls.append(1)
            return _original(*args, **kwargs)

        layer.cross_attention.compute_key_value = counting
    lm.generate(_prompt(2, 9), stop_token_ids=None)
    # One projection per decoder layer, however many tokens are decoded.
    assert len(calls) == len(lm.backbone.decoder_layers)


def test_top_k_one_equals_greedy_and_beam_is_at_least_as_likely():
    lm = _lm()
    batch = _prompt(2, 7)
    greedy = lm.generate(batch, stop_token_ids=None)["decoder_token_ids"]
    lm.compile(sampler=keras_hub_sampler("top_k", k=1))
    np.testing.assert_array_equal(
        lm.generate(batch, stop_token_ids=None)["decoder_token_ids"], greedy
    )
    lm.compile(sampler=BeamSampler(num_beams=4))
    beam = lm.generate(batch, stop_token_ids=None)["decoder_token_ids"]

    def log_likelihood(ids):
        inputs = dict(batch, decoder_token_ids=ids,
                      decoder_padding_mask=np.ones_like(ids))
        logits = ops.convert_to_numpy(lm(inputs)).astype("float64")
        logp = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
        picked = np.take_along_axis(logp[:, :-1], ids[:, 1:, None], axis=-1)
        return picked.sum(axis=(1, 2))

    assert np.all(log_likelihood(beam) >= log_likelihood(greedy) - 1e-4)


def keras_hub_sampler(name, **kwargs):
    import keras_hub

    return keras_hub.samplers.get({"class_name": name, "config": kwargs})


def test_stop_tokens_end_sequences():
    lm = _lm()
    batch = _prompt(2, 10)
    free = lm.generate(batch, stop_token_ids=None)["decoder_token_ids"]
    stop = int(free[0, 3])  # A token the model emits at step 3 of row 0.
    out = lm.generate(batch, stop_token_ids=(stop,))
    ids, mask = out["decoder_token_ids"], np.asarray(out["decoder_padding_mask"])
    first = int(np.argmax(ids[0, 1:] == stop)) + 1
    assert first <= 3
    assert mask[0, : first + 1].all() and not mask[0, first + 1 :].any()
    np.testing.assert_array_equal(ids[0, : first + 1], free[0, : first + 1])


def test_generate_strings_with_preprocessor_and_max_length():
    tokenizer = T5GemmaTokenizer(proto=testing.train_sentencepiece(64))
    preprocessor = T5GemmaSeq2SeqLMPreprocessor(
        tokenizer, encoder_sequence_length=16, decoder_sequence_length=12
    )
    lm = _lm(preprocessor)
    outputs = lm.generate(["the quick brown fox", "all that"], max_length=6)
    assert len(outputs) == 2 and all(isinstance(o, str) for o in outputs)
    tokens = preprocessor.generate_preprocess(["the quick brown fox"],
                                              sequence_length=6)
    generated = lm.generate_function(tokens, stop_token_ids=None)
    assert ops.convert_to_numpy(generated["decoder_token_ids"]).shape == (1, 6)


@pytest.mark.parametrize("policy", ["bfloat16", "mixed_bfloat16"])
def test_low_precision_policies_agree_with_float32(policy):
    reference = _lm()
    low = _lm(dtype=policy)
    for target, source in zip(low.backbone.weights, reference.backbone.weights):
        target.assign(source)
    batch = testing.random_batch(2, 12, 10, 64, padded=True, seed=5)
    expected = ops.convert_to_numpy(reference(batch))
    actual = ops.convert_to_numpy(ops.cast(low(batch), "float32"))
    assert low.compute_dtype == "bfloat16"
    error = np.max(np.abs(actual - expected))
    assert error <= BF16_RELATIVE_TOLERANCE * np.max(np.abs(expected))
    assert error > 0  # Really ran in bf16.


def test_save_to_preset_round_trip_and_lora(tmp_path):
    tokenizer = T5GemmaTokenizer(proto=testing.train_sentencepiece(64))
    lm = _lm(T5GemmaSeq2SeqLMPreprocessor(tokenizer))
    lm.save_to_preset(str(tmp_path))
    restored = T5GemmaSeq2SeqLM.from_preset(str(tmp_path))
    batch = testing.random_batch(2, 8, 6, 64, padded=True)
    np.testing.assert_array_equal(
        ops.convert_to_numpy(restored(batch)), ops.convert_to_numpy(lm(batch))
    )
    restored.backbone.enable_lora(4)
    trainable = {w.path for w in restored.backbone.trainable_weights}
    assert trainable and all("lora" in path for path in trainable)
    # 2 encoder + 2 decoder self-attentions and 2 cross-attentions, each
    # with LoRA on query, key, value and output: A and B matrices.
    assert len(trainable) == 6 * 4 * 2


def test_bad_inputs_raise_clear_errors():
    lm = _lm()
    batch = testing.random_batch(1, 4, 3, 64)
    with pytest.raises(ValueError, match="Wrong input keys.*Received"):
        lm({"encoder_token_ids": batch["encoder_token_ids"]})
    with pytest.raises(TypeError, match="decoder_token_ids.*integer.*Received: dtype=float"):
        lm(dict(batch, decoder_token_ids=batch["decoder_token_ids"] * 1.0))
    with pytest.raises(ValueError, match="shape \\[batch, length\\]"):
        lm(dict(batch, encoder_padding_mask=batch["encoder_padding_mask"][0]))
    big = T5GemmaTokenizer(proto=testing.train_sentencepiece(96))
    with pytest.raises(ValueError, match="vocabulary_size=96.*vocabulary_size=64"):
        _lm(T5GemmaSeq2SeqLMPreprocessor(big))
    with pytest.raises(ValueError, match="decoder_num_heads.*multiple"):
        T5GemmaBackbone(**{**CONFIG, "decoder_num_kv_heads": 3})
    with pytest.raises(ValueError, match="sliding_window"):
        T5GemmaBackbone(**{**CONFIG, "encoder_sliding_window": None})
