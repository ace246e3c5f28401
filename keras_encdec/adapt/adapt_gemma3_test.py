"""Gemma 3 -> T5Gemma 2 on a tiny random model: the adapted model still
holds its source (`tests/real_gemma3_test.py` checks the same on real
weights)."""

import keras
import numpy as np
import pytest
import torch

from keras_encdec import __main__ as cli_main
from keras_encdec.adapt import AdaptationError
from keras_encdec.adapt import adapt_decoder_only
from keras_encdec.adapt.adapt import plan_adaptation
from keras_encdec.adapt.conftest import WINDOW
from keras_encdec.adapt.conftest import token_batch
from keras_encdec.adapt.source_types import GemmaSource
from keras_encdec.adapt.sources import open_source
from keras_encdec.adapt.verify import causal_encoder_hidden_states
from keras_encdec.adapt.verify import max_abs_difference
from keras_encdec.models import T5Gemma2Seq2SeqLM

TOLERANCE = 1e-5
only_jax = pytest.mark.skipif(
    keras.backend.backend() != "jax",
    reason="Backend-independent (configs, files), checked once on jax.",
)


def empty_encoder_inputs(ids, mask):
    """The decoder sees `ids`; the encoder is fully masked (empty)."""
    batch = ids.shape[0]
    return {
        "encoder_token_ids": np.full((batch, 4), 5, "int32"),
        "encoder_padding_mask": np.zeros((batch, 4), "int32"),
        "decoder_token_ids": ids,
        "decoder_padding_mask": mask,
    }


@pytest.fixture(scope="module")
def adapted(hf_gemma3_folder):
    return adapt_decoder_only(str(hf_gemma3_folder[0]))


def test_empty_encoder_decoder_reproduces_gemma3(hf_gemma3_folder, adapted):
    _, model = hf_gemma3_folder
    assert isinstance(adapted, T5Gemma2Seq2SeqLM)
    assert adapted.backbone.decoder_sliding_window == WINDOW
    ids, mask = token_batch(adapted.backbone.vocabulary_size, seed=1)
    with torch.no_grad():
        expected = model(torch.tensor(ids)).logits.numpy()
    ours = adapted(empty_encoder_inputs(ids, mask))
    error = max_abs_difference(ours, expected)
    print(f"tiny T5Gemma 2, empty encoder vs Gemma 3 max-abs: {error:.3g}")
    assert error <= TOLERANCE
    # With a real encoder the merged attention sees it: a different function.
    inputs = dict(empty_encoder_inputs(ids, mask),
                  encoder_padding_mask=np.ones((ids.shape[0], 4), "int32"))
    assert max_abs_difference(adapted(inputs), expected) > 1e-2


def test_all_masked_encoder_gives_finite_outputs(adapted):
    ids, mask = token_batch(adapted.backbone.vocabulary_size, seed=2)
    outputs = adapted.backbone(empty_encoder_inputs(ids, mask))
    for value in outputs.values():
        assert np.isfinite(keras.ops.convert_to_numpy(value)).all()


def test_encoder_run_causally_reproduces_gemma3(hf_gemma3_folder, adapted):
    _, model = hf_gemma3_folder
    ids, mask = token_batch(adapted.backbone.vocabulary_size, seed=3)
    with torch.no_grad():
        expected = model.model(torch.tensor(ids)).last_hidden_state.numpy()
    ours = causal_encoder_hidden_states(adapted.backbone, ids, mask)
    assert max_abs_difference(ours, expected) <= TOLERANCE
    bidirectional = adapted.backbone.encode(ids, mask)
    assert max_abs_difference(bidirectional, expected) > 1e-2


def test_greedy_generate_reproduces_gemma3(hf_gemma3_folder, adapted):
    _, model = hf_gemma3_folder
    prompt, new = [2, 40, 41, 42], 8
    with torch.no_grad():
        expected = model.generate(
            torch.tensor([prompt]), max_new_tokens=new, do_sample=False,
            min_new_tokens=new,
        )[0, len(prompt):].numpy()
    lm = T5Gemma2Seq2SeqLM(backbone=adapted.backbone, preprocessor=None)
    lm.compile(sampler="greedy")
    ids = np.zeros((1, len(prompt) + new), "int32")
    ids[0, :len(prompt)] = prompt
    mask = (ids != 0).astype("int32")
    out = lm.generate(empty_encoder_inputs(ids, mask), stop_token_ids=None)
    np.testing.assert_array_equal(
        np.asarray(out["decoder_token_ids"])[0, len(prompt):], expected
    )


@only_jax
def test_plan_counts_the_built_parameters(hf_gemma3_folder, adapted):
    plan = plan_adaptation(str(hf_gemma3_folder[0]))
    assert plan["num_params"] == adapted.backbone.count_params()
    assert plan["memory_bytes"] == 4 * plan["num_params"]


@only_jax
def test_gemma3_pairs_t5gemma2_cannot_express(gemma3_lm, hf_gemma3_folder):
    source = open_source(gemma3_lm)

    def changed(**changes):
        return GemmaSource("changed", dict(source.config, **changes), {},
                           None, source.tokenizer_proto)

    with pytest.raises(AdaptationError, match="one embedding table"):
        adapt_decoder_only(source, changed(hidden_dim=64))
    with pytest.raises(AdaptationError, match="local RoPE wavelength"):
        adapt_decoder_only(source, changed(rope_local_max_wavelength=5e3))
    with pytest.raises(AdaptationError, match="attention_logit_soft_cap=50"):
        adapt_decoder_only(changed(attention_logit_soft_cap=50.0))
    with pytest.raises(AdaptationError, match="no cross-attention to init"):
        adapt_decoder_only(source, cross_attention_init="zeros")


@only_jax
def test_cli_adapts_a_gguf_file(gemma3_gguf_file, adapted, tmp_path, capsys,
                                monkeypatch):
    monkeypatch.setattr(
        cli_main, "COMMANDS", {"adapt": "keras_encdec.adapt.cli"}
    )
    output = tmp_path / "t5gemma2"
    code = cli_main.main([
        "adapt", "--encoder", gemma3_gguf_file, "--output", str(output)
    ])
    assert code == 0
    report = capsys.readouterr().out
    assert "merged with the decoder's self-attention" in report
    assert f"{adapted.backbone.count_params():,} parameters" in report
    assert "of weights in float32" in report
    loaded = T5Gemma2Seq2SeqLM.from_preset(str(output))
    for a, b in zip(loaded.weights, adapted.weights):
        assert a.path == b.path
        # The GGUF stores the norms as 1 + w: float32 rounding only.
        assert max_abs_difference(a, b) <= 1e-6, a.path
    assert loaded.preprocessor.tokenizer.proto == (
        adapted.preprocessor.tokenizer.proto)
