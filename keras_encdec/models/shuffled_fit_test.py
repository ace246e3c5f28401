"""`fit(shuffle=True)` shuffles in-memory text; no Keras shuffle warning."""

import warnings

import keras
import numpy as np
import pytest

from keras_encdec.models import T5GemmaSeq2SeqLM
from keras_encdec.models.shuffled_fit import is_in_memory
from keras_encdec.models.shuffled_fit import shuffled_dataset

# The data pipeline is tf.data on every backend: one backend suffices.
pytestmark = pytest.mark.skipif(
    keras.backend.backend() != "jax", reason="backend-independent"
)

TEXTS = [
    "the quick brown fox", "a small boat sailed", "the old man planted",
    "the crow dropped stones", "all that glitters", "the early bird",
    "actions speak louder", "a stitch in time",
]


def test_shuffled_dataset_reshuffles_every_epoch_without_loss():
    dataset = shuffled_dataset(np.arange(64), None, None, 64, seed=3)
    first, second = (next(iter(dataset)).numpy() for _ in range(2))
    assert sorted(first.tolist()) == list(range(64))  # nothing lost
    assert sorted(second.tolist()) == list(range(64))
    assert first.tolist() != list(range(64))  # shuffled
    assert first.tolist() != second.tolist()  # reshuffled per epoch


def test_in_memory_detection():
    assert is_in_memory(TEXTS)
    assert is_in_memory({"a": np.zeros((2, 3))})
    assert not is_in_memory(shuffled_dataset(np.arange(4), None, None, 2))
    assert not is_in_memory(iter(TEXTS))
    assert not is_in_memory(None)


def _train(shuffle):
    keras.utils.set_random_seed(0)
    lm = T5GemmaSeq2SeqLM.from_preset("t5gemma_tiny_random")
    lm.compile(optimizer=keras.optimizers.SGD(0.5))
    targets = [" ".join(reversed(t.split())) for t in TEXTS]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        lm.fit(x={"encoder_text": TEXTS, "decoder_text": targets},
               batch_size=1, epochs=1, shuffle=shuffle, verbose=0)
    messages = [str(w.message) for w in caught]
    assert not [m for m in messages if "shuffle" in m], messages
    return np.concatenate(
        [np.ravel(keras.ops.convert_to_numpy(w))
         for w in lm.backbone.trainable_weights[:8]])


def test_fit_on_text_shuffles_and_stays_quiet():
    plain, plain_again = _train(False), _train(False)
    np.testing.assert_array_equal(plain, plain_again)  # deterministic
    shuffled = _train(True)
    # Batch size 1 with SGD: a different order gives different weights.
    assert np.max(np.abs(shuffled - plain)) > 1e-4


def test_validation_split_with_shuffle_is_refused():
    lm = T5GemmaSeq2SeqLM.from_preset("t5gemma_tiny_random")
    lm.compile()
    with pytest.raises(ValueError, match="validation_split"):
        lm.fit(x={"encoder_text": TEXTS, "decoder_text": TEXTS},
               validation_split=0.25, verbose=0)
