"""KL Triton kernels under TRITON_INTERPRET=1 (torch backend, CPU).

As in `triton_kernel_test.py`, the real checks (`test_inner_*`) run in a
fresh pytest subprocess with `TRITON_INTERPRET=1` set before triton (and
before tensorflow) is imported.
"""

import os
import subprocess
import sys

import keras
import numpy as np
import pytest

INNER_ENV = "KERAS_ENCDEC_TRITON_INNER"
IN_SUBPROCESS = os.environ.get(INNER_ENV) == "1"

pytestmark = pytest.mark.skipif(
    keras.backend.backend() != "torch",
    reason="Triton kernels run on the torch backend only",
)
inner = pytest.mark.skipif(not IN_SUBPROCESS,
                           reason=f"runs in the subprocess ({INNER_ENV}=1)")


@pytest.mark.skipif(IN_SUBPROCESS, reason="outer test")
def test_kl_triton_interpret_in_subprocess():
    pytest.importorskip("triton")
    env = dict(os.environ, TRITON_INTERPRET="1", KERAS_BACKEND="torch")
    env[INNER_ENV] = "1"
    root = os.path.dirname(os.path.dirname(os.path.dirname(__file__)))
    result = subprocess.run(
        [sys.executable, "-c",
         "import triton, sys, pytest; "  # triton before tensorflow
         f"sys.exit(pytest.main(['-q', '-p', 'no:cacheprovider', {__file__!r},"
         " '-k', 'inner']))"],
        env=env, cwd=root, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "3 passed" in result.stdout, result.stdout[-3000:]


def _check(temp, cap, t_cap, reduction, chunk, n=70):
    from keras_encdec.losses import linear_kl_divergence
    from keras_encdec.losses.kl_testing import assert_close
    from keras_encdec.losses.kl_testing import make_problem
    from keras_encdec.losses.kl_testing import reference
    from keras_encdec.losses.kl_testing import value_and_grads

    h, e, th, te, mask = make_problem(n=n)
    cotangent = None
    if reduction == "none":
        cotangent = np.random.default_rng(1).normal(size=(n,))
        cotangent = cotangent.astype("float32")

    def loss_fn(h_, e_, th_, te_):
        return linear_kl_divergence(
            h_, e_, th_, te_, mask=mask, temperature=temp,
            logit_soft_cap=cap, teacher_logit_soft_cap=t_cap,
            reduction=reduction, impl="triton", chunk_size=chunk)

    got = value_and_grads(loss_fn, h, e, th, te, cotangent)
    want = reference(h, e, th, te, mask, temp, cap, t_cap, reduction,
                     cotangent)
    for g, w, name in zip(got, want, ("loss", "dh", "de")):
        assert_close(g, w, name)
    assert not np.any(got[3]) and not np.any(got[4])


@inner
def test_inner_matches_float64_reference_capped():
    _check(2.0, 30.0, 20.0, "mean", 64)


@inner
def test_inner_matches_float64_reference_uncapped_none():
    _check(0.7, None, 5.0, "none", None)


@inner
def test_inner_embedding_gradient_in_vocabulary_groups(monkeypatch):
    from keras_encdec.losses import triton_kernel

    monkeypatch.setattr(triton_kernel, "GROUP_ROWS", 128)  # V=301: 3 groups
    _check(1.0, 4.0, None, "sum", 64, n=20)
