"""Span corruption, UL2, PrefixLM and packing (numpy; backend-independent,
so they run under KERAS_BACKEND=jax only)."""

import keras
import numpy as np
import pytest

from keras_encdec.objectives import UL2
from keras_encdec.objectives import Denoiser
from keras_encdec.objectives import PrefixLM
from keras_encdec.objectives import gemma_special_ids
from keras_encdec.objectives import pack_examples
from keras_encdec.objectives import span_corruption
from keras_encdec.objectives import span_corruption_inverse

pytestmark = pytest.mark.skipif(
    keras.backend.backend() != "jax",
    reason="numpy data pipeline: backend-independent, runs on jax only",
)
SENTINELS = tuple(range(5000, 5700))


def documents(count=12, seed=0, low=1, high=700):
    rng = np.random.default_rng(seed)
    return [rng.integers(300, 4000, size=int(rng.integers(low, high)))
            for _ in range(count)]


def test_span_corruption_rebuilds_exactly_and_is_deterministic():
    for seed, tokens in enumerate(documents(60, high=300)):
        kwargs = dict(noise_density=0.15 + 0.005 * (seed % 50),
                      mean_noise_span_length=1.0 + seed % 9,
                      sentinel_ids=SENTINELS, seed=seed)
        inputs, targets = span_corruption(tokens, **kwargs)
        np.testing.assert_array_equal(
            span_corruption_inverse(inputs, targets, SENTINELS), tokens)
        # T5 format: a sentinel replaces each span, in order, and starts
        # the targets; sentinels appear in the same order on both sides.
        used = [t for t in inputs if t in SENTINELS]
        assert used == list(SENTINELS[:len(used)])
        assert [t for t in targets if t in SENTINELS] == used
        assert targets[0] == SENTINELS[0]
        again = span_corruption(tokens, **kwargs)
        np.testing.assert_array_equal(again[0], inputs)
        np.testing.assert_array_equal(again[1], targets)
    tokens = documents(1, low=200, high=201)[0]
    a = span_corruption(tokens, noise_density=0.3, mean_noise_span_length=3,
                        sentinel_ids=SENTINELS, seed=1)
    b = span_corruption(tokens, noise_density=0.3, mean_noise_span_length=3,
                        sentinel_ids=SENTINELS, seed=2)
    assert not np.array_equal(a[0], b[0])


@pytest.mark.parametrize("density, mean_span, length",
                         [(0.15, 3.0, 512), (0.5, 8.0, 512),
                          (0.15, 64.0, 4096), (0.3, 5.0, 333)])
def test_measured_density_and_span_length(density, mean_span, length):
    noise = spans = total = 0
    span_lengths = []
    rng = np.random.default_rng(0)
    for seed in range(200):
        tokens = rng.integers(10, 4000, size=length)
        inputs, targets = span_corruption(
            tokens, noise_density=density, mean_noise_span_length=mean_span,
            sentinel_ids=SENTINELS, seed=seed)
        n_spans = int(np.isin(inputs, SENTINELS).sum())
        noise += len(targets) - n_spans
        spans += n_spans
        total += length
        cuts = np.flatnonzero(np.isin(targets, SENTINELS))
        span_lengths += list(np.diff(np.append(cuts, len(targets))) - 1)
    assert abs(noise / total - density) <= 0.03 * density
    assert abs(noise / spans - mean_span) <= 0.05 * mean_span
    assert min(span_lengths) >= 1  # no empty span
    assert np.std(span_lengths) > 0  # lengths vary (random segmentation)


def test_span_corruption_errors():
    with pytest.raises(ValueError, match="contains sentinel id 5001"):
        span_corruption([10, 5001, 12], noise_density=0.3,
                        mean_noise_span_length=1, sentinel_ids=SENTINELS,
                        seed=0)
    with pytest.raises(ValueError, match="need as many sentinel ids"):
        span_corruption(np.arange(10, 110), noise_density=0.5,
                        mean_noise_span_length=1, sentinel_ids=[1, 2],
                        seed=0)
    with pytest.raises(ValueError, match="noise_density"):
        span_corruption([10, 11], noise_density=1.5,
                        mean_noise_span_length=1, sentinel_ids=SENTINELS,
                        seed=0)


def test_gemma_special_ids():
    modes, sentinels = gemma_special_ids("gemma3")
    assert modes == {"R": 6, "S": 7, "X": 8}
    assert sentinels[:2] == (9, 10) and sentinels[95] == 104
    assert sentinels[96] == 256001 and sentinels[-1] == 262143
    assert len(sentinels) == 6239


def rebuild(example, objective):
    """The document tokens one example covers, from what it holds."""
    encoder = list(example["encoder_token_ids"])
    assert encoder[-1] == objective.eos_id
    encoder = encoder[:-1]
    if isinstance(objective, UL2):
        assert encoder[0] == objective.mode_ids[example["kind"]]
        encoder = encoder[1:]
        if example["kind"] != "S":
            return list(span_corruption_inverse(
                encoder, example["targets"], objective.sentinel_ids))
    return encoder + list(example["targets"])


