"""A packed batch gives the same per-example losses as the unpacked examples.

Tiny random T5Gemma and T5Gemma 2 models (weights with real spread, sliding
windows shorter than the examples) see a few examples of different lengths
twice: padded one per row (`pad_example`, through the functional graph,
impl "dense") and packed several per row with segment ids
(`pack_examples`). Each example's logits at its own positions and its
token-mean cross-entropy must agree, for every attention impl that runs on
the backend (pallas in interpret mode on jax; flex forward on torch). T5Gemma keeps absolute positions in packed rows (RoPE is relative
and its cross-attention has none); T5Gemma 2's decoder restarts them per
segment (its merged attention scores rotated queries against unrotated
encoder keys).
"""

import functools

import keras
import numpy as np
import pytest
from keras import ops

from keras_encdec.models import T5Gemma2Backbone
from keras_encdec.models import T5Gemma2Seq2SeqLM
from keras_encdec.models import T5GemmaBackbone
from keras_encdec.models import T5GemmaSeq2SeqLM
from keras_encdec.objectives import pack_examples
from keras_encdec.objectives import pad_example
from keras_encdec.ops import attention_pallas
from keras_encdec.testing import tiny_backbone_kwargs

BACKEND = keras.backend.backend()
IMPLS = ["dense", "xla"] + {"jax": ["pallas"], "torch": ["flex"]}.get(
    BACKEND, []
)
ENCODER_LENGTH, DECODER_LENGTH = 16, 12
# (encoder, decoder) lengths: 7 examples, packed 2-3 per row.
LENGTHS = [(7, 5), (4, 6), (5, 1), (9, 4), (3, 7), (6, 3), (2, 2)]
LOSS_TOLERANCE = 1e-5
LOGIT_TOLERANCE = 1e-4


def t5gemma2_kwargs(**overrides):
    config = dict(
        vocabulary_size=64, hidden_dim=16,
        encoder_intermediate_dim=32, encoder_num_layers=2,
        encoder_num_heads=2, encoder_num_kv_heads=1, encoder_head_dim=8,
        decoder_intermediate_dim=24, decoder_num_layers=2,
        decoder_num_heads=4, decoder_num_kv_heads=2, decoder_head_dim=4,
        encoder_sliding_window=3, decoder_sliding_window=2,
        encoder_layer_types=["sliding_attention", "full_attention"],
        decoder_layer_types=["sliding_attention", "full_attention"],
        eoi_token_index=61, image_token_index=62,
    )
    config.update(overrides)
    return config


# Built once per family (dense); the tests switch the attention impl.
FAMILIES = {
    "t5gemma": lambda impl: T5GemmaSeq2SeqLM(T5GemmaBackbone(
        **tiny_backbone_kwargs(encoder_sliding_window=3,
                               decoder_sliding_window=2,
                               attention_impl=impl))),
    "t5gemma2": lambda impl: T5Gemma2Seq2SeqLM(T5Gemma2Backbone(
        **t5gemma2_kwargs(attention_impl=impl))),
}


@functools.lru_cache(maxsize=None)
def build(family):
    keras.utils.set_random_seed(0)
    lm = FAMILIES[family]("dense")
    rng = np.random.default_rng(1)
    for weight in lm.weights:  # real spread: every sublayer matters
        weight.assign(rng.normal(0, 0.3, weight.shape).astype(weight.dtype))
    return lm


def with_impl(family, impl):
    """The family's model with every attention layer on `impl`."""
    lm = build(family)
    for layer in lm.backbone._flatten_layers():
        if hasattr(layer, "query_pre_attn_scalar"):  # attention layers
            layer.attention_impl = impl
    lm.predict_function = None  # retrace with the new impl
    return lm


def examples():
    rng = np.random.default_rng(0)
    return [
        dict(encoder_token_ids=rng.integers(3, 60, enc),
             decoder_token_ids=rng.integers(3, 60, dec),
             labels=rng.integers(3, 60, dec))
        for enc, dec in LENGTHS
    ]


def stack(rows):
    xs, ys, ws = zip(*rows)
    x = {key: np.stack([r[key] for r in xs]) for key in xs[0]}
    return x, np.stack(ys), np.stack(ws)


def packed_batch():
    rows = list(pack_examples(examples(), ENCODER_LENGTH, DECODER_LENGTH))
    assert len(rows) < len(LENGTHS) - 2  # several examples per row
    return stack(rows)


def token_losses(logits, labels):
    """Per-token cross-entropy (float64) from fp32 logits."""
    logits = np.asarray(logits, "float64")
    top = logits.max(-1, keepdims=True)
    log_z = top[..., 0] + np.log(np.exp(logits - top).sum(-1))
    picked = np.take_along_axis(logits, labels[..., None], -1)[..., 0]
    return log_z - picked


