"""Loading keras-hub `T5Gemma2Backbone` / `T5Gemma2Seq2SeqLM` preset folders.

Tiny random keras-hub models (windows shorter than the sequences, GQA,
linear RoPE scaling, norms, tables and EOI rows drawn with real spread) are
saved with keras-hub's own `save_to_preset` and loaded through our
`from_preset`. keras-hub and transformers differ only where ANCHORS section
7 says, and these inputs avoid that: no attention soft-cap, no cached
decoding. Outputs are compared at the non-padded positions (padded ones are
never read: keras-hub's -1e9 additive masks and our masks treat a query
whose window holds only padding differently).
"""

import json
import os

import keras
import keras_hub
import numpy as np
import pytest
from keras import ops

from keras_encdec import testing
from keras_encdec.convert.weight_mapping import WeightMismatchError
from keras_encdec.models import T5Gemma2Backbone
from keras_encdec.models import T5Gemma2Seq2SeqLM

TOLERANCE = 1e-4
VOCABULARY_SIZE = 64
EOI, IMAGE = 61, 62
TOKENS_PER_IMAGE = 4


def make_hub_backbone(vision=False, seed=0, tie=True):
    """A random keras-hub T5Gemma 2 (tables and EOI rows tied unless
    `tie=False`)."""
    from keras_hub.src.models.gemma3.gemma3_vision_encoder import (
        Gemma3VisionEncoder,
    )

    vision_encoder = None
    if vision:
        vision_encoder = Gemma3VisionEncoder(
            image_size=28, patch_size=7, num_heads=2, hidden_dim=16,
            num_layers=1, intermediate_dim=32, output_dim=32, pool_size=2,
        )
    sides = {}
    for side, kv_heads in (("encoder", 2), ("decoder", 1)):
        sides.update({
            f"{side}_hidden_dim": 32,
            f"{side}_intermediate_dim": 48,
            f"{side}_num_layers": 2,
            f"{side}_num_attention_heads": 4,
            f"{side}_num_key_value_heads": kv_heads,
            f"{side}_head_dim": 8,
            f"{side}_layer_types": ["sliding_attention", "full_attention"],
        })
    backbone = keras_hub.models.T5Gemma2Backbone(
        vocabulary_size=VOCABULARY_SIZE,
        query_pre_attn_scalar=6,
        sliding_window=4,
        rope_max_wavelength=500.0,
        global_rope_scaling_factor=4.0,
        vision_encoder=vision_encoder,
        eoi_token_index=EOI,
        **sides,
    )
    rng = np.random.default_rng(seed)
    for weight in backbone.weights:
        std = 0.05 if "embedding/" in weight.path else 0.3
        if "norm" in weight.path or "gamma" in weight.path:
            std = 1.0
        weight.assign(rng.normal(0.0, std, weight.shape).astype("float32"))
    if tie:
        backbone.decoder_token_embedding.embeddings.assign(
            backbone.token_embedding.embeddings
        )
        if vision:
            backbone.decoder_eoi_embedding.assign(backbone.encoder_eoi_embedding)
    return backbone


def _batch(seed=1):
    """Padded ids below the EOI token, with EOI in both stacks."""
    batch = testing.random_batch(3, 16, 12, EOI, padded=True, seed=seed)
    batch["encoder_token_ids"][0, 5] = EOI
    batch["decoder_token_ids"][1, 2] = EOI
    return batch


def _max_error(expected, actual, batch):
    """Max-abs difference of the two output dicts at non-padded positions."""
    error = 0.0
    for name, side in (("encoder_sequence_output", "encoder"),
                       ("decoder_sequence_output", "decoder")):
        keep = batch[f"{side}_padding_mask"].astype(bool)
        a = ops.convert_to_numpy(expected[name])[keep]
        b = ops.convert_to_numpy(actual[name])[keep]
        assert np.std(a) > 0.1  # Not trivial outputs.
        error = max(error, float(np.max(np.abs(a - b))))
    return error


