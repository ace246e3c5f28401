"""Triton kernels under TRITON_INTERPRET=1 (torch backend, CPU).

`TRITON_INTERPRET=1` must be set before `triton.jit` decorates the kernels,
and triton must be imported before tensorflow. Both are guaranteed by
running the real checks (`test_inner_*`) in a fresh pytest subprocess;
`test_triton_interpret_in_subprocess` asserts that they all passed.
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


def _triton_installed():
    import importlib.util

    return importlib.util.find_spec("triton") is not None


@pytest.mark.skipif(IN_SUBPROCESS, reason="outer test")
@pytest.mark.skipif(not _triton_installed(), reason="triton not installed")
def test_triton_interpret_in_subprocess():
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
    assert "4 passed" in result.stdout, result.stdout[-3000:]


inner = pytest.mark.skipif(not IN_SUBPROCESS,
                           reason=f"runs in the subprocess ({INNER_ENV}=1)")


@inner
def test_inner_matches_float64_reference():
    from keras_encdec.losses.ce_testing import (
        check_against_reference,
    )

    check_against_reference("triton", cap=30.0, reduction="none")


@inner
def test_inner_weights_all_ignored_and_filter():
    from keras_encdec.losses.ce_testing import (
        check_against_reference,
        check_filter_matches_xla,
    )

    check_against_reference("triton", weighted=True, cap=30.0, chunk_size=128)
    value, dh, de = check_against_reference("triton", ignored=1.1)
    assert float(value) == 0.0 and not np.any(dh) and not np.any(de)
    check_filter_matches_xla("triton")


@inner
def test_inner_bf16_error_no_worse_than_dense():
    from keras_encdec.losses.ce_testing import bf16_errors

    dense_errors, want = bf16_errors("dense")
    triton_errors, _ = bf16_errors("triton")
    for got, dense, ref in zip(triton_errors, dense_errors, want):
        assert got <= dense + 2.0**-8 * float(np.abs(ref).max())


@inner
def test_inner_embedding_gradient_in_vocabulary_groups(monkeypatch):
    from keras_encdec.losses import triton_kernel
    from keras_encdec.losses.ce_testing import (
        check_vocabulary_groups,
    )

    check_vocabulary_groups("triton", triton_kernel, monkeypatch)
