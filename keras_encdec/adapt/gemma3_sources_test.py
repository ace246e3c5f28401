"""Gemma 3 sources on a tiny random model: transformers folder, GGUF file
(written like llama.cpp), keras-hub model and preset, and the rebuilt
vocabulary. `tests/real_gemma3_test.py` checks the same on real weights."""

import json

import gguf
import keras
import numpy as np
import pytest
import sentencepiece
import torch

from keras_encdec.adapt import AdaptationError
from keras_encdec.adapt import adapt_decoder_only
from keras_encdec.adapt.conftest import GEMMA3_PIECES
from keras_encdec.adapt.conftest import LENGTH
from keras_encdec.adapt.conftest import WINDOW
from keras_encdec.adapt.conftest import token_batch
from keras_encdec.adapt.conftest import write_gemma3_gguf
from keras_encdec.adapt.gguf_source import from_gguf
from keras_encdec.adapt.keras_hub_gemma3 import keras_hub_gemma3_kwargs
from keras_encdec.adapt.keras_hub_gemma3 import to_keras_hub_gemma3
from keras_encdec.adapt.source_types import GEMMA3_LAYER_ROLES
from keras_encdec.adapt.sources import open_source
from keras_encdec.adapt.verify import max_abs_difference
from keras_encdec.convert.safetensors_io import CheckpointError

TOLERANCE = 1e-5
only_jax = pytest.mark.skipif(
    keras.backend.backend() != "jax",
    reason="Backend-independent (numpy and files), checked once on jax.",
)


def all_roles(source):
    return [("embedding", None), ("final_norm", None)] + [
        (role, i) for i in range(source.config["num_layers"])
        for role in GEMMA3_LAYER_ROLES
    ]


def max_tensor_difference(a, b):
    assert set(a.names()) and len(a.names()) == len(b.names())
    return max(
        float(np.abs(a.read_role(*key) - b.read_role(*key)).max())
        for key in all_roles(a)
    )


def test_transformers_folder_to_keras_hub_matches_transformers(
    hf_gemma3_folder, gemma3_lm
):
    _, model = hf_gemma3_folder
    assert LENGTH > WINDOW and model.config.layer_types[-1] == "full_attention"
    ids, mask = token_batch(gemma3_lm.backbone.vocabulary_size)
    with torch.no_grad():
        expected = model(torch.tensor(ids)).logits.numpy()
    ours = gemma3_lm({"token_ids": ids, "padding_mask": mask})
    error = max_abs_difference(ours, expected)
    print(f"tiny Gemma 3, keras-hub vs transformers max-abs: {error:.3g}")
    assert error <= TOLERANCE


def test_gguf_equals_transformers_folder(hf_gemma3_folder, gemma3_gguf_file):
    folder_source = open_source(str(hf_gemma3_folder[0]))
    gguf_source = open_source(gemma3_gguf_file)
    assert gguf_source.family == "gemma3"
    assert gguf_source.config == folder_source.config
    # F32 storage: only the `1 + w` round trip of the norms may round.
    assert max_tensor_difference(gguf_source, folder_source) <= 1e-6


@only_jax
def test_transformers_gguf_loader_reads_our_tiny_file(
    hf_gemma3_folder, gemma3_gguf_file
):
    """The tiny file follows llama.cpp's tensor conventions as transformers
    reads them, so the GGUF tests above check our reader, not our writer.
    (Weights only: transformers takes `query_pre_attn_scalar` from its
    config default, 256, where llama.cpp uses head_dim.)"""
    from transformers import Gemma3ForCausalLM

    _, model = hf_gemma3_folder
    folder, name = gemma3_gguf_file.rsplit("/", 1)
    loaded = Gemma3ForCausalLM.from_pretrained(
        folder, gguf_file=name, dtype=torch.float32,
        attn_implementation="eager",
    ).eval()
    theirs, ours = loaded.state_dict(), model.state_dict()
    assert sorted(theirs) == sorted(ours)
    for name, value in ours.items():
        assert (theirs[name] - value).abs().max().item() <= 1e-6, name


