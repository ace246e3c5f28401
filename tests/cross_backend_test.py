"""The three backends agree with each other on the embedded preset.

`tests/data/embedded_preset_logits.npz` holds logits computed on one backend
by `tools/make_golden_logits.py`; every backend must reproduce them within
1e-5 (fp32) on the same padded batch.
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
    assert np.max(np.abs(actual - golden["logits"])) <= 1e-5
    assert np.std(golden["logits"]) > 0.5  # Real, varied logits.
