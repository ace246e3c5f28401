"""Pytest root configuration.

Triton must be imported before TensorFlow (keras imports it on the
tensorflow backend, keras-hub on every backend), or the process aborts on
duplicate LLVM options. Importing it here, before any test module, keeps
transformers (the numerical reference) and the Triton kernels usable.

The suite compiles XLA programs (jax, and tensorflow's jit-compiled steps)
with LLVM's backend optimizations off (`TEST_XLA_FLAGS`, appended to any
`XLA_FLAGS` already set; subprocesses inherit it). The test models are
tiny, so the suite is compile-bound: this cuts its XLA compile time by
about a third. The HLO graph and its fusions are unchanged, and every
numerical test keeps its threshold. Benchmarks (`tools/`) and users run
with XLA's defaults.
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
TEST_XLA_FLAGS = (
    "--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true"
)
if "xla_backend_optimization_level" not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (
        os.environ.get("XLA_FLAGS", "") + " " + TEST_XLA_FLAGS
    ).strip()

try:
    import triton  # noqa: F401
except ImportError:
    pass


def pytest_collection_modifyitems(config, items):
    """Runs the cross-cutting tests (`tests/`: real weights, guides,
    subprocesses; the slowest) first, so the two xdist workers do not end
    on one long test each while the other idles."""
    items.sort(key=lambda item: not item.nodeid.startswith("tests/"))
