"""Writes tests/data/embedded_preset_logits.npz: reference logits of the
embedded preset on a fixed padded batch, computed on one backend.

`tests/cross_backend_test.py` compares every backend against this file, so
the three backends are checked against each other directly (each is also
checked against transformers by the parity tests).

    KERAS_BACKEND=jax python tools/make_golden_logits.py
"""

import os

import numpy as np

import keras
from keras_encdec import testing
from keras_encdec.models import T5GemmaSeq2SeqLM

PATH = os.path.join(
    os.path.dirname(__file__), "..", "tests", "data", "embedded_preset_logits.npz"
)


def golden_batch():
    """The fixed batch: 2 padded rows, encoder 9 and decoder 7 tokens."""
    return testing.random_batch(2, 9, 7, 384, padded=True, seed=11)


def main():
    lm = T5GemmaSeq2SeqLM.from_preset("t5gemma_tiny_random", preprocessor=None)
    batch = golden_batch()
    logits = keras.ops.convert_to_numpy(lm(batch)).astype("float32")
    np.savez(PATH, logits=logits, backend=keras.backend.backend(), **batch)
    print(f"wrote {os.path.abspath(PATH)} from {keras.backend.backend()}")


if __name__ == "__main__":
    main()
