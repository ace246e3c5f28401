"""The built wheel carries its presets and works outside the checkout.

Builds the wheel with `pip wheel --no-deps`, unpacks it into a temporary
folder, and runs a fresh interpreter whose only copy of `keras_encdec` is the
unpacked one (asserted), started outside the checkout. It lists the presets,
loads the embedded preset by name and greedy-decodes; the text must equal
that of the checkout's own package in this process.

Backend-independent packaging: runs on the jax backend only.
"""

import json
import os
import subprocess
import sys
import zipfile

import keras
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

pytestmark = pytest.mark.skipif(
    keras.backend.backend() != "jax", reason="packaging: one backend"
)

SOURCE = "the quick brown fox"

PROBE = r"""
import json, sys
import keras_encdec
from keras_encdec.models import T5GemmaSeq2SeqLM
lm = T5GemmaSeq2SeqLM.from_preset("t5gemma_tiny_random")
lm.compile(sampler="greedy")
text = lm.generate([sys.argv[1]], max_length=24)
print(json.dumps({
    "file": keras_encdec.__file__,
    "presets": len(T5GemmaSeq2SeqLM.presets),
    "text": [str(t) for t in text],
}))
"""


def greedy_text_here():
    from keras_encdec.models import T5GemmaSeq2SeqLM

    lm = T5GemmaSeq2SeqLM.from_preset("t5gemma_tiny_random")
    lm.compile(sampler="greedy")
    return [str(t) for t in lm.generate([SOURCE], max_length=24)]


def test_wheel_ships_presets_and_generates(tmp_path):
    wheel_dir = tmp_path / "wheel"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps",
         "--no-build-isolation", "--disable-pip-version-check", ROOT,
         "-w", str(wheel_dir)],
        check=True, cwd=tmp_path, capture_output=True,
    )
    (wheel,) = wheel_dir.glob("keras_encdec-*.whl")
    site = tmp_path / "site"
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        archive.extractall(site)
    assert "keras_encdec/presets/t5gemma_tiny_random/model.weights.h5" in names
    assert "keras_encdec/presets/t5gemma/t5gemma_2b_2b.json" in names

    env = dict(os.environ, PYTHONPATH=str(site))
    result = subprocess.run(
        [sys.executable, "-c", PROBE, SOURCE],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["file"].startswith(str(site)), report["file"]
    assert report["presets"] == 33  # 8 pairs x 4 variants + embedded
    expected = greedy_text_here()
    assert len(expected[0].split()) >= 3, expected  # a real continuation
    assert report["text"] == expected
