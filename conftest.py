"""Pytest root configuration.

Triton must be imported before TensorFlow (keras imports it on the
tensorflow backend, keras-hub on every backend), or the process aborts on
duplicate LLVM options. Importing it here, before any test module, keeps
transformers (the numerical reference) and the Triton kernels usable.
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

try:
    import triton  # noqa: F401
except ImportError:
    pass
