"""Gemma 3 270M from its GGUF file (real weights) against transformers.

The reference is transformers 5.23's own GGUF loader (`Gemma3ForCausalLM.
from_pretrained(folder, gguf_file=name)`, fp32, eager attention) and its GGUF
tokenizer (`AutoTokenizer`); both sides dequantize the same Q4_K_M file, so
they must agree to float32 rounding. The conversion does not depend on the
Keras backend, so these run on one backend (torch: its eager calls
compile nothing, about half jax's time here); fixtures and the disk cache are in
`tests/conftest.py`.
"""

import keras
import numpy as np
import pytest

from keras_encdec.adapt.gguf_source import from_gguf
from keras_encdec.adapt.source_types import GEMMA3_LAYER_ROLES
from keras_encdec.adapt.sources import open_source
from keras_encdec.adapt.verify import causal_encoder_hidden_states
from keras_encdec.adapt.verify import max_abs_difference
from keras_encdec.models import T5GemmaTokenizer

pytestmark = pytest.mark.skipif(
    keras.backend.backend() != "torch",
    reason="Backend-independent conversion, checked once (on torch: eager "
    "calls compile nothing, about half the time of jax here).",
)
LOGITS_TOLERANCE = 1e-3
TENSOR_TOLERANCE = 1e-6
BOS = 2


def keras_hub_logits(lm, ids):
    ids = np.asarray([ids], "int32")
    return lm({"token_ids": ids, "padding_mask": np.ones_like(ids)})[0]


def test_keras_hub_gemma3_from_gguf_matches_transformers_logits(
    gemma3_keras_hub, gemma3_reference
):
    prompts = gemma3_reference["tokens"]["prompt_ids"]
    assert len(prompts["long"]) > 512  # Past the sliding window.
    errors = {}
    for key, ids in prompts.items():
        expected = gemma3_reference["arrays"][f"logits/{key}"]
        ours = keras_hub_logits(gemma3_keras_hub, ids)[-len(expected):]
        errors[key] = max_abs_difference(ours, expected)
        np.testing.assert_array_equal(
            np.argmax(keras.ops.convert_to_numpy(ours), -1),
            np.argmax(expected, -1),
        )
    print("keras-hub Gemma 3 (GGUF) vs transformers, max-abs logits:", errors)
    assert max(errors.values()) <= LOGITS_TOLERANCE


def test_gguf_weights_equal_transformers_gguf_loader(
    gemma3_gguf, gemma3_reference
):
    """Tensor by tensor, in our layout: dequantization, the `1 + w` norm
    storage and the q/k layouts agree with transformers' GGUF loader (saved
    as a Gemma3ForCausalLM folder, so that reader is exercised too)."""
    ours = from_gguf(gemma3_gguf)
    theirs = open_source(gemma3_reference["folder"])
    # transformers keeps the float32 epsilon as is (9.99999997e-07); we
    # read it back as the decimal it was written from (1e-06).
    epsilons = ours.config["rms_norm_eps"], theirs.config["rms_norm_eps"]
    assert np.float32(epsilons[0]) == np.float32(epsilons[1])
    assert ours.config == dict(theirs.config, rms_norm_eps=epsilons[0])
    roles = [("embedding", None), ("final_norm", None)] + [
        (role, i) for i in range(ours.config["num_layers"])
        for role in GEMMA3_LAYER_ROLES
    ]
    worst = 0.0
    for role, layer in roles:
        a, b = ours.read_role(role, layer), theirs.read_role(role, layer)
        assert a.shape == b.shape, (role, layer)
        worst = max(worst, float(np.abs(a - b).max()))
    print(f"GGUF vs transformers folder, {len(roles)} weights, max-abs {worst}")
    assert worst <= TENSOR_TOLERANCE


def tokenizers(lm):
    """Our rebuilt vocabulary as keras-hub's and as our tokenizer."""
    keras_hub_tokenizer = lm.preprocessor.tokenizer
    return keras_hub_tokenizer, T5GemmaTokenizer(
        proto=keras_hub_tokenizer.proto
    )


def ids_of(tokenizer, text):
    return [int(i) for i in np.asarray(tokenizer(text))]


def test_tokenizer_ids_match_transformers(gemma3_keras_hub, gemma3_reference):
    tokens = gemma3_reference["tokens"]
    theirs = dict(zip(tokens["strings"], tokens["ids"]))
    strings = tokens["strings"][:-2]  # The last two: known differences.
    assert len(strings) == 20
    for tokenizer in tokenizers(gemma3_keras_hub):
        for text in strings:
            assert ids_of(tokenizer, text) == theirs[text], repr(text)
    keras_hub_tokenizer = gemma3_keras_hub.preprocessor.tokenizer
    for key, ids in tokens["prompt_ids"].items():
        text = tokens["prompts"][key]
        assert [BOS] + ids_of(keras_hub_tokenizer, text) == ids, key


