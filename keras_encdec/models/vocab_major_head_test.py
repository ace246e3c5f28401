"""The vocabulary-major LM head equals the embedding's reverse call, runs
only where it applies, and leaves decoded tokens unchanged."""

import keras
import numpy as np
import pytest
from keras import ops

from keras_encdec import testing
from keras_encdec.models import T5Gemma2Backbone
from keras_encdec.models import T5Gemma2Seq2SeqLM
from keras_encdec.models import vocab_major_head

ON_JAX = keras.backend.backend() == "jax"


def _embedding(**kwargs):
    layer = keras.layers.ReversibleEmbedding(64, 16, **kwargs)
    layer.build((None,))
    rng = np.random.default_rng(0)
    layer.embeddings.assign(rng.normal(size=(64, 16)).astype("float32"))
    return layer


def test_applies_only_to_a_plain_tied_table_on_jax_cpu():
    assert vocab_major_head.applies(_embedding()) == ON_JAX
    assert not vocab_major_head.applies(_embedding(tie_weights=False))
    assert not vocab_major_head.applies(_embedding(logit_soft_cap=30.0))
    assert not vocab_major_head.applies(_embedding(reverse_dtype="bfloat16"))
    quantized = _embedding()
    quantized.quantize("int8")
    assert not vocab_major_head.applies(quantized)
    with_lora = _embedding()
    with_lora.enable_lora(2)
    assert not vocab_major_head.applies(with_lora)


@pytest.mark.skipif(not ON_JAX, reason="the path runs on JAX only")
@pytest.mark.parametrize("shape", [(3, 1, 16), (1, 1, 16), (5, 16)])
def test_logits_equal_the_reverse_call(shape):
    layer = _embedding()
    h = np.random.default_rng(1).normal(size=shape).astype("float32")
    expected = ops.convert_to_numpy(layer(h, reverse=True))
    got = ops.convert_to_numpy(vocab_major_head.logits(layer, h))
    assert got.shape == shape[:-1] + (64,)
    assert np.max(np.abs(got - expected)) <= 1e-5


@pytest.mark.skipif(not ON_JAX, reason="the path runs on JAX only")
def test_logits_round_like_the_layer_under_mixed_precision():
    layer = keras.layers.ReversibleEmbedding(64, 16, dtype="mixed_bfloat16")
    layer.build((None,))
    rng = np.random.default_rng(4)
    layer.embeddings.assign(rng.normal(size=(64, 16)).astype("float32"))
    h = ops.cast(rng.normal(size=(3, 1, 16)).astype("float32"), "bfloat16")
    expected = layer(h, reverse=True)
    got = vocab_major_head.logits(layer, h)
    assert got.dtype == expected.dtype
    np.testing.assert_array_equal(
        ops.convert_to_numpy(ops.cast(got, "float32")),
        ops.convert_to_numpy(ops.cast(expected, "float32")),
    )


def _lm():
    keras.utils.set_random_seed(0)
    return T5Gemma2Seq2SeqLM(T5Gemma2Backbone(**testing.tiny_t5gemma2_kwargs()))


@pytest.mark.skipif(not ON_JAX, reason="the path runs on JAX only")
def test_cached_logits_match_and_prefill_keeps_the_layer_call():
    import jax

    lm = _lm()
    rng = np.random.default_rng(2)
    step = rng.normal(size=(2, 1, 16)).astype("float32")
    expected = ops.convert_to_numpy(lm.compute_logits(step))
    got = ops.convert_to_numpy(lm.compute_logits(step, cached=True))
    assert np.max(np.abs(got - expected)) <= 1e-5
    traced = str(jax.make_jaxpr(lambda h: lm.compute_logits(h, cached=True))(step))
    assert "optimization_barrier" in traced  # the vocabulary-major product
    # A prefill (several positions) is the layer call, bit for bit.
    prefill = rng.normal(size=(2, 3, 16)).astype("float32")
    np.testing.assert_array_equal(
        ops.convert_to_numpy(lm.compute_logits(prefill, cached=True)),
        ops.convert_to_numpy(lm.compute_logits(prefill)),
    )


@pytest.mark.skipif(not ON_JAX, reason="the path runs on JAX only")
def test_generate_tokens_equal_the_layer_head(monkeypatch):
    lm = _lm()
    rng = np.random.default_rng(3)
    inputs = testing.greedy_inputs(rng.integers(3, 60, (2, 6)).astype("int32"), 8)
    lm.compile(sampler="greedy")
    calls = []
    traced = vocab_major_head.logits

    def counting(*args):
        calls.append(args[1].shape)
        return traced(*args)

    monkeypatch.setattr(vocab_major_head, "logits", counting)
    got = lm.generate(inputs, stop_token_ids=None)["decoder_token_ids"]
    assert calls and all(tuple(shape)[1] == 1 for shape in calls)  # steps
    # The same model with the layer's own reverse call in every pass.
    reference = _lm()
    layer_head = type(reference).compute_logits
    reference.compute_logits = (
        lambda hidden_states, cached=False: layer_head(reference, hidden_states)
    )
    reference.compile(sampler="greedy")
    expected = reference.generate(inputs, stop_token_ids=None)[
        "decoder_token_ids"
    ]
    np.testing.assert_array_equal(
        ops.convert_to_numpy(got), ops.convert_to_numpy(expected)
    )
