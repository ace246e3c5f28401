"""Import-order workaround between triton and tensorflow.

Importing `triton` after `tensorflow` aborts the process with
"LLVM ERROR: inconsistency in registered CommandLine options" (both bundle
LLVM); importing `triton` first is fine. keras-hub imports tensorflow on
every backend, so the Triton loss kernel can only run in a process that
imported triton before keras-hub.

`import keras_encdec` imports triton only where that kernel can be the one
used: on the torch backend with a CUDA device, or when the user asked for
Triton's CPU interpreter (`TRITON_INTERPRET=1`). Everywhere else it leaves
triton alone, so importing keras-encdec changes nothing for other libraries.
"""

import importlib.util
import os
import sys


def triton_wanted():
    """Whether this process may run the Triton kernel.

    True on the torch backend when CUDA is available or `TRITON_INTERPRET=1`
    is set, and triton is installed.

    Examples:

    >>> isinstance(triton_wanted(), bool)
    True
    """
    if importlib.util.find_spec("triton") is None:
        return False
    if os.environ.get("TRITON_INTERPRET", "") == "1":
        return True
    backend = os.environ.get("KERAS_BACKEND")
    if backend is None:
        import keras

        backend = keras.backend.backend()
    if backend != "torch":
        return False
    import torch

    return torch.cuda.is_available()


def triton_import_problem():
    """Why `import triton` cannot happen now, or `None` if it can.

    Examples:

    >>> problem = triton_import_problem()
    >>> problem is None or "triton" in problem
    True
    """
    if "triton" in sys.modules:
        return None
    if importlib.util.find_spec("triton") is None:
        return "the `triton` package is not installed"
    if "tensorflow" in sys.modules:
        return (
            "tensorflow was imported before triton, and importing triton "
            "now would abort the process (both bundle LLVM). Import triton "
            "first: put `import triton` (or `import keras_encdec`) before "
            "`import keras_hub` / `import tensorflow` at the top of your "
            "script"
        )
    return None


def preload_triton():
    """Imports triton now if this process may use the Triton kernel.

    Called by `import keras_encdec` (see the module docstring). Does nothing
    when triton is not wanted or already imported; never aborts the process:
    with tensorflow already imported it leaves triton alone, and the Triton
    kernel then raises `triton_import_problem()` when asked for.

    Returns:
        bool. True when triton is imported.

    Examples:

    >>> isinstance(preload_triton(), bool)
    True
    """
    if "triton" in sys.modules:
        return True
    if not triton_wanted() or triton_import_problem() is not None:
        return False
    import triton  # noqa: F401

    return True
