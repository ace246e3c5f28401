"""Pallas kernels in interpret mode (jax backend, CPU)."""

import keras
import numpy as np
import pytest

from keras_encdec.losses import PALLAS_INTERPRET_ENV
from keras_encdec.losses.ce_testing import (
    check_against_reference,
)

pytestmark = pytest.mark.skipif(
    keras.backend.backend() != "jax",
    reason="Pallas kernels run on the jax backend only",
)


@pytest.fixture(autouse=True)
def interpret_mode(monkeypatch):
    monkeypatch.setenv(PALLAS_INTERPRET_ENV, "1")


def test_pallas_matches_float64_reference():
    check_against_reference("pallas", cap=30.0, reduction="none")


def test_pallas_weights_all_ignored_and_filter():
    check_against_reference("pallas", weighted=True, cap=30.0, chunk_size=256)
    value, dh, de = check_against_reference("pallas", ignored=1.1)
    assert float(value) == 0.0 and not np.any(dh) and not np.any(de)


def test_pallas_bf16_error_no_worse_than_dense():
    from keras_encdec.losses.ce_testing import bf16_errors

    dense_errors, want = bf16_errors("dense")
    pallas_errors, _ = bf16_errors("pallas")
    for got, dense, ref in zip(pallas_errors, dense_errors, want):
        assert got <= dense + 2.0**-8 * float(np.abs(ref).max())


def test_pallas_filter_matches_xla_filter():
    from keras_encdec.losses.ce_testing import (
        check_filter_matches_xla,
    )

    check_filter_matches_xla("pallas")


def test_embedding_gradient_in_vocabulary_groups(monkeypatch):
    from keras_encdec.losses import pallas_kernel
    from keras_encdec.losses.ce_testing import (
        check_vocabulary_groups,
    )

    check_vocabulary_groups("pallas", pallas_kernel, monkeypatch)


def test_lowers_for_cuda_through_triton(monkeypatch):
    """The compiled kernels lower for a CUDA GPU without one, at Gemma 2's
    sizes (D=2304 is not a power of two; V=256000): forward, dE and dC.
    Interpret mode cannot catch Triton's power-of-two tensor rule or the
    Mosaic-GPU default of `pallas_call` in jax 0.10."""
    import jax
    import jax.numpy as jnp

    from keras_encdec.losses.pallas_kernel import pallas_token_losses

    monkeypatch.setenv(PALLAS_INTERPRET_ENV, "0")
    hidden = jax.ShapeDtypeStruct((8192, 2304), jnp.bfloat16)
    embedding = jax.ShapeDtypeStruct((256000, 2304), jnp.bfloat16)
    labels = jax.ShapeDtypeStruct((8192,), jnp.int32)
    valid = jax.ShapeDtypeStruct((8192,), jnp.bool_)

    def loss(hidden, embedding, labels, valid):
        return pallas_token_losses(hidden, embedding, labels, valid,
                                   logit_soft_cap=30.0).sum()

    grads = jax.jit(jax.grad(loss, argnums=(0, 1)))
    text = grads.trace(hidden, embedding, labels, valid).lower(
        lowering_platforms=("cuda",)).as_text()
    # Forward, dE, and dC in 16 vocabulary groups.
    assert text.count("__gpu$xla.gpu.triton") == 18, text.count(
        "__gpu$xla.gpu.triton")
