"""LoRA: targets, trainable counts, adapter-only files, merge and export."""

import os

import h5py
import keras
import numpy as np
import pytest

from keras_encdec.models import T5GemmaBackbone
from keras_encdec.models import T5GemmaSeq2SeqLM
from keras_encdec.testing import random_batch
from keras_encdec.training import resolve_lora_targets

VOCAB = 64
WIDTH, FFN, HEADS, KV_HEADS, HEAD_DIM = 32, 48, 4, 2, 8


def tiny_lm(seed=0, **overrides):
    keras.utils.set_random_seed(seed)
    config = dict(vocabulary_size=VOCAB)
    for side in ("encoder", "decoder"):
        config.update(
            {
                f"{side}_hidden_dim": WIDTH,
                f"{side}_intermediate_dim": FFN,
                f"{side}_num_layers": 2,
                f"{side}_num_heads": HEADS,
                f"{side}_num_kv_heads": KV_HEADS,
                f"{side}_head_dim": HEAD_DIM,
            }
        )
    config.update(overrides)
    return T5GemmaSeq2SeqLM(T5GemmaBackbone(**config))


def train_batch():
    x = random_batch(4, 10, 8, VOCAB, padded=True, seed=1)
    y = np.roll(x["decoder_token_ids"], -1, axis=1)
    return x, y, x["decoder_padding_mask"]


def numpy_logits(lm, x):
    return keras.ops.convert_to_numpy(lm(x)).astype("float32")


def lora_size(kernel_shape, rank):
    """Parameters of `A: kernel_shape[:-1] + (rank,)` and `B: (rank, last)`."""
    return int(np.prod(kernel_shape[:-1])) * rank + rank * kernel_shape[-1]


QUERY = (WIDTH, HEADS, HEAD_DIM)
KEY = (WIDTH, KV_HEADS, HEAD_DIM)
OUTPUT = (HEADS, HEAD_DIM, WIDTH)


def test_targets_select_the_documented_projections():
    backbone = tiny_lm().backbone
    attention = resolve_lora_targets(backbone, "attention")
    # 2 encoder self + 2 decoder self + 2 decoder cross attentions, 4 each.
    assert len(attention) == 6 * 4
    assert len(resolve_lora_targets(backbone, "attention+mlp")) == 6 * 4 + 4 * 3
    assert resolve_lora_targets(backbone, "all") == resolve_lora_targets(
        backbone, "attention+mlp"
    )
    cross = resolve_lora_targets(backbone, ["decoder.cross_attention"])
    assert cross == sorted(
        f"decoder_layer_{i}/cross_attention/{name}"
        for i in range(2)
        for name in ("query", "key", "value", "attention_output")
    )
    assert resolve_lora_targets(backbone, ["encoder.mlp.ffw_linear"]) == [
        "encoder_layer_0/mlp/ffw_linear",
        "encoder_layer_1/mlp/ffw_linear",
    ]
    # keras-hub's bare names and globs.
    assert len(resolve_lora_targets(backbone, ["query", "value"])) == 12
    assert resolve_lora_targets(backbone, ["decoder_layer_1/self_*/key"]) == [
        "decoder_layer_1/self_attention/key"
    ]
    with pytest.raises(ValueError, match="matches no projection"):
        resolve_lora_targets(backbone, ["decoder.cross_attention.nope"])
    with pytest.raises(ValueError, match="Unknown LoRA target alias"):
        resolve_lora_targets(backbone, ["middle.mlp"])


def test_enable_lora_freezes_everything_else_and_counts():
    backbone = tiny_lm().backbone
    rank = 3
    count = backbone.enable_lora(rank, target="decoder.cross_attention")
    # Cross-attention query/key/value/output in 2 decoder layers.
    expected = 2 * (
        lora_size(QUERY, rank) + 2 * lora_size(KEY, rank)
        + lora_size(OUTPUT, rank)
    )
    assert count == expected
    assert all("lora_kernel" in v.path for v in backbone.trainable_weights)
    assert all("cross_attention" in v.path for v in backbone.trainable_weights)
    with pytest.raises(ValueError, match="already enabled"):
        backbone.enable_lora(rank)
    # keras-hub's positional call style still works on a fresh model.
    other = tiny_lm().backbone
    other.enable_lora(2, ["query", "value"])
    assert len(other.trainable_weights) == 2 * 12


def test_adapter_file_roundtrip_merge_and_transformers_export(tmp_path):
    lm = tiny_lm()
    backbone = lm.backbone
    backbone.enable_lora(4, alpha=8, target="attention+mlp")
    lm.compile(
        optimizer=keras.optimizers.SGD(0.5),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    x, y, weight = train_batch()
    base = numpy_logits(tiny_lm(), x)
    lm.fit(x, y, sample_weight=weight, epochs=3, batch_size=4, verbose=0)
    tuned = numpy_logits(lm, x)
    assert np.abs(tuned - base).max() > 1e-3  # the adapters learned something

    path = os.path.join(tmp_path, "adapter.lora.h5")
    backbone.save_lora_weights(path)
    with h5py.File(path, "r") as f:
        datasets = []
        f.visititems(
            lambda name, obj: datasets.append(name)
            if isinstance(obj, h5py.Dataset)
            else None
        )
        assert int(f["lora"].attrs["rank"]) == 4
        assert float(f["lora"].attrs["alpha"]) == 8.0
    assert len(datasets) == 2 * (6 * 4 + 4 * 3)
    assert all(name.split("/")[-1] in ("lora_kernel_a", "lora_kernel_b")
               for name in datasets)

    restored = tiny_lm()  # same seed: the same base weights
    restored.backbone.load_lora_weights(path)
    assert np.abs(numpy_logits(restored, x) - tuned).max() == 0.0

    merged_count = restored.backbone.merge_lora()
    assert merged_count == 6 * 4 + 4 * 3
    assert not any("lora" in v.path for v in restored.weights)
    assert len(restored.trainable_weights) == len(restored.weights)
    merged = numpy_logits(restored, x)
    assert np.abs(merged - tuned).max() <= 1e-5

    import torch  # noqa: F401  (transformers reference)
    from transformers import T5GemmaForConditionalGeneration

    from keras_encdec.testing import transformers_logits

    folder = os.path.join(tmp_path, "export")
    restored.export_to_transformers(folder)
    reference = T5GemmaForConditionalGeneration.from_pretrained(
        folder, attn_implementation="eager"
    ).eval()
    expected = transformers_logits(reference, x)
    mask = x["decoder_padding_mask"].astype(bool)
    assert np.abs(expected - merged)[mask].max() <= 1e-4


def test_load_into_model_with_other_lora_raises(tmp_path):
    lm = tiny_lm()
    lm.backbone.enable_lora(2, target="decoder")
    path = os.path.join(tmp_path, "a.lora.h5")
    lm.backbone.save_lora_weights(path)
    other = tiny_lm()
    other.backbone.enable_lora(2, target="encoder")
    with pytest.raises(ValueError, match="different rank or targets"):
        other.backbone.load_lora_weights(path)
    with pytest.raises(ValueError, match=r"must end in `.lora.h5`"):
        lm.backbone.save_lora_weights(os.path.join(tmp_path, "a.h5"))
