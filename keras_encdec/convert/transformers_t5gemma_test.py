"""Transformers <-> keras-encdec conversion: bit-identical round trips and
exports that transformers loads with the same logits."""

import os

import numpy as np
import pytest
from keras import ops

from keras_encdec import testing
from keras_encdec.convert.safetensors_io import INDEX_FILE
from keras_encdec.convert.safetensors_io import SafetensorsReader
from keras_encdec.models import T5GemmaSeq2SeqLM
from keras_encdec.models import T5GemmaSeq2SeqLMPreprocessor
from keras_encdec.models import T5GemmaTokenizer

CASE = dict(
    encoder=dict(hidden_size=40, head_dim=10, num_key_value_heads=1,
                 sliding_window=3),
    decoder=dict(hidden_size=24, head_dim=6, sliding_window=2),
)


def _raw(reader, name):
    return reader.get(name).tobytes()


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
@pytest.mark.parametrize("tied", [True, False])
def test_round_trip_is_bit_identical(tmp_path, dtype, tied):
    import torch

    reference = testing.make_transformers_t5gemma(tie_word_embeddings=tied, **CASE)
    reference.to(getattr(torch, dtype)).save_pretrained(tmp_path / "hf")
    lm = T5GemmaSeq2SeqLM.from_preset(str(tmp_path / "hf"))
    assert str(lm.backbone.token_embedding.embeddings.dtype) == dtype
    lm.export_to_transformers(str(tmp_path / "back"))

    original = SafetensorsReader(str(tmp_path / "hf"))
    exported = SafetensorsReader(str(tmp_path / "back"))
    assert sorted(exported.keys()) == sorted(original.keys())
    for name in original.keys():
        assert exported.dtype(name) == original.dtype(name), name
        assert _raw(exported, name) == _raw(original, name), name


def test_export_loads_in_transformers_with_same_logits(tmp_path):
    import torch
    from transformers import T5GemmaForConditionalGeneration

    reference = testing.make_transformers_t5gemma(
        tie_word_embeddings=False, **CASE
    )
    reference.save_pretrained(tmp_path / "hf")
    tokenizer = T5GemmaTokenizer(proto=testing.train_sentencepiece(64))
    lm = T5GemmaSeq2SeqLM.from_preset(
        str(tmp_path / "hf"),
        preprocessor=T5GemmaSeq2SeqLMPreprocessor(tokenizer),
    )
    # Tiny shards force the sharded layout with an index file.
    lm.export_to_transformers(str(tmp_path / "out"), max_shard_bytes=20_000)
    assert os.path.exists(tmp_path / "out" / INDEX_FILE)
    assert os.path.exists(tmp_path / "out" / "tokenizer.model")

    reloaded = T5GemmaForConditionalGeneration.from_pretrained(
        str(tmp_path / "out"), attn_implementation="eager"
    ).eval()
    assert reloaded.dtype == torch.float32
    batch = testing.random_batch(2, 9, 7, 64, padded=True, seed=3)
    expected = testing.transformers_logits(reloaded, batch)
    actual = ops.convert_to_numpy(lm(batch))
    assert np.max(np.abs(actual - expected)) <= 1e-4
    assert np.max(np.abs(expected - testing.transformers_logits(reference, batch))) == 0
