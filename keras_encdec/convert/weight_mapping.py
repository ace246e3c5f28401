"""Correct-by-construction weight assignment shared by all converters.

A converter names, for every target variable, the source tensor and the
layout change between them. `WeightAssigner` checks every shape, refuses a
second assignment of the same variable, and at the end checks that every
source tensor was used exactly once and every target variable set.
"""

import logging

from tqdm.auto import tqdm
from keras_encdec.errors import WeightMismatchError  # noqa: F401 (public)

logger = logging.getLogger(__name__)


class WeightAssigner:
    """Assigns source tensors to Keras variables, one at a time.

    Args:
        read: callable. `read(name) -> np.ndarray` loads one source tensor.
        source_names: iterable of str. Every tensor in the source.
        total: int. Number of assignments expected (for the progress bar).
        description: str. Progress bar label.
        ignored_sources: iterable of str. Source tensors that are legitimately
            unused (e.g. a tied LM head duplicated in the file).

    Examples:

    >>> import keras, numpy as np
    >>> layer = keras.layers.Dense(2, use_bias=False)
    >>> layer.build((None, 3))
    >>> src = {"w": np.ones((2, 3), "float32")}
    >>> with WeightAssigner(src.__getitem__, src, total=1) as assign:
    ...     assign(layer.kernel, "w", lambda w: w.T)
    >>> float(keras.ops.sum(layer.kernel))
    6.0
    """

    def __init__(
        self,
        read,
        source_names,
        total,
        description="Converting",
        ignored_sources=(),
    ):
        self.read = read
        self.unused = set(source_names) - set(ignored_sources)
        self.assigned = set()
        self.used = set()
        self.progress = tqdm(
            total=total, desc=description, unit="tensor", leave=False
        )

    def __call__(self, variable, source_name, transform=None):
        if source_name not in self.unused:
            if source_name in self.used:
                raise WeightMismatchError(
                    f"Source tensor '{source_name}' was used twice."
                )
            raise WeightMismatchError(
                f"Source tensor '{source_name}' is missing from the checkpoint "
                f"(needed for '{variable.path}')."
            )
        if variable.path in self.assigned:
            raise WeightMismatchError(
                f"Variable '{variable.path}' was assigned twice."
            )
        value = self.read(source_name)
        if transform is not None:
            value = transform(value)
        if tuple(value.shape) != tuple(variable.shape):
            raise WeightMismatchError(
                f"Shape mismatch for '{variable.path}' from '{source_name}': "
                f"the checkpoint gives {tuple(value.shape)} after layout "
                f"conversion, the model expects {tuple(variable.shape)}. The "
                "config does not match the weights."
            )
        _check_dtype(variable, value, source_name)
        variable.assign(value)
        self.unused.discard(source_name)
        self.used.add(source_name)
        self.assigned.add(variable.path)
        self.progress.update(1)

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        self.progress.close()
        if exc_type is None and self.unused:
            raise WeightMismatchError(
                "These checkpoint tensors were not used by the model (the "
                f"config does not match the weights): {sorted(self.unused)}."
            )
        return False


def _check_dtype(variable, value, source_name):
    """Refuses a non-float tensor (int32, bool, ...) for a float weight:
    Keras would cast it to garbage float values silently."""
    target = str(variable.dtype)
    source = str(value.dtype)
    is_float = source.startswith(("float", "bfloat"))
    if "float" in target and not is_float:
        raise WeightMismatchError(
            f"Dtype mismatch for '{variable.path}' from '{source_name}': the "
            f"checkpoint stores {source}, the model weight is {target}. "
            "Expected a floating-point tensor (float32, bfloat16 or float16)."
        )


def named_block_roles(block, names, checkpoint):
    """Yields `(role, variable, name)` for each weight role of `block`, in
    the order of `names` (`{role: checkpoint tensor name}`), after checking
    that every role the block declares has a name.

    Args:
        block: a layer with `weight_roles()` (see `keras_encdec.weight_roles`).
        names: dict. Role -> the tensor's name in the checkpoint format.
        checkpoint: str. The format, for the error message.
    """
    roles = block.weight_roles()
    unknown = sorted(set(roles) - set(names))
    if unknown:
        raise ValueError(
            f"Block '{block.name}' has weight roles that {checkpoint} "
            f"checkpoints do not name: {unknown}. Expected roles among "
            f"{sorted(names)}."
        )
    for role, name in names.items():
        if role in roles:
            yield role, roles[role], name


def check_all_assigned(variables, assigner):
    """Raises unless every variable in `variables` was assigned."""
    missing = sorted(v.path for v in variables if v.path not in assigner.assigned)
    if missing:
        raise WeightMismatchError(
            f"These model weights were not found in the checkpoint: {missing}."
        )
