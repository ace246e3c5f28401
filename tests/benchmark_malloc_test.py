"""`tools/benchmark_vs_transformers.py --malloc`: the allocator choice.

The benchmark itself is a tool, not a test; this checks how it resolves
`--malloc` (glibc, tcmalloc, a path), its errors, and that a preloaded
library is verified in the worker process. Backend-independent: runs on the
jax backend only.
"""

import importlib.util
import os
import subprocess
import sys

import keras
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOOL = os.path.join(ROOT, "tools", "benchmark_vs_transformers.py")

pytestmark = pytest.mark.skipif(
    keras.backend.backend() != "jax", reason="tool options: one backend"
)


@pytest.fixture(scope="module")
def tool():
    spec = importlib.util.spec_from_file_location("benchmark_tool", TOOL)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_glibc_preloads_nothing(tool):
    assert tool._malloc_library("glibc") is None


def test_a_library_path_is_taken_as_given(tool, tmp_path):
    library = tmp_path / "libmymalloc.so.1"
    library.write_bytes(b"")
    assert tool._malloc_library(str(library)) == str(library)


def test_a_missing_path_says_what_was_received(tool, tmp_path):
    missing = str(tmp_path / "libnothere.so")
    with pytest.raises(SystemExit) as info:
        tool._malloc_library(missing)
    message = str(info.value)
    assert repr(missing) in message
    assert "expected `glibc`, `tcmalloc` or the path" in message


def test_tcmalloc_is_found_like_the_linker_finds_it(tool, monkeypatch):
    asked = []

    def find_library(name):
        asked.append(name)
        return "libtcmalloc.so.4" if name == "tcmalloc" else None

    monkeypatch.setattr(tool.ctypes.util, "find_library", find_library)
    assert tool._malloc_library("tcmalloc") == "libtcmalloc.so.4"
    assert asked == ["tcmalloc_minimal", "tcmalloc"]


def test_no_tcmalloc_says_how_to_install_it(tool, monkeypatch):
    monkeypatch.setattr(tool.ctypes.util, "find_library", lambda name: None)
    with pytest.raises(SystemExit) as info:
        tool._malloc_library("tcmalloc")
    assert "apt-get install libtcmalloc-minimal4" in str(info.value)


def test_the_worker_checks_the_library_is_mapped(tool):
    tool._check_preloaded(None)
    tool._check_preloaded("libc.so.6")  # Mapped in every CPython on glibc.
    with pytest.raises(SystemExit, match="was not preloaded"):
        tool._check_preloaded("/nowhere/libnotmapped.so.1")


def test_a_preloaded_tcmalloc_is_seen_by_the_worker_check(tool):
    import ctypes.util

    library = next((ctypes.util.find_library(name)
                    for name in tool.TCMALLOC_NAMES
                    if ctypes.util.find_library(name)), None)
    if library is None:
        pytest.skip("no tcmalloc on this machine")
    code = (
        "import importlib.util, sys; "
        f"spec = importlib.util.spec_from_file_location('t', {TOOL!r}); "
        "m = importlib.util.module_from_spec(spec); "
        "spec.loader.exec_module(m); "
        f"m._check_preloaded({library!r}); print('mapped')"
    )
    env = dict(os.environ, LD_PRELOAD=library)
    out = subprocess.run([sys.executable, "-c", code], env=env,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == ["mapped"]