def test_text_seq2seq_lm_matches_keras_hub(tmp_path):
    hub_backbone = make_hub_backbone()
    tokenizer = keras_hub.models.T5Gemma2Tokenizer(
        proto=testing.train_sentencepiece(VOCABULARY_SIZE)
    )
    hub_lm = keras_hub.models.T5Gemma2Seq2SeqLM(
        backbone=hub_backbone,
        preprocessor=keras_hub.models.T5Gemma2Seq2SeqLMPreprocessor(
            tokenizer=tokenizer
        ),
    )
    hub_lm.save_to_preset(str(tmp_path))
    lm = T5Gemma2Seq2SeqLM.from_preset(str(tmp_path))
    assert lm.backbone.vision_encoder is None
    batch = _batch()
    error = _max_error(hub_backbone(batch), lm.backbone(batch), batch)
    assert error <= TOLERANCE, f"hidden states: max-abs {error:.3g}"
    # Logits (tied head) at the non-padded decoder positions.
    keep = batch["decoder_padding_mask"].astype(bool)
    expected = ops.convert_to_numpy(hub_lm(batch))[keep]
    actual = ops.convert_to_numpy(lm(batch))[keep]
    error = float(np.max(np.abs(expected - actual)))
    assert error <= TOLERANCE, f"logits: max-abs {error:.3g}"
    # The keras-hub vocabulary came along.
    text = "the quick brown fox"
    assert ops.convert_to_numpy(lm.preprocessor.tokenizer(text)).tolist() == (
        ops.convert_to_numpy(tokenizer(text)).tolist()
    )


def _vision_inputs(batch, seed=2):
    """One image per row: `TOKENS_PER_IMAGE` image tokens at 7..10, the
    keras-hub `vision_indices` of those positions, random pixels."""
    rng = np.random.default_rng(seed)
    positions = np.arange(7, 7 + TOKENS_PER_IMAGE)  # Non-padded in every row.
    batch = dict(batch, encoder_token_ids=batch["encoder_token_ids"].copy())
    batch["encoder_token_ids"][:, positions] = IMAGE
    pixels = rng.uniform(-1, 1, (3, 1, 28, 28, 3)).astype("float32")
    hub_inputs = dict(
        batch,
        images=pixels,
        vision_indices=np.tile(positions, (3, 1)).astype("int32"),
    )
    ours = dict(batch, pixel_values=pixels)
    return hub_inputs, ours


def test_vision_backbone_matches_keras_hub(tmp_path):
    hub_backbone = make_hub_backbone(vision=True)
    hub_backbone.save_to_preset(str(tmp_path))
    backbone = T5Gemma2Backbone.from_preset(
        str(tmp_path), image_token_index=IMAGE
    )
    assert backbone.mm_tokens_per_image == TOKENS_PER_IMAGE
    hub_inputs, inputs = _vision_inputs(_batch())
    error = _max_error(hub_backbone(hub_inputs), backbone(inputs), inputs)
    assert error <= TOLERANCE, f"max-abs {error:.3g}"
    # The image changes the output, so the vision weights were used.
    other = dict(inputs, pixel_values=inputs["pixel_values"][::-1].copy())
    moved = ops.convert_to_numpy(backbone(other)["encoder_sequence_output"])
    assert np.max(np.abs(
        moved - ops.convert_to_numpy(backbone(inputs)["encoder_sequence_output"])
    )) > 0.1
    text_only = T5Gemma2Backbone.from_preset(str(tmp_path), text_only=True)
    assert text_only.vision_encoder is None
    assert len(text_only.weights) < len(backbone.weights)


@pytest.mark.skipif(
    keras.backend.backend() != "jax", reason="backend-independent checks"
)
@pytest.mark.parametrize("vision", [False, True])
def test_untied_copies_raise(tmp_path, vision):
    hub_backbone = make_hub_backbone(vision=vision, tie=False)
    hub_backbone.save_to_preset(str(tmp_path))
    with pytest.raises(WeightMismatchError, match=r"token tables .*max-abs"):
        T5Gemma2Backbone.from_preset(str(tmp_path))
    if vision:  # Tables tied, EOI rows not.
        hub_backbone.decoder_token_embedding.embeddings.assign(
            hub_backbone.token_embedding.embeddings
        )
        hub_backbone.save_to_preset(str(tmp_path / "eoi"))
        with pytest.raises(WeightMismatchError, match="EOI embeddings"):
            T5Gemma2Backbone.from_preset(str(tmp_path / "eoi"))


@pytest.mark.skipif(
    keras.backend.backend() != "jax", reason="backend-independent checks"
)
def test_unsupported_settings_raise(tmp_path):
    make_hub_backbone().save_to_preset(str(tmp_path))
    path = os.path.join(tmp_path, "config.json")
    with open(path) as f:
        config = json.load(f)
    config["config"]["encoder_rope_max_wavelength"] = 123.0
    with open(path, "w") as f:
        json.dump(config, f)
    with pytest.raises(ValueError, match="encoder_rope_max_wavelength=123.0"):
        T5Gemma2Backbone.from_preset(str(tmp_path))
