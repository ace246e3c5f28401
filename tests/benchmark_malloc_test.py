"""`tools/benchmark_vs_transformers.py --malloc`: the allocator choice.

The benchmark itself is a tool, not a test; this checks how it resolves
`--malloc` (glibc, tcmalloc, a path), its errors, and that a preloaded
library is verified in the worker process. Backend-independent: runs on the
jax backend only.
"""

import ctypes.util
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
def tool(load_tool):
    return load_tool("benchmark_vs_transformers")


def test_glibc_preloads_nothing(tool):
    assert tool._malloc_library("glibc") is None


def test_a_library_path_is_made_absolute(tool, tmp_path, monkeypatch):
    library = tmp_path / "libmymalloc.so.1"
    library.write_bytes(b"")
    assert tool._malloc_library(str(library)) == str(library)
    monkeypatch.chdir(tmp_path)
    assert tool._malloc_library("libmymalloc.so.1") == str(library)


def test_a_missing_path_says_what_was_received(tool, tmp_path):
    missing = str(tmp_path / "libnothere.so")
    with pytest.raises(SystemExit) as info:
        tool._malloc_library(missing)
    message = str(info.value)
    assert repr(missing) in message
    assert "expected `glibc`, `tcmalloc` or the path" in message


def test_a_path_ld_preload_would_split_is_refused(tool, tmp_path):
    library = tmp_path / "my malloc.so"
    library.write_bytes(b"")
    with pytest.raises(SystemExit, match="splits paths at spaces"):
        tool._malloc_library(str(library))


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


def test_the_worker_environment(tool, monkeypatch):
    monkeypatch.setenv("LD_PRELOAD", "/opt/libprofiler.so")
    env = tool._worker_env("torch", "/opt/libtcmalloc.so")
    assert env["KERAS_BACKEND"] == "torch"
    assert env["LD_PRELOAD"] == "/opt/libtcmalloc.so /opt/libprofiler.so"
    assert env[tool.MALLOC_ENV] == "/opt/libtcmalloc.so"
    env = tool._worker_env("jax", None)
    assert env["LD_PRELOAD"] == "/opt/libprofiler.so"  # Left as it was.
    assert env[tool.MALLOC_ENV] == ""
    monkeypatch.delenv("LD_PRELOAD")
    assert "LD_PRELOAD" not in tool._worker_env("jax", None)


def test_the_worker_refuses_to_run_on_its_own(tool, monkeypatch):
    monkeypatch.delenv(tool.MALLOC_ENV, raising=False)
    with pytest.raises(SystemExit, match="--worker is internal"):
        tool.run_backend(None)


def test_the_check_needs_malloc_to_be_the_librarys(tool):
    tool._check_preloaded(None)
    # Without a preload, malloc is the C library's (glibc here).
    tool._check_preloaded(ctypes.util.find_library("c"))
    with pytest.raises(SystemExit, match="is not loaded"):
        tool._check_preloaded("/nowhere/libnotloaded.so.1")
    # Loaded, but not the process's malloc.
    libm = ctypes.util.find_library("m")
    ctypes.CDLL(libm)
    with pytest.raises(SystemExit, match="process's malloc is "):
        tool._check_preloaded(libm)


def _run_check(library, preload):
    code = (
        "import importlib.util; "
        f"spec = importlib.util.spec_from_file_location('t', {TOOL!r}); "
        "m = importlib.util.module_from_spec(spec); "
        "spec.loader.exec_module(m); "
        f"m._check_preloaded({library!r}); print('checked')"
    )
    env = dict(os.environ, LD_PRELOAD=preload)
    return subprocess.run([sys.executable, "-c", code], env=env,
                          capture_output=True, text=True, timeout=120)


def test_a_preloaded_tcmalloc_passes_the_worker_check(tool):
    try:
        library = tool._malloc_library("tcmalloc")
    except SystemExit:
        pytest.skip("no tcmalloc on this machine")
    out = _run_check(library, library)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == ["checked"]
    # There, the C library is loaded but no longer the process's malloc.
    out = _run_check(ctypes.util.find_library("c"), library)
    assert out.returncode != 0
    assert "process's malloc is " in out.stderr
