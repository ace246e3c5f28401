"""`python -m keras_encdec demo --fast`: the whole demo job, in seconds.

The fast mode runs the real pipeline (stdlib pairs split by module, LoRA
fine-tuning with the chunked loss through `fit`, greedy generation before
and after, chrF, loss curve, timing) on the embedded tiny random preset.
The command line writes results to stdout (last line `chrF: ...`) and only
progress bars and real diagnostics to stderr.
"""

import os
import re
import subprocess
import sys

import keras
import pytest

from keras_encdec.utils.quiet import is_startup_noise

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.skipif(keras.backend.backend() != "jax",
                    reason="the job is backend-generic: one backend")
def test_fast_demo_end_to_end(tmp_path):
    env = {k: v for k, v in os.environ.items()
           if k not in ("TRITON_INTERPRET", "KERAS_ENCDEC_VERBOSE_STARTUP")}
    env["KERAS_BACKEND"] = "jax"
    result = subprocess.run(
        [sys.executable, "-m", "keras_encdec", "demo", "--fast",
         "--out-dir", str(tmp_path), "--steps", "3"],
        capture_output=True, text=True, env=env, timeout=600, cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    lines = result.stdout.splitlines()
    assert re.fullmatch(r"chrF: before=\d+\.\d\d after=\d+\.\d\d",
                        lines[-1]), result.stdout[-2000:]
    assert re.search(
        r"^wall time: [\d.]+ s; CPU time: [\d.]+ s; peak memory: [\d.]+ GiB$",
        result.stdout, re.M), result.stdout[-2000:]
    assert re.search(r"held out \(by module\)", result.stdout)
    assert re.search(
        r"^phases, wall/CPU s: data [\d.]+/[\d.]+; load [\d.]+/[\d.]+; "
        r"generate \(before\) [\d.]+/[\d.]+; fine-tune [\d.]+/[\d.]+; "
        r"generate \(after\) [\d.]+/[\d.]+$", result.stdout, re.M)
    assert "encoder output norm: gain" in result.stdout
    assert result.stdout.count("  reference: ") == 2  # --num-show (fast: 2)
    with open(tmp_path / "demo_loss.png", "rb") as file:
        assert file.read(8) == b"\x89PNG\r\n\x1a\n"
    # Progress bars (with tokens/s) go to stderr; nothing else but them.
    assert "tok_s=" in result.stderr
    stderr_lines = [line for line in result.stderr.splitlines()
                    if line.strip() and "\r" not in line and "it/s" not in
                    line and "tensor/s" not in line and "tok_s" not in line]
    assert [line for line in stderr_lines if is_startup_noise(line)] == []
    assert not [line for line in stderr_lines
                if "Unable to initialize backend" in line], stderr_lines