@pytest.mark.parametrize("make", [
    lambda: PrefixLM(32, 24, seed=3),
    lambda: PrefixLM(32, 24, split=5),
    lambda: UL2(48, 40, sentinel_ids=SENTINELS, seed=4),
])
def test_no_token_lost_or_duplicated(make):
    objective = make()
    docs = documents(8, high=400)
    examples = list(objective.examples(docs))
    stream = [t for e in examples for t in rebuild(e, objective)]
    np.testing.assert_array_equal(stream, np.concatenate(docs))
    for e in examples:
        assert len(e["encoder_token_ids"]) <= objective.encoder_sequence_length
        assert len(e["labels"]) <= objective.decoder_sequence_length
        np.testing.assert_array_equal(e["decoder_token_ids"][1:],
                                      e["labels"][:-1])
        assert e["decoder_token_ids"][0] == 2 and e["labels"][-1] == 1
    if getattr(objective, "split", None):
        assert all(len(e["encoder_token_ids"]) == 6 for e in examples[:3])
    # The same seed gives the same examples.
    again = list(make().examples(docs))
    assert all(np.array_equal(a["encoder_token_ids"], b["encoder_token_ids"])
               for a, b in zip(examples, again))


def test_fit_rows_shapes_and_mode_tokens():
    ul2 = UL2(64, 48, vocabulary="gemma3", seed=0)
    x, y, w = next(ul2(documents(40, high=600), batch_size=16))
    assert x["encoder_token_ids"].shape == (16, 64)
    assert x["decoder_token_ids"].shape == y.shape == w.shape == (16, 48)
    assert set(x["encoder_token_ids"][:, 0].tolist()) <= {6, 7, 8}
    np.testing.assert_array_equal(w > 0, x["decoder_padding_mask"])
    np.testing.assert_array_equal(x["decoder_token_ids"][:, 0], 2)
    # The denoiser mixture follows the rates (S 0.2, X 4 x 0.8 / 6).
    kinds = [e["kind"] for e in ul2.examples(documents(200, high=700))]
    share = {k: kinds.count(k) / len(kinds) for k in "RSX"}
    assert abs(share["S"] - 0.2) < 0.05 and abs(share["X"] - 0.533) < 0.06


def test_ul2_validates_sentinel_budget():
    with pytest.raises(ValueError, match="only 2 sentinel ids"):
        UL2(256, 256, sentinel_ids=[10, 11])
    with pytest.raises(ValueError, match="Unknown or unmapped"):
        UL2(64, 64, denoisers=[Denoiser("Q", 0.1, 3.0)])


def test_packing_keeps_every_example():
    objective = UL2(40, 32, sentinel_ids=SENTINELS, seed=1)
    docs = documents(10, low=1, high=60)
    examples = list(objective.examples(docs))
    rows = list(objective(docs, packed=True))
    assert len(rows) < len(examples)  # several examples per row
    unpacked = []
    for x, y, w in rows:
        enc_seg, dec_seg = x["encoder_segment_ids"], x["decoder_segment_ids"]
        assert set(enc_seg[enc_seg > 0]) == set(dec_seg[dec_seg > 0])
        for s in range(1, int(enc_seg.max()) + 1):
            unpacked.append((x["encoder_token_ids"][enc_seg == s],
                             x["decoder_token_ids"][dec_seg == s],
                             y[dec_seg == s]))
        np.testing.assert_array_equal(w > 0, dec_seg > 0)
    assert len(unpacked) == len(examples)
    for (enc, dec, lab), e in zip(unpacked, examples):
        np.testing.assert_array_equal(enc, e["encoder_token_ids"])
        np.testing.assert_array_equal(dec, e["decoder_token_ids"])
        np.testing.assert_array_equal(lab, e["labels"])
    with pytest.raises(ValueError, match="would be truncated"):
        list(pack_examples([examples[0]], 2, 2))


def test_tf_data_and_raw_text_match_python_iterables():
    import tensorflow as tf

    from keras_encdec.models import T5GemmaTokenizer
    from keras_encdec.testing import TINY_TEXT
    from keras_encdec.testing import train_sentencepiece

    tokenizer = T5GemmaTokenizer(proto=train_sentencepiece())
    prefix = PrefixLM(8, 6, tokenizer=tokenizer, seed=5)
    text = [t for t in TINY_TEXT]
    from_list = list(prefix(text, batch_size=4))
    dataset = prefix.as_dataset(tf.data.Dataset.from_tensor_slices(text), 4)
    from_tf = list(dataset.as_numpy_iterator())
    assert len(from_list) == len(from_tf) > 1
    for (xa, ya, wa), (xb, yb, wb) in zip(from_list, from_tf):
        for key in xa:
            np.testing.assert_array_equal(xa[key], xb[key])
        np.testing.assert_array_equal(ya, yb)
        np.testing.assert_array_equal(wa, wb)
    ids = np.concatenate([np.asarray(tokenizer(t)) for t in text])
    stream = [t for e in prefix.examples(text) for t in rebuild(e, prefix)]
    np.testing.assert_array_equal(stream, ids)
    with pytest.raises(ValueError, match="needs `tokenizer=`"):
        next(PrefixLM(8, 6)(["raw text"]))
