"""Quiet start-up: drop the native libraries' known start-up chatter.

TensorFlow (which keras-hub imports on every backend), its bundled absl,
XLA and the SentencePiece op of tensorflow-text write informational lines
straight to file descriptor 2 from C++, where Python's `logging` and
`warnings` filters cannot reach them. None of them is actionable on a CPU
machine:

- `WARNING: All log messages before absl::InitializeLog() ...`
- `I0000 ... port.cc ...] oneDNN custom operations are on ...`
- `I0000 ... cudart_stub.cc ...] Could not find cuda drivers ...`
- `E0000 ... cuda_platform.cc ...] failed call to cuInit ...`
- `normalizer.cc(51) LOG(INFO) precompiled_charsmap is empty ...`

`native_stderr_filter()` captures descriptor 2 around the calls that emit
them (the first import of keras-hub / tensorflow, building a SentencePiece
op) and writes back every line that does not match one of these patterns,
so real warnings and errors still reach the user. Set
`KERAS_ENCDEC_VERBOSE_STARTUP=1` to keep everything.
"""

import contextlib
import os
import re
import sys
import tempfile

VERBOSE_ENV = "KERAS_ENCDEC_VERBOSE_STARTUP"

# Each pattern matches one known, benign start-up line (see module docs).
STARTUP_NOISE = tuple(
    re.compile(pattern)
    for pattern in (
        r"^WARNING: All log messages before absl::InitializeLog\(\) is called",
        r"^I\d{4} [\d:. ]+\d+ port\.cc:\d+\] oneDNN custom operations are on",
        r"^I\d{4} [\d:. ]+\d+ cudart_stub\.cc:\d+\] Could not find cuda",
        r"^E\d{4} [\d:. ]+\d+ cuda_platform\.cc:\d+\] failed call to cuInit",
        r"^I\d{4} [\d:. ]+\d+ cpu_feature_guard\.cc:\d+\] This TensorFlow "
        r"binary is optimized",
        r"^To enable the following instructions: .* in other operations, "
        r"rebuild TensorFlow",
        r"^normalizer\.cc\(\d+\) LOG\(INFO\) precompiled_charsmap is empty",
    )
)


def is_startup_noise(line):
    """Whether `line` is one of the known benign start-up lines.

    Examples:

    >>> is_startup_noise("normalizer.cc(51) LOG(INFO) precompiled_charsmap "
    ...                  "is empty. use identity normalization.")
    True
    >>> is_startup_noise("UserWarning: something real")
    False
    """
    return any(pattern.search(line) for pattern in STARTUP_NOISE)


@contextlib.contextmanager
def native_stderr_filter():
    """Filters known start-up noise from descriptor 2 inside the block.

    Everything written to descriptor 2 (C++ and Python alike) inside the
    block is held back and re-emitted afterwards minus the lines matched by
    `is_startup_noise`. If the block raises, everything is re-emitted
    unfiltered before the exception propagates.

    Examples:

    >>> with native_stderr_filter():
    ...     pass
    """
    if os.environ.get(VERBOSE_ENV) == "1":
        yield
        return
    try:
        stderr_fd = sys.stderr.fileno()
    except (AttributeError, OSError, ValueError):
        yield  # no real descriptor (e.g. a notebook kernel's stream)
        return
    sys.stderr.flush()
    saved = os.dup(stderr_fd)
    failed = True
    with tempfile.TemporaryFile(mode="w+b") as held:
        os.dup2(held.fileno(), stderr_fd)
        try:
            yield
            failed = False
        finally:
            sys.stderr.flush()
            os.dup2(saved, stderr_fd)
            os.close(saved)
            held.seek(0)
            text = held.read().decode("utf-8", errors="replace")
            kept = [
                line
                for line in text.splitlines(keepends=True)
                if failed or not is_startup_noise(line)
            ]
            if kept:
                sys.stderr.write("".join(kept))
                sys.stderr.flush()
