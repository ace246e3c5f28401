"""Atomic, exclusive saves of folders and files, with a free-space check.

Every folder keras-encdec saves (presets, transformers exports) is written
into a temporary sibling and then moved into place in one step, so a save
killed at any moment leaves either the old folder or the new one, never a
mix. On Linux the old and new folders are exchanged with one
`renameat2(RENAME_EXCHANGE)` call; elsewhere two renames leave, for an
instant, no folder at all (never a mixed one).

Each saved folder holds a manifest (`MANIFEST`) listing the files we wrote.
A target folder holding any other file is refused with
`keras_encdec.errors.TargetExistsError` unless `overwrite=True`, which
replaces the whole folder. Because the new folder holds only the new files,
stale files of an earlier save (old shards) disappear with the old folder.

Examples:

>>> import os, tempfile
>>> target = os.path.join(tempfile.mkdtemp(), "out")
>>> with atomic_folder(target) as staging:
...     with open(os.path.join(staging, "a.txt"), "w") as f:
...         _ = f.write("new")
>>> sorted(os.listdir(target))
['.keras_encdec_manifest.json', 'a.txt']
"""

import contextlib
import ctypes
import json
import logging
import os
import shutil
import sys
import tempfile

from keras_encdec.errors import InsufficientSpaceError
from keras_encdec.errors import TargetExistsError

logger = logging.getLogger(__name__)

MANIFEST = ".keras_encdec_manifest.json"
# Headroom for JSON, tokenizer and file-system overhead beyond the weights.
SPACE_MARGIN_BYTES = 16 * 1024**2


def variables_nbytes(variables):
    """Bytes the values of `variables` take once written."""
    import numpy as np

    total = 0
    for variable in variables:
        name = str(variable.dtype).split(".")[-1]
        try:
            itemsize = np.dtype(name).itemsize
        except TypeError:  # bfloat16, int4, ...: at most 4 bytes.
            itemsize = 2 if name == "bfloat16" else 4
        total += int(np.prod(variable.shape)) * itemsize
    return total


def check_free_space(folder, needed_bytes):
    """Raises `InsufficientSpaceError` (an `OSError`, errno ENOSPC) unless
    the file system of `folder` has `needed_bytes` plus a margin free."""
    needed = int(needed_bytes) + SPACE_MARGIN_BYTES
    free = shutil.disk_usage(folder).free
    if free < needed:
        raise InsufficientSpaceError(
            f"Not enough free disk space to write into '{folder}'. Received: "
            f"{free} bytes free. Expected at least {needed} bytes "
            f"({needed_bytes} for the data plus a {SPACE_MARGIN_BYTES}-byte "
            "margin). Free some space or choose another location."
        )


def written_files(folder):
    """Relative paths of every file under `folder` (sorted)."""
    files = []
    for root, _, names in os.walk(folder):
        for name in names:
            files.append(os.path.relpath(os.path.join(root, name), folder))
    return sorted(files)


def check_target(target, overwrite=False):
    """Raises `TargetExistsError` if saving into `target` would replace
    files keras-encdec did not write there (unless `overwrite`)."""
    if not os.path.lexists(target):
        return
    if not os.path.isdir(target) or os.path.islink(target):
        raise TargetExistsError(
            f"The save target '{target}' exists and is not a folder. Expected "
            "a new or existing folder path."
        )
    if overwrite:
        return
    foreign = sorted(set(written_files(target)) - set(_ours(target)))
    if foreign:
        shown = ", ".join(foreign[:5]) + (" ..." if len(foreign) > 5 else "")
        raise TargetExistsError(
            f"The save target '{target}' holds files keras-encdec did not "
            f"write there ({len(foreign)}: {shown}). Choose a new or empty "
            "folder, or pass `overwrite=True` to replace the whole folder."
        )


def _ours(folder):
    path = os.path.join(folder, MANIFEST)
    try:
        with open(path) as f:
            return list(json.load(f)["files"]) + [MANIFEST]
    except (OSError, ValueError, KeyError, TypeError):
        return []


@contextlib.contextmanager
def atomic_folder(target, overwrite=False, needed_bytes=0):
    """Yields a temporary sibling folder to write; on success it replaces
    `target` in one step.

    Args:
        target: str. The folder to create or replace.
        overwrite: bool. Replace a folder holding files keras-encdec did not
            write. Defaults to `False` (raise `TargetExistsError`).
        needed_bytes: int. Bytes about to be written; checked against the
            free space first. Defaults to `0`.
    """
    target = os.path.abspath(os.fspath(target))
    check_target(target, overwrite)
    parent = os.path.dirname(target)
    os.makedirs(parent, exist_ok=True)
    check_free_space(parent, needed_bytes)
    base = os.path.basename(target)
    staging = tempfile.mkdtemp(prefix=f".{base}.partial-", dir=parent)
    try:
        yield staging
        files = written_files(staging)
        with open(os.path.join(staging, MANIFEST), "w") as f:
            json.dump({"files": files}, f, indent=2)
        _fsync_tree(staging)
        _replace_folder(staging, target)
        _fsync_dir(parent)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _replace_folder(staging, target):
    """Moves `staging` to `target`; an old `target` ends up at `staging`."""
    if not os.path.exists(target):
        os.rename(staging, target)
        return
    if _exchange(staging, target):
        return
    old = staging + ".old"
    os.rename(target, old)
    os.rename(staging, target)
    os.rename(old, staging)  # removed by the caller


def _exchange(a, b):
    if not sys.platform.startswith("linux"):
        return False
    libc = ctypes.CDLL(None, use_errno=True)
    renameat2 = getattr(libc, "renameat2", None)
    if renameat2 is None:
        return False
    at_fdcwd, rename_exchange = -100, 2
    result = renameat2(
        at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange
    )
    return result == 0


@contextlib.contextmanager
def atomic_file(target, needed_bytes=0):
    """Yields a temporary sibling path to write; on success it replaces the
    file `target` with one `os.replace`. The caller decides whether an
    existing `target` may be replaced."""
    target = os.path.abspath(os.fspath(target))
    parent = os.path.dirname(target)
    os.makedirs(parent, exist_ok=True)
    check_free_space(parent, needed_bytes)
    descriptor, staging = tempfile.mkstemp(
        prefix=f".{os.path.basename(target)}.partial-", dir=parent
    )
    os.close(descriptor)
    try:
        yield staging
        _fsync_file(staging)
        os.replace(staging, target)
        _fsync_dir(parent)
    finally:
        if os.path.exists(staging):
            os.remove(staging)


def _fsync_tree(folder):
    for root, _, names in os.walk(folder):
        for name in names:
            _fsync_file(os.path.join(root, name))
        _fsync_dir(root)


def _fsync_file(path):
    with open(path, "rb") as f:
        os.fsync(f.fileno())


def _fsync_dir(path):
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
