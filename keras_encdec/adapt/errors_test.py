"""Invariant 5: bad inputs get clear errors."""

import json

import pytest

from keras_encdec.adapt import AdaptationError
from keras_encdec.adapt import adapt_decoder_only
from keras_encdec.adapt.conftest import keras_hub_gemma2
from keras_encdec.adapt.source_types import GemmaSource
from keras_encdec.adapt.sources import open_source
from keras_encdec.convert.safetensors_io import CheckpointError
from keras_encdec.testing import train_sentencepiece


def config_only_source(source, description, proto=None, **changes):
    """A changed architecture under another name (no weights needed)."""
    config = dict(source.config, **changes)
    proto = proto or source.tokenizer_proto
    return GemmaSource(description, config, {}, None, proto)


def test_mismatched_vocabularies(gemma2_lm):
    source = open_source(gemma2_lm)
    other = config_only_source(
        source, "other", vocabulary_size=source.config["vocabulary_size"] + 1
    )
    with pytest.raises(AdaptationError, match="share the vocabulary"):
        adapt_decoder_only(source, other)


def test_mismatched_tokenizers(gemma2_lm):
    source = open_source(gemma2_lm)
    text = ["completely different words here", "and there"]
    other = config_only_source(
        source, "other", proto=train_sentencepiece(64, text=text)
    )
    with pytest.raises(AdaptationError, match="SentencePiece models differ"):
        adapt_decoder_only(source, other)


def test_self_attention_init_on_unbalanced_pair(gemma2_lm):
    source = open_source(gemma2_lm)
    wide = config_only_source(source, "wide", hidden_dim=24)
    with pytest.raises(AdaptationError, match=r"encoder width \(24\)"):
        adapt_decoder_only(
            wide, source, cross_attention_init="self_attention"
        )
    with pytest.raises(ValueError, match="Unknown cross_attention_init"):
        adapt_decoder_only(source, cross_attention_init="copy")


def test_non_gemma2_keras_hub_source(proto):
    gemma1 = keras_hub_gemma2(
        proto, num_layers=1, use_post_ffw_norm=False,
        use_post_attention_norm=False, attention_logit_soft_cap=None,
    )
    with pytest.raises(AdaptationError, match="not a Gemma 2 model"):
        adapt_decoder_only(gemma1)


def test_non_gemma2_transformers_folder(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "llama"}))
    with pytest.raises(AdaptationError, match="not Gemma 2"):
        adapt_decoder_only(str(tmp_path))


def test_missing_checkpoint_files(hf_gemma2_folder, tmp_path):
    folder, _ = hf_gemma2_folder
    config = json.loads((folder / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="No safetensors weights"):
        adapt_decoder_only(str(tmp_path))
    with pytest.raises(CheckpointError, match="not an existing folder"):
        adapt_decoder_only(str(tmp_path / "nowhere"))
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(CheckpointError, match="Missing 'config.json'"):
        adapt_decoder_only(str(empty))
