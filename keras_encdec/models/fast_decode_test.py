"""TorchDecodeStep: same logits and tokens as the Keras layer path."""

import numpy as np
import pytest
from keras import ops
from keras_hub.samplers import BeamSampler
from keras_hub.samplers import GreedySampler
from keras_hub.samplers import TopKSampler

import keras
from keras_encdec.models import T5GemmaBackbone
from keras_encdec.models import T5GemmaSeq2SeqLM
from keras_encdec.models import fast_decode
from keras_encdec.models import fast_decode_greedy
from keras_encdec.models.fast_decode_testing import max_abs_step_vs_layers
from keras_encdec.testing import UNBALANCED_GQA_CONFIG

pytestmark = pytest.mark.skipif(
    keras.backend.backend() != "torch", reason="the functional step is torch's"
)

# Unbalanced widths, GQA 4:1, window 3 (decode passes it), both soft-caps.
CONFIG = UNBALANCED_GQA_CONFIG


def _lm(**overrides):
    keras.utils.set_random_seed(0)
    return T5GemmaSeq2SeqLM(T5GemmaBackbone(**{**CONFIG, **overrides}))


def _inputs(length=12):
    rng = np.random.default_rng(1)
    encoder_mask = np.ones((2, 7), "int32")
    encoder_mask[1, 5:] = 0
    decoder_ids = np.zeros((2, length), "int32")
    decoder_ids[:, :3] = rng.integers(3, 64, (2, 3))
    decoder_mask = np.zeros((2, length), "int32")
    decoder_mask[0, :3] = 1  # Ragged prompts: 3 and 1 tokens.
    decoder_mask[1, :1] = 1
    return {
        "encoder_token_ids": rng.integers(3, 64, (2, 7)).astype("int32"),
        "encoder_padding_mask": encoder_mask,
        "decoder_token_ids": decoder_ids,
        "decoder_padding_mask": decoder_mask,
    }


def _generate(lm, use_fast_decode, sampler="greedy"):
    lm.use_fast_decode = use_fast_decode
    lm.compile(sampler=sampler)
    out = lm.generate(_inputs(), stop_token_ids=None)
    return np.asarray(out["decoder_token_ids"])


@pytest.mark.parametrize(
    "overrides",
    [{}, {"tie_word_embeddings": False, "final_logit_soft_cap": None}],
    ids=["tied", "untied_no_cap"],
)
def test_step_logits_equal_the_layer_path(overrides):
    lm = _lm(**overrides)
    inputs = _inputs()
    ids = ops.convert_to_tensor(inputs["decoder_token_ids"])
    encoder_output, encoder_mask = lm.call_encoder(
        ops.convert_to_tensor(inputs["encoder_token_ids"]),
        ops.convert_to_tensor(inputs["encoder_padding_mask"]),
    )
    length = ids.shape[1]
    cache = lm.build_cache(encoder_output, encoder_mask, length)
    step = fast_decode.TorchDecodeStep(lm)
    fast_encoder_output = step.encode(
        inputs["encoder_token_ids"], inputs["encoder_padding_mask"]
    )
    np.testing.assert_allclose(
        ops.convert_to_numpy(fast_encoder_output),
        ops.convert_to_numpy(encoder_output),
        atol=1e-5,
    )
    fast_cache = step.start(fast_encoder_output, encoder_mask, length)
    # A 4-token prefill (causal, window 3), then one-token steps.
    worst, _ = max_abs_step_vs_layers(lm, step, ids, cache, fast_cache)
    assert worst < 1e-5, worst


def test_greedy_and_beam_tokens_equal_the_layer_path():
    lm = _lm()
    for sampler in ("greedy", BeamSampler(num_beams=3)):
        fast = _generate(lm, True, sampler)
        layers = _generate(lm, False, sampler)
        np.testing.assert_array_equal(fast, layers)
    assert fast_decode.unsupported_reason(lm) == "lm.use_fast_decode is False"