@only_jax
def test_quantized_gguf_dequantizes_within_half_a_step(
    hf_gemma3_folder, gemma3_proto, tmp_path
):
    path = write_gemma3_gguf(
        tmp_path / "q8.gguf", hf_gemma3_folder[1], gemma3_proto,
        quantization=gguf.GGMLQuantizationType.Q8_0,
    )
    quantized = from_gguf(path)
    exact = open_source(str(hf_gemma3_folder[0]))
    for role, layer in all_roles(exact):
        a, b = quantized.read_role(role, layer), exact.read_role(role, layer)
        error = float(np.abs(a - b).max())
        if "norm" in role:  # Norms stay F32.
            assert error <= 1e-6, (role, layer)
            continue
        # Q8_0: 32 values share a float16 scale max|w| / 127; rounding to
        # it costs half a step, rounding the scale a little more.
        step = float(np.abs(b).max()) / 127
        assert 0 < error <= 0.6 * step, (role, layer)


def test_gguf_to_keras_hub_matches_transformers(
    hf_gemma3_folder, gemma3_gguf_file
):
    _, model = hf_gemma3_folder
    lm = to_keras_hub_gemma3(gemma3_gguf_file)
    ids, mask = token_batch(lm.backbone.vocabulary_size, seed=2)
    with torch.no_grad():
        expected = model(torch.tensor(ids)).logits.numpy()
    ours = lm({"token_ids": ids, "padding_mask": mask})
    assert max_abs_difference(ours, expected) <= TOLERANCE


@only_jax
def test_gguf_vocabulary_rebuilds_the_sentencepiece_model(
    gemma3_proto, gemma3_gguf_file
):
    """llama.cpp marks every special piece CONTROL and writes whitespace
    runs with spaces; the rebuilt model tokenizes like the original."""
    original = sentencepiece.SentencePieceProcessor(model_proto=gemma3_proto)
    rebuilt = sentencepiece.SentencePieceProcessor(
        model_proto=open_source(gemma3_gguf_file).tokenizer_proto
    )
    assert rebuilt.vocab_size() == original.vocab_size()
    for piece in GEMMA3_PIECES:
        assert rebuilt.is_control(rebuilt.piece_to_id(piece)) is False
        assert rebuilt.piece_to_id(piece) == original.piece_to_id(piece)
    assert [rebuilt.is_control(i) for i in range(3)] == [True] * 3
    assert rebuilt.is_unknown(3)
    texts = [
        "the quick brown fox", "def f(x):\n    return x  # done",
        "<start_of_turn>user\nhi<end_of_turn>", "two  three   spaces",
        "emoji 🍕 and accents café", "<mask> stays whole", "",
    ]
    for text in texts:
        assert rebuilt.encode(text) == original.encode(text), repr(text)
        assert rebuilt.decode(rebuilt.encode(text)) == text


def test_keras_hub_gemma3_model_and_preset_sources(
    hf_gemma3_folder, gemma3_lm, tmp_path
):
    folder_source = open_source(str(hf_gemma3_folder[0]))
    model_source = open_source(gemma3_lm)
    assert model_source.config == folder_source.config
    assert model_source.tokenizer_proto == folder_source.tokenizer_proto
    assert max_tensor_difference(model_source, folder_source) == 0.0
    gemma3_lm.save_to_preset(str(tmp_path))
    preset_source = open_source(str(tmp_path))
    assert preset_source.config == folder_source.config
    assert max_tensor_difference(preset_source, folder_source) == 0.0


@only_jax
def test_gemma3_errors(hf_gemma3_folder, gemma3_gguf_file, gemma2_lm,
                       tmp_path):
    not_gguf = tmp_path / "model.gguf"
    not_gguf.write_bytes(b"not a gguf file")
    with pytest.raises(CheckpointError, match="not a GGUF file"):
        open_source(str(not_gguf))
    llama = tmp_path / "llama.gguf"
    writer = gguf.GGUFWriter(str(llama), "llama")
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.close()
    with pytest.raises(AdaptationError, match="GGUF 'llama' model; only"):
        open_source(str(llama))
    source = open_source(gemma3_gguf_file)
    config = dict(source.config, query_pre_attn_scalar=12)
    with pytest.raises(AdaptationError, match="query_pre_attn_scalar=12"):
        keras_hub_gemma3_kwargs(config)
    with pytest.raises(AdaptationError, match="same Gemma generation"):
        adapt_decoder_only(gemma2_lm, source)
    config = json.loads((hf_gemma3_folder[0] / "config.json").read_text())
    config["rope_parameters"]["full_attention"] = {
        "rope_type": "yarn", "rope_theta": 1e6, "factor": 4.0}
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(AdaptationError, match="rope_type='yarn'"):
        open_source(str(tmp_path))
