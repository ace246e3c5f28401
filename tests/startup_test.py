"""A quiet, side-effect-free start-up on every backend.

A fresh interpreter imports keras_encdec, loads the embedded preset and
generates; its stderr must hold none of the known native start-up lines
(`keras_encdec.utils.quiet.STARTUP_NOISE`), and importing keras_encdec must
not import triton where the Triton kernel cannot run (issue: "import
keras_encdec imports triton on every backend").
(The command line's stdout/stderr routing is checked by
`tests/demo_test.py`.)
"""

import json
import os
import subprocess
import sys

import keras
import pytest

from keras_encdec.utils.quiet import is_startup_noise

BACKEND = keras.backend.backend()

PROBE = r"""
import json, sys, warnings
import keras_encdec
from keras_encdec.models import T5GemmaSeq2SeqLM
lm = T5GemmaSeq2SeqLM.from_preset("t5gemma_tiny_random")
lm.compile(sampler="greedy")
text = lm.generate(["the quick brown fox"], max_length=12)
warnings.warn("a real warning still shows")
print(json.dumps({"triton": "triton" in sys.modules, "text": str(text[0])}))
"""


def _run(args):
    env = {k: v for k, v in os.environ.items()
           if k not in ("TRITON_INTERPRET", "KERAS_ENCDEC_VERBOSE_STARTUP")}
    env["KERAS_BACKEND"] = BACKEND
    return subprocess.run(
        [sys.executable, *args], capture_output=True, text=True, env=env,
        timeout=600, cwd=os.path.dirname(os.path.abspath(__file__)),
    )


def test_import_and_generate_print_no_native_noise():
    result = _run(["-c", PROBE])
    assert result.returncode == 0, result.stderr[-3000:]
    noise = [line for line in result.stderr.splitlines()
             if is_startup_noise(line)]
    assert noise == [], noise
    assert "a real warning still shows" in result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["text"]
    if BACKEND != "torch":  # keras's torch backend imports triton itself
        assert report["triton"] is False


@pytest.mark.skipif(BACKEND == "tensorflow", reason="keras imports tf")
def test_keras_hub_first_then_keras_encdec_is_silent():
    result = _run(["-c", "import sys, keras, keras_hub, keras_encdec; "
                   "print('triton' in sys.modules)"])
    assert result.returncode == 0, result.stderr[-3000:]
    assert "triton" not in result.stderr, result.stderr[-2000:]
    if BACKEND != "torch":
        assert result.stdout.strip() == "False"