def test_lora_weights_are_merged_into_the_step():
    lm = _lm()
    lm.backbone.enable_lora(2, target="all")
    rng = np.random.default_rng(0)
    for variable in lm.backbone.trainable_variables:
        if "lora_kernel_b" in variable.path:
            variable.assign(rng.normal(0, 0.3, variable.shape))
    np.testing.assert_array_equal(_generate(lm, True), _generate(lm, False))


def test_quantized_models_decode_with_the_layers():
    lm = _lm()
    lm.backbone.decoder_layers[0].mlp.gating.quantize("int8")
    reason = fast_decode.unsupported_reason(lm)
    assert reason is not None and "quantized" in reason
    assert fast_decode.decode_step_for(lm) is None
    assert _generate(lm, True).shape == (2, 12)


def test_the_step_is_reused_until_a_weight_changes():
    lm = _lm()
    step = fast_decode.decode_step_for(lm)
    assert fast_decode.decode_step_for(lm) is step
    kernel = lm.backbone.decoder_layers[0].mlp.linear.kernel
    kernel.assign(kernel + 1.0)
    changed = fast_decode.decode_step_for(lm)
    assert changed is not step
    np.testing.assert_array_equal(
        ops.convert_to_numpy(changed.blocks[0]["down"]),
        ops.convert_to_numpy(kernel),
    )


class _KerasLoopGreedySampler(GreedySampler):
    """A GreedySampler that is not exactly one: keras-hub's loop runs."""


def _generate_with(lm, sampler, stop_token_ids, length=12):
    lm.compile(sampler=sampler)
    out = lm.generate(_inputs(length), stop_token_ids=stop_token_ids)
    return {name: np.asarray(value) for name, value in out.items()}


def test_torch_greedy_loop_equals_the_keras_hub_loop():
    lm = _lm()
    step = fast_decode.decode_step_for(lm)
    assert fast_decode_greedy.greedy_applies(GreedySampler(), step)
    keras_loop_sampler = _KerasLoopGreedySampler()
    assert not fast_decode_greedy.greedy_applies(keras_loop_sampler, step)
    assert not fast_decode_greedy.greedy_applies(TopKSampler(k=3), step)
    assert not fast_decode_greedy.greedy_applies(GreedySampler(), None)
    free = _generate_with(lm, "greedy", None, length=16)["decoder_token_ids"]
    # Stop ids that row 0 (3-token prompt) and row 1 (1-token prompt) each
    # produce at some new position, so both rows stop before the end.
    stops = (int(free[0, 5]), int(free[1, 4]))
    # (temperature, stop ids); the last case is checked further below.
    cases = [(1.0, None), (1.0, stops[:1]), (0.5, stops), (1.0, stops)]
    for temperature, stop_token_ids in cases:
        torch_loop = _generate_with(
            lm, GreedySampler(temperature=temperature), stop_token_ids, 16
        )
        keras_loop = _generate_with(
            lm, _KerasLoopGreedySampler(temperature=temperature),
            stop_token_ids, 16,
        )
        for name in ("decoder_token_ids", "decoder_padding_mask"):
            np.testing.assert_array_equal(torch_loop[name], keras_loop[name])
    # With both stop ids the loop ends at the later row's first stop: the
    # positions after it keep the prompt's padding (zeros).
    prompt_lengths = _inputs(16)["decoder_padding_mask"].sum(axis=-1)
    first_stops = [
        next(p for p in range(n, 16) if free[row, p] in stops)
        for row, n in enumerate(prompt_lengths)
    ]
    end = max(first_stops) + 1
    assert end < 16 and (free[:, end:] != 0).any()
    ids = torch_loop["decoder_token_ids"]
    np.testing.assert_array_equal(ids[:, :end], free[:, :end])
    assert (ids[:, end:] == 0).all(), ids
    mask = torch_loop["decoder_padding_mask"]
    assert mask.sum(axis=-1).tolist() == [p + 1 for p in first_stops]


def test_empty_decoder_prompt_is_a_clear_error():
    lm = _lm()
    inputs = _inputs()
    inputs["decoder_padding_mask"][1] = 0
    for sampler in ("greedy", "top_k"):
        lm.compile(sampler=sampler)
        with pytest.raises(ValueError, match="row lengths \\[3, 0\\]"):
            lm.generate(inputs, stop_token_ids=None)
