"""The errors keras-encdec raises on purpose, under one base class.

Catch `KerasEncDecError` for any of them, or a subclass for one kind of
failure. Each subclass also derives from the built-in error it refines
(`ValueError`, `OSError`, ...), so code written against the built-ins keeps
working.

Policy for a missing tokenizer (one rule everywhere): loading a *model*
from a checkpoint without `tokenizer.model` succeeds, logs a warning naming
the folder (`log_missing_tokenizer`) and gives a task with no preprocessor,
which takes token-id dicts. Asking for the *tokenizer itself*
(`T5GemmaTokenizer.from_preset`) raises `MissingTokenizerError`.

Examples:

>>> from keras_encdec import errors
>>> issubclass(errors.CheckpointError, (errors.KerasEncDecError, ValueError))
True
>>> try:
...     raise errors.ConfigError("`rms_norm_eps` must be > 0.")
... except errors.KerasEncDecError as e:
...     print(type(e).__name__)
ConfigError
"""

import errno
import logging

logger = logging.getLogger(__name__)


class KerasEncDecError(Exception):
    """Base class of every error keras-encdec raises on purpose."""


class ConfigError(KerasEncDecError, ValueError):
    """A model or layer setting is invalid (wrong type or out of range)."""


class InputError(KerasEncDecError, ValueError):
    """Model inputs are invalid: token ids or labels out of range, batch
    sizes that do not match."""


class CheckpointError(KerasEncDecError, ValueError):
    """A checkpoint folder or file is missing, unreadable or conflicting."""


class WeightMismatchError(CheckpointError):
    """A source checkpoint does not fit the target model (shapes, dtypes,
    missing or unused tensors)."""


class MissingTokenizerError(KerasEncDecError, FileNotFoundError):
    """A tokenizer was requested from a checkpoint that has none."""


class AdaptationError(KerasEncDecError, ValueError):
    """A source cannot be adapted (wrong architecture, mismatched pair)."""


class PresetDownloadError(KerasEncDecError, OSError):
    """A hub handle could not be downloaded."""


class TargetExistsError(KerasEncDecError, FileExistsError):
    """A save target holds files keras-encdec did not write; pass
    `overwrite=True` to replace them."""


class InsufficientSpaceError(KerasEncDecError, OSError):
    """Not enough free disk space for a write (checked before writing)."""

    def __init__(self, message):
        super().__init__(errno.ENOSPC, message)

    def __str__(self):
        return self.args[1]


def log_missing_tokenizer(folder):
    """Logs the one warning for a model loaded without a tokenizer."""
    logger.warning(
        "No tokenizer.model in '%s': the model has no preprocessor and takes "
        "token-id dicts.",
        folder,
    )
