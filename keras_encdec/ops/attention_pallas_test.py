"""`impl="pallas"` against `"dense"`, in Pallas interpret mode on CPU."""

import pytest

from keras_encdec.ops.attention_testing import BACKEND
from keras_encdec.ops.attention_testing import CASES
from keras_encdec.ops.attention_testing import TOLERANCE
from keras_encdec.ops.attention_testing import max_errors

pytestmark = pytest.mark.skipif(BACKEND != "jax", reason="JAX-only kernel")

# Interpret mode compiles slowly on CPU: these cases between them cover
# GQA, both window kinds, soft-cap, padding with fully masked rows, T != S,
# lengths that are not multiples of the tile, and a decode step.
PALLAS_CASES = ("pad_causal_window", "soft_cap_window", "cross_pad",
                "decode_window", "t5gemma2_window_even_pad",
                "asym_window_soft_cap")


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


@pytest.mark.parametrize("name,block_q,block_k", [
    ("pad_causal_window", 16, 32), ("cross_pad", 32, 16)])
def test_unequal_tiles(name, block_q, block_k):
    # Per-query rows are tiled by block_q, key validity by block_k: the
    # head-major kernels must not mix them up.
    from keras_encdec.ops.attention_pallas import pallas_attention

    def factory(options, mask):
        return lambda q, k, v: pallas_attention(
            q, k, v, key_padding_mask=mask, block_q=block_q,
            block_k=block_k, **options)

    errors = max_errors(CASES[name], factory)
    assert max(errors.values()) < TOLERANCE, errors


def test_lowers_for_cuda_through_triton(monkeypatch):
    """The compiled (non-interpret) kernels lower for a CUDA GPU without
    one: forward and gradients, GQA, soft-cap, window, padding, bf16. This
    catches what interpret mode cannot: Triton's tensor-shape rules and the
    Mosaic-GPU default of `pallas_call` in jax 0.10."""
    import jax
    import jax.numpy as jnp

    from keras_encdec.ops import attention_pallas

    monkeypatch.setenv(attention_pallas.INTERPRET_ENV, "0")
    q = jax.ShapeDtypeStruct((1, 300, 8, 256), jnp.bfloat16)
    kv = jax.ShapeDtypeStruct((1, 300, 4, 256), jnp.bfloat16)
    mask = jax.ShapeDtypeStruct((1, 300), jnp.int32)

    def loss(q, k, v, mask):
        out = attention_pallas.pallas_attention(
            q, k, v, scale=0.0625, soft_cap=50.0, causal=True,
            sliding_window=128, key_padding_mask=mask)
        return out.astype(jnp.float32).sum()

    grads = jax.jit(jax.grad(loss, argnums=(0, 1, 2)))
    text = grads.trace(q, kv, kv, mask).lower(
        lowering_platforms=("cuda",)).as_text()
    # Forward, dK/dV and dQ kernels, all through the Triton lowering.
    assert text.count("__gpu$xla.gpu.triton") == 3, text.count(
        "__gpu$xla.gpu.triton")