def logits_of(lm, x):
    """`lm(x)` as numpy, in one compiled predict step (no gradients: flex
    runs forward only on CPU)."""
    return ops.convert_to_numpy(lm.predict_on_batch(x))


@pytest.fixture
def pallas_interpret(monkeypatch):
    monkeypatch.setenv(attention_pallas.INTERPRET_ENV, "1")


@functools.lru_cache(maxsize=None)
def unpacked(family):
    """Logits and labels of the examples padded one per row (dense)."""
    rows = [pad_example(e, ENCODER_LENGTH, DECODER_LENGTH)
            for e in examples()]
    x, y, _ = stack(rows)
    return logits_of(with_impl(family, "dense"), x), y


@pytest.mark.usefixtures("pallas_interpret")
@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_packed_losses_equal_unpacked(family, impl):
    alone, uy = unpacked(family)
    x, y, _ = packed_batch()
    packed = logits_of(with_impl(family, impl), x)
    segments = x["decoder_segment_ids"]
    row, segment, loss_errors, logit_errors = 0, 0, [], []
    for i, (_, dec) in enumerate(LENGTHS):
        segment += 1
        if not (segments[row] == segment).any():
            row, segment = row + 1, 1
        where = segments[row] == segment
        assert where.sum() == dec
        packed_logits = packed[row][where]
        alone_logits = alone[i][:dec]
        logit_errors.append(np.abs(packed_logits - alone_logits).max())
        packed_loss = token_losses(packed_logits, y[row][where]).mean()
        alone_loss = token_losses(alone_logits, uy[i][:dec]).mean()
        loss_errors.append(abs(packed_loss - alone_loss))
    # The model is not trivial: the examples' losses differ.
    losses = [token_losses(alone[i][:d], uy[i][:d]).mean()
              for i, (_, d) in enumerate(LENGTHS)]
    assert np.std(losses) > 0.1, losses
    print(f"{BACKEND} {family} {impl}: per-example loss max-abs "
          f"{max(loss_errors):.2e}, logits {max(logit_errors):.2e}")
    assert max(loss_errors) <= LOSS_TOLERANCE, loss_errors
    assert max(logit_errors) <= LOGIT_TOLERANCE, logit_errors


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_segments_change_the_logits(family):
    # Without segment ids the packed rows attend across examples.
    lm = with_impl(family, "dense")
    x, _, _ = packed_batch()
    plain = {k: v for k, v in x.items() if "segment" not in k}
    difference = np.abs(logits_of(lm, x) - logits_of(lm, plain)).max()
    assert difference > 0.1


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_fit_step_on_packed_rows_reports_the_token_mean_loss(family):
    keras.utils.set_random_seed(0)
    lm = FAMILIES[family]("dense")  # its own model: the step trains it
    x, y, w = packed_batch()
    logits = logits_of(lm, x)
    expected = (token_losses(logits, y) * w).sum() / w.sum()
    lm.compile(optimizer=keras.optimizers.SGD(0.1))  # chunked loss
    before = ops.convert_to_numpy(lm.backbone.decoder_norm.weights[0])
    history = lm.fit(x, y, sample_weight=w, batch_size=len(y), epochs=1,
                     shuffle=False, verbose=0)
    loss = history.history["loss"][0]
    assert abs(loss - expected) <= 1e-5 * expected, (loss, expected)
    after = ops.convert_to_numpy(lm.backbone.decoder_norm.weights[0])
    assert np.abs(after - before).max() > 0  # the step trained


@pytest.mark.skipif(BACKEND != "jax", reason="backend-independent checks")
def test_bad_segment_ids_are_refused_with_what_was_received():
    lm = with_impl("t5gemma", "dense")
    x, _, _ = packed_batch()
    one_side = {k: v for k, v in x.items() if k != "decoder_segment_ids"}
    with pytest.raises(ValueError, match="`encoder_segment_ids` without "
                       "`decoder_segment_ids`"):
        lm(one_side)
    floats = dict(x, decoder_segment_ids=x["decoder_segment_ids"] * 1.0)
    with pytest.raises(TypeError, match="`decoder_segment_ids` must be an "
                       "integer tensor. Received: dtype=float64"):
        lm(floats)
    short = dict(x, encoder_segment_ids=x["encoder_segment_ids"][:, :5])
    with pytest.raises(ValueError, match=r"\(3, 16\) and \(3, 5\)"):
        lm(short)
    with pytest.raises(ValueError, match="generate.*does not take packed"):
        lm.generate(x)
    assert sorted(lm.backbone.input) == sorted(
        k for k in x if "segment" not in k)  # the graph is unchanged
