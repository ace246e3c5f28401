"""Invariant 4: an unbalanced pair builds, warms up, trains and generates."""

import keras
import numpy as np
import pytest
from keras import ops

from keras_encdec.adapt import CrossAttentionWarmup
from keras_encdec.adapt import adapt_decoder_only
from keras_encdec.adapt.conftest import keras_hub_gemma2
from keras_encdec.adapt.mapping import count_params
from keras_encdec.adapt.mapping import cross_attention_variables

WARMUP_STEPS = 2


def snapshot(model):
    return {v.path: ops.convert_to_numpy(v.value).copy() for v in model.weights}


def changed(before, after):
    return {path for path in before if not np.array_equal(before[path], after[path])}


@pytest.fixture(scope="module")
def unbalanced(proto, gemma2_lm):
    wide = keras_hub_gemma2(proto, hidden_dim=24, num_heads=2, seed=5)
    return adapt_decoder_only(wide, gemma2_lm)  # 24-wide encoder, 16 decoder


def test_unbalanced_pair_shapes(unbalanced):
    backbone = unbalanced.backbone
    assert backbone.encoder_hidden_dim == 24
    assert backbone.decoder_hidden_dim == 16
    cross = backbone.decoder_layers[0].cross_attention
    assert tuple(cross.key_dense.kernel.shape) == (24, 2, 8)
    assert tuple(cross.query_dense.kernel.shape) == (16, 4, 8)
    # The CLI's estimate is computed from the config alone; check it here.
    assert count_params(backbone.get_config()) == backbone.count_params()


def test_warmup_trains_only_cross_attention_then_everything(unbalanced):
    lm = unbalanced
    lm.compile(
        optimizer=keras.optimizers.Adam(1e-2),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        sampler="greedy",
    )
    features = {
        "encoder_text": ["the quick brown fox", "a stitch in time"] * 2,
        "decoder_text": ["jumps over the dog", "saves nine"] * 2,
    }
    lm.preprocessor.encoder_sequence_length = 8
    lm.preprocessor.decoder_sequence_length = 6
    cross = {v.path for v in cross_attention_variables(lm.backbone)}
    assert len(cross) == 6 * lm.backbone.decoder_num_layers

    warmup = CrossAttentionWarmup(WARMUP_STEPS)
    before = snapshot(lm)
    lm.fit(features, batch_size=2, epochs=1, verbose=0,
           callbacks=[warmup])  # 2 steps, both in warm-up
    during = snapshot(lm)
    assert changed(before, during) == cross  # every cross weight, nothing else

    lm.fit(features, batch_size=2, epochs=1, verbose=0,
           callbacks=[warmup])  # steps 3 and 4: past warm-up
    after = snapshot(lm)
    moved = changed(during, after)
    assert moved == set(during)  # every weight trains now
    assert ops.convert_to_numpy(lm.optimizer.iterations) == 4

    text = lm.generate("the quick brown fox", max_length=6)
    assert isinstance(text, str)


def test_warmup_rejects_bad_steps():
    with pytest.raises(ValueError, match="non-negative int"):
        CrossAttentionWarmup(-1)
