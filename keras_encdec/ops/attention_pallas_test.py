"""`impl="pallas"` against `"dense"`, in Pallas interpret mode on CPU."""

import pytest

from keras_encdec.ops.attention_test import BACKEND
from keras_encdec.ops.attention_test import CASES
from keras_encdec.ops.attention_test import TOLERANCE
from keras_encdec.ops.attention_test import max_errors

pytestmark = pytest.mark.skipif(BACKEND != "jax", reason="JAX-only kernel")

# Interpret mode compiles slowly on CPU: these cases between them cover
# GQA, both window kinds, soft-cap, padding with fully masked rows, T != S,
# lengths that are not multiples of the tile, and a decode step.
PALLAS_CASES = ("pad_causal_window", "soft_cap_window", "cross_pad",
                "decode_window")


@pytest.fixture(autouse=True)
def interpret(monkeypatch):
    from keras_encdec.ops import attention_pallas

    monkeypatch.setenv(attention_pallas.INTERPRET_ENV, "1")


@pytest.mark.parametrize("name", PALLAS_CASES)
def test_matches_dense_forward_and_gradients(name):
    from keras_encdec.ops.attention import dot_product_attention

    from keras_encdec.ops.attention_pallas import pallas_attention

    def factory(options, mask):
        if name == "decode_window":  # the public entry, default tiles
            return lambda q, k, v: dot_product_attention(
                q, k, v, key_padding_mask=mask, impl="pallas", **options)
        # Small tiles: several query and key blocks per sequence.
        return lambda q, k, v: pallas_attention(
            q, k, v, key_padding_mask=mask, block_q=16, block_k=16,
            **options)

    errors = max_errors(CASES[name], factory)
    assert max(errors.values()) < TOLERANCE, errors


def test_without_interpret_mode_on_cpu_raises(monkeypatch):
    import numpy as np

    from keras_encdec.ops import attention_pallas
    from keras_encdec.ops.attention import dot_product_attention

    monkeypatch.setenv(attention_pallas.INTERPRET_ENV, "0")
    x = np.zeros((1, 4, 2, 8), "float32")
    with pytest.raises(ValueError, match=attention_pallas.INTERPRET_ENV):
        dot_product_attention(x, x, x, scale=1.0, impl="pallas")