def test_known_tokenizer_differences(gemma3_keras_hub, gemma3_reference):
    """Where the SentencePiece rebuild and transformers' GGUF tokenizer
    disagree, pinned: the GGUF vocabulary stops at 31-space pieces, which
    the two split differently; transformers matches control text such as
    "<bos>" as the special token, SentencePiece (like Gemma's own model)
    tokenizes it as text."""
    tokens = gemma3_reference["tokens"]
    theirs = dict(zip(tokens["strings"], tokens["ids"]))
    spaces = "a" + " " * 40 + "b"
    literal = "literal <bos> text"
    keras_hub_tokenizer, ours_tokenizer = tokenizers(gemma3_keras_hub)
    for tokenizer in (keras_hub_tokenizer, ours_tokenizer):
        a, b = ids_of(tokenizer, "a"), ids_of(tokenizer, "b")
        run = ids_of(tokenizer, spaces)
        # Greedy longest pieces: 31 spaces (id 167), then 9 (id 145).
        assert run == a + [167, 145] + b
        assert run != theirs[spaces]
        assert tokenizer.detokenize(theirs[spaces]) == spaces
        assert BOS in theirs[literal]
        assert BOS not in ids_of(tokenizer, literal)
        assert tokenizer.detokenize(ids_of(tokenizer, literal)) == literal


# --- Gemma 3 adapted into T5Gemma 2 (`python -m keras_encdec adapt`) ------
def empty_encoder_inputs(ids, mask=None):
    """Decoder inputs `ids`; a fully masked (empty) encoder."""
    ids = np.asarray(ids, "int32")
    mask = np.ones_like(ids) if mask is None else mask
    return {
        "encoder_token_ids": np.zeros((ids.shape[0], 1), "int32"),
        "encoder_padding_mask": np.zeros((ids.shape[0], 1), "int32"),
        "decoder_token_ids": ids,
        "decoder_padding_mask": mask,
    }


def test_adapt_command_report(gemma3_t5gemma2):
    lm, report = gemma3_t5gemma2
    params = lm.backbone.count_params()
    assert f"{params:,} parameters" in report
    assert "GiB of weights in float32" in report
    assert lm.backbone.encoder_num_layers == lm.backbone.decoder_num_layers


def test_adapted_decoder_with_empty_encoder_matches_transformers(
    gemma3_t5gemma2, gemma3_reference
):
    lm, _ = gemma3_t5gemma2
    errors = {}
    for key, ids in gemma3_reference["tokens"]["prompt_ids"].items():
        expected = gemma3_reference["arrays"][f"logits/{key}"]
        logits = lm(empty_encoder_inputs([ids]))[0][-len(expected):]
        errors[key] = max_abs_difference(logits, expected)
        np.testing.assert_array_equal(
            np.argmax(keras.ops.convert_to_numpy(logits), -1),
            np.argmax(expected, -1),
        )
    print("T5Gemma 2 decoder, empty encoder, vs transformers Gemma 3:", errors)
    assert max(errors.values()) <= LOGITS_TOLERANCE


def test_adapted_greedy_generate_matches_transformers(
    gemma3_t5gemma2, gemma3_reference
):
    from keras_encdec.models import T5Gemma2Seq2SeqLM

    lm = T5Gemma2Seq2SeqLM(gemma3_t5gemma2[0].backbone, preprocessor=None)
    lm.compile(sampler="greedy")
    prompts = gemma3_reference["tokens"]["prompt_ids"]
    expected = {key: gemma3_reference["arrays"][f"greedy/{key}"]
                for key in ("france", "code")}
    new = min(len(v) for v in expected.values())
    assert new >= 16
    width = max(len(prompts[key]) for key in expected) + new
    ids = np.zeros((len(expected), width), "int32")
    for row, key in enumerate(expected):
        ids[row, :len(prompts[key])] = prompts[key]
    out = lm.generate(
        empty_encoder_inputs(ids, (ids != 0).astype("int32")),
        stop_token_ids=None,
    )
    generated = np.asarray(out["decoder_token_ids"])
    for row, (key, tokens) in enumerate(expected.items()):
        start = len(prompts[key])
        np.testing.assert_array_equal(
            generated[row, start:start + new], tokens[:new], err_msg=key
        )


def test_adapted_encoder_run_causally_equals_gemma3_hidden_states(
    gemma3_t5gemma2, gemma3_reference
):
    backbone = gemma3_t5gemma2[0].backbone
    errors = {}
    for key, ids in gemma3_reference["tokens"]["prompt_ids"].items():
        expected = gemma3_reference["arrays"][f"hidden/{key}"]
        ids = np.asarray([ids], "int32")
        ours = causal_encoder_hidden_states(backbone, ids, np.ones_like(ids))
        errors[key] = max_abs_difference(ours[0][-len(expected):], expected)
    print("T5Gemma 2 encoder run causally vs Gemma 3 hidden states:", errors)
    assert max(errors.values()) <= LOGITS_TOLERANCE


def test_adapted_all_masked_encoder_is_finite(gemma3_t5gemma2,
                                              gemma3_reference):
    backbone = gemma3_t5gemma2[0].backbone
    ids = np.asarray([gemma3_reference["tokens"]["prompt_ids"]["prose"]])
    inputs = dict(empty_encoder_inputs(ids), encoder_token_ids=ids,
                  encoder_padding_mask=np.zeros_like(ids))
    for value in backbone(inputs).values():
        assert np.isfinite(keras.ops.convert_to_numpy(value)).all()
