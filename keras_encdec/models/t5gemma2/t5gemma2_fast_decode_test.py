"""T5Gemma2DecodeStep: same logits and tokens as the Keras layer path."""

import keras
import numpy as np
import pytest
from keras import ops
from keras_hub.samplers import BeamSampler

from keras_encdec import testing
from keras_encdec.models import T5Gemma2Backbone
from keras_encdec.models import T5Gemma2Seq2SeqLM
from keras_encdec.models import fast_decode
from keras_encdec.models.fast_decode_testing import max_abs_step_vs_layers
from keras_encdec.models.t5gemma2.t5gemma2_fast_decode import T5Gemma2DecodeStep

pytestmark = pytest.mark.skipif(
    keras.backend.backend() != "torch", reason="the functional step is torch's"
)

VISION = dict(image_size=28, patch_size=7, hidden_dim=16, num_layers=1,
              num_heads=2, intermediate_dim=32)
EOI, IMAGE = 61, 62


def _lm(**overrides):
    # GQA 2:1 and 4:2, windows 3 (encoder) and 2 (decoder) shorter than
    # the sequences, sliding and full blocks, RoPE scaling 2 on full blocks,
    # a final soft-cap, random norms and EOI row.
    config = testing.tiny_t5gemma2_kwargs(**{
        "encoder_layer_types": ["sliding_attention", "full_attention"],
        "decoder_layer_types": ["sliding_attention", "full_attention",
                                "sliding_attention"],
        "eoi_token_index": EOI, "image_token_index": IMAGE, **overrides,
    })
    lm = T5Gemma2Seq2SeqLM(T5Gemma2Backbone(**config))
    rng = np.random.default_rng(0)
    for weight in lm.backbone.weights:
        # A small tied table keeps greedy from repeating each token.
        std = 0.05 if weight.path.endswith("/embeddings") else 0.3
        weight.assign(rng.normal(0, std, weight.shape).astype(weight.dtype))
    return lm


def _inputs(length=12, images=False):
    rng = np.random.default_rng(1)
    encoder_ids = rng.integers(3, 60, (2, 9)).astype("int32")
    encoder_ids[0, 2] = EOI
    encoder_mask = np.ones((2, 9), "int32")
    encoder_mask[1, 6:] = 0
    decoder_ids = np.zeros((2, length), "int32")
    decoder_ids[:, :3] = rng.integers(3, 60, (2, 3))
    decoder_ids[1, 0] = EOI  # The decoder embeds the EOI row too.
    decoder_mask = np.zeros((2, length), "int32")
    decoder_mask[0, :3] = 1  # Ragged prompts: 3 and 1 tokens.
    decoder_mask[1, :1] = 1
    inputs = {
        "encoder_token_ids": encoder_ids,
        "encoder_padding_mask": encoder_mask,
        "decoder_token_ids": decoder_ids,
        "decoder_padding_mask": decoder_mask,
    }
    if images:
        encoder_ids[:, 3:7] = IMAGE  # One image of 4 tokens per row.
        inputs["pixel_values"] = rng.normal(0, 1, (2, 1, 28, 28, 3)).astype(
            "float32"
        )
    return inputs


def _generate(lm, use_fast_decode, inputs, sampler="greedy"):
    lm.use_fast_decode = use_fast_decode
    lm.compile(sampler=sampler)
    out = lm.generate(inputs, stop_token_ids=None)
    return np.asarray(out["decoder_token_ids"])


def _max_abs(a, b):
    return float(np.max(np.abs(ops.convert_to_numpy(a) - ops.convert_to_numpy(b))))


def test_step_logits_equal_the_layer_path():
    lm = _lm()
    inputs = _inputs()
    assert fast_decode.unsupported_reason(lm) is None
    step = fast_decode.decode_step_for(lm)
    assert type(step) is T5Gemma2DecodeStep
    ids = ops.convert_to_tensor(inputs["decoder_token_ids"])
    encoder_output, encoder_mask = lm.encode_prompt(
        {k: ops.convert_to_tensor(v) for k, v in inputs.items()}
    )
    fast_encoder_output = step.encode_inputs(lm, inputs)
    assert _max_abs(fast_encoder_output, encoder_output) < 1e-5
    length = ids.shape[1]
    cache = lm.build_cache(encoder_output, encoder_mask, length)
    fast_cache = step.start(fast_encoder_output, encoder_mask, length)
    assert step.mask_cross  # Row 1's encoder padding is masked.

    # A 4-token prefill (causal, window 2), then one-token steps past both
    # windows.
    worst, expected = max_abs_step_vs_layers(lm, step, ids, cache, fast_cache)
    assert worst < 1e-5, worst
    assert float(np.std(ops.convert_to_numpy(expected))) > 0.1  # Not flat.


def test_greedy_and_beam_tokens_equal_the_layer_path():
    lm = _lm()
    inputs = _inputs(length=16)
    fast = _generate(lm, True, inputs)
    np.testing.assert_array_equal(fast, _generate(lm, False, inputs))
    assert len(np.unique(fast[:, 3:])) > 3  # Not one repeated token.
    # Beam search repeats and gathers the step's cache nest.
    beam = _generate(lm, True, inputs, BeamSampler(num_beams=2))
    np.testing.assert_array_equal(
        beam, _generate(lm, False, inputs, BeamSampler(num_beams=2))
    )


def test_greedy_tokens_with_an_image_equal_the_layer_path():
    lm = _lm(vision_config=VISION)
    inputs = _inputs(images=True)
    assert fast_decode.unsupported_reason(lm) is None
    fast = _generate(lm, True, inputs)
    np.testing.assert_array_equal(fast, _generate(lm, False, inputs))
    # The image changes the continuation (it reached the decoder).
    text_only = {k: v for k, v in inputs.items() if k != "pixel_values"}
    assert not np.array_equal(fast, _generate(lm, True, text_only))


def test_quantized_models_decode_with_the_layers():
    lm = _lm()
    lm.backbone.decoder_layers[1].self_attention.query_dense.quantize("int8")
    reason = fast_decode.unsupported_reason(lm)
    assert reason is not None and "quantized" in reason
    assert fast_decode.decode_step_for(lm) is None
    assert _generate(lm, True, _inputs()).shape == (2, 12)
