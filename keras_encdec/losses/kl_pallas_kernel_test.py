"""KL Pallas kernels in interpret mode (jax backend, CPU)."""

import keras
import numpy as np
import pytest

from keras_encdec.losses import PALLAS_INTERPRET_ENV
from keras_encdec.losses import linear_kl_divergence
from keras_encdec.losses.kl_testing import assert_close
from keras_encdec.losses.kl_testing import make_problem
from keras_encdec.losses.kl_testing import reference
from keras_encdec.losses.kl_testing import value_and_grads

pytestmark = pytest.mark.skipif(
    keras.backend.backend() != "jax",
    reason="Pallas kernels run on the jax backend only",
)


@pytest.fixture(autouse=True)
def interpret_mode(monkeypatch):
    monkeypatch.setenv(PALLAS_INTERPRET_ENV, "1")


@pytest.mark.parametrize("temp, cap, t_cap, reduction",
                         [(2.0, 30.0, 20.0, "mean"), (0.7, 4.0, None, "none")])
def test_pallas_matches_float64_reference(temp, cap, t_cap, reduction):
    h, e, th, te, mask = make_problem(n=70)
    cotangent = None
    if reduction == "none":
        cotangent = np.random.default_rng(1).normal(size=(70,))
        cotangent = cotangent.astype("float32")

    def loss_fn(h_, e_, th_, te_):
        return linear_kl_divergence(
            h_, e_, th_, te_, mask=mask, temperature=temp,
            logit_soft_cap=cap, teacher_logit_soft_cap=t_cap,
            reduction=reduction, impl="pallas", chunk_size=64)

    got = value_and_grads(loss_fn, h, e, th, te, cotangent)
    want = reference(h, e, th, te, mask, temp, cap, t_cap, reduction,
                     cotangent)
    for g, w, name in zip(got, want, ("loss", "dh", "de")):
        assert_close(g, w, name)
    assert not np.any(got[3]) and not np.any(got[4])


def test_pallas_embedding_gradient_in_vocabulary_groups(monkeypatch):
    from keras_encdec.losses import pallas_kernel

    def loss_fn(h_, e_, th_, te_):
        return linear_kl_divergence(h_, e_, th_, te_, logit_soft_cap=5.0,
                                    impl="pallas", chunk_size=64)

    # dC in vocabulary groups of 128 rows (V=301: three groups; the
    # interpret-mode fp32 sums may round differently per group shape).
    h, e, th, te, _ = make_problem(n=16, seed=1)
    whole = value_and_grads(loss_fn, h, e, th, te)
    monkeypatch.setattr(pallas_kernel, "GROUP_ROWS", 128)
    grouped = value_and_grads(loss_fn, h, e, th, te)
    for a, b in zip(whole, grouped):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-6 * np.abs(a).max())
    assert_close(grouped[2], reference(h, e, th, te, cap=5.0)[2])
