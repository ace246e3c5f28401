"""Every guide in `guides/` runs top to bottom and matches its notebook.

Each guide is a jupytext percent `.py` paired with a generated `.ipynb`
(`make notebooks`). Each runs in a fresh interpreter (`sys.executable`)
from the repository root in its fast mode (`KERAS_ENCDEC_GUIDE_FAST=1`,
smaller problems, same steps), on one backend (the guides exercise no
backend-specific code the rest of the suite does not): torch, where eager
calls compile nothing (several times faster than jax here), except
`memory_story.py`, whose subject is jax's compiled memory. Each must exit 0
and print `guide finished` as its last step (its own assertions run
before).
"""

import glob
import os
import subprocess
import sys

import keras
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GUIDES = sorted(glob.glob(os.path.join(ROOT, "guides", "*.py")))
MARKER = "guide finished"
IDS = [os.path.basename(g) for g in GUIDES]
one_backend = pytest.mark.skipif(keras.backend.backend() != "torch",
                                 reason="guides run from one pytest process")
GUIDE_BACKENDS = {"memory_story.py": "jax"}  # The others run on torch.


def test_guides_exist():
    assert len(GUIDES) >= 3, GUIDES


@one_backend
@pytest.mark.parametrize("guide", GUIDES, ids=IDS)
def test_notebook_is_generated_from_guide(guide):
    jupytext = pytest.importorskip("jupytext")
    notebook = guide[:-3] + ".ipynb"
    assert os.path.isfile(notebook), f"missing {notebook}: run make notebooks"
    expected = jupytext.read(guide).cells
    actual = jupytext.read(notebook).cells  # Cell ids are random: skip them.
    assert [(c.cell_type, c.source) for c in actual] == [
        (c.cell_type, c.source) for c in expected
    ], f"{notebook} is stale: run make notebooks"
    cells = [c for c in expected if c.cell_type == "code"]
    first = cells[0].source
    assert 'find_spec("keras_encdec") is None' in first, first
    assert '"pip", "install"' in first and "keras-encdec" in first, first


@one_backend
@pytest.mark.parametrize("guide", GUIDES, ids=IDS)
def test_guide_runs(guide):
    env = dict(os.environ)
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    env["KERAS_ENCDEC_GUIDE_FAST"] = "1"
    env["KERAS_BACKEND"] = GUIDE_BACKENDS.get(os.path.basename(guide), "torch")
    env["MPLBACKEND"] = "Agg"  # plt.show() is a no-op off a notebook.
    # On few CPU cores, torch's OpenMP threads and the tf.data text
    # preprocessing of `fit` oversubscribe the cores and torch steps slow
    # down about 20x; one OpenMP thread keeps the guide within seconds.
    env.setdefault("OMP_NUM_THREADS", "1")
    result = subprocess.run(
        [sys.executable, guide],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-5000:]
    lines = result.stdout.splitlines()
    assert lines and lines[-1] == MARKER, output[-5000:]
