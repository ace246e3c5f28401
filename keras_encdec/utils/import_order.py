"""Import-order workarounds between heavy native dependencies.

Importing `triton` after `tensorflow` aborts the process with
"LLVM ERROR: inconsistency in registered CommandLine options" (both bundle
LLVM). Importing `triton` first is fine. keras-hub imports tensorflow, so the
package init calls `preload_triton()` before anything imports keras-hub.
"""

import logging
import sys

logger = logging.getLogger(__name__)


def preload_triton():
    """Imports `triton` early, on every backend, when it is installed.

    Any backend needs it: transformers (the test reference) and torch's
    compiler import triton too, and would abort after keras-hub has
    imported tensorflow. Does nothing when triton is not installed.

    Returns:
        bool. True when triton was imported (or already was).

    Examples:

    >>> from keras_encdec.utils.import_order import preload_triton
    >>> isinstance(preload_triton(), bool)
    True
    """
    if "triton" in sys.modules:
        return True
    if "tensorflow" in sys.modules:
        # Importing triton now would abort the whole process.
        logger.warning(
            "tensorflow was imported before triton; triton kernels are "
            "unavailable in this process. Import keras_encdec first."
        )
        return False
    try:
        import triton  # noqa: F401
    except ImportError:
        return False
    return True
