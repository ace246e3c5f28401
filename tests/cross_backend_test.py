"""The three backends agree with each other on the embedded preset.

`tests/data/embedded_preset_logits.npz` holds logits computed on one backend
by `tools/make_golden_logits.py`; every backend must reproduce them within
fp32 rounding, 2e-6 of the largest |logit| (about 16 ulps; 2.4e-5 here: the
backends split the same matmuls differently, torch measures 1.05e-5,
TensorFlow 8.7e-6, jax 4.1e-6), on the same padded batch.
"""

import os

import numpy as np
from keras import ops

from keras_encdec.models import T5GemmaSeq2SeqLM

GOLDEN = os.path.join(os.path.dirname(__file__), "data", "embedded_preset_logits.npz")
INPUTS = (
    "encoder_token_ids",
    "encoder_padding_mask",
    "decoder_token_ids",
    "decoder_padding_mask",
)


def test_backends_agree_on_embedded_preset_logits():
    golden = np.load(GOLDEN)
    batch = {name: golden[name] for name in INPUTS}
    lm = T5GemmaSeq2SeqLM.from_preset("t5gemma_tiny_random", preprocessor=None)
    actual = ops.convert_to_numpy(lm(batch))
    assert actual.shape == golden["logits"].shape == (2, 7, 384)
    tolerance = 2e-6 * np.max(np.abs(golden["logits"]))
    assert np.max(np.abs(actual - golden["logits"])) <= tolerance
    assert np.std(golden["logits"]) > 0.5  # Real, varied logits.
