"""Guards around a task's `fit` / `evaluate` / `predict`.

`TaskGuardsMixin` adds three things to a keras-encdec task:

1. **Token-id and label range checks** before any step runs. Ids outside
   `[0, vocabulary_size)` silently give NaN (jax gathers fill out-of-range
   rows) or read a wrong row, and labels such as `-7` train with loss 0.
   The checks run once per call, on the host, over numpy arrays (the whole
   array) or the first batch of a `tf.data.Dataset`; nothing is added to the
   compiled step, so there is no per-step host sync. Text passed through the
   preprocessor is valid by construction (its tokenizer fits the
   vocabulary) and is not checked. The switch is the `check_token_ranges`
   attribute (default `True`); set it to `False` to skip the checks.
   Eager calls (`task(inputs)`) on numpy arrays are checked the same way.
2. **Recovery after a failure**: on JAX, Keras detaches variable values
   during `fit`/`evaluate`/`predict` and reattaches them only after a
   successful step; a step that raises (e.g. on a label shape error) left
   every variable empty, so each later call failed with `TypeError:
   'NoneType' object is not callable`. The guard keeps references to the
   values (no copies) and reattaches any that are still empty after a
   failure.
3. **Atomic, exclusive `save_to_preset`** (see `keras_encdec.utils.
   atomic_save`): an interrupted save never leaves a mixed preset.

Examples:

>>> import numpy as np
>>> from keras_encdec.testing import tiny_seq2seq_lm
>>> lm = tiny_seq2seq_lm()
>>> batch = {name: np.ones((1, 3), "int32") for name in lm.input}
>>> batch["decoder_token_ids"][0, 0] = 64  # vocabulary_size is 64
>>> try:
...     lm(batch)
... except InputError as e:
...     print(str(e).split(" Received")[0])
`decoder_token_ids` must lie in [0, 64).
"""

import contextlib

import keras
import numpy as np

from keras_encdec.errors import InputError
from keras_encdec.models.encdec_inputs import SEGMENT_NAMES
from keras_encdec.utils import atomic_save

TOKEN_ID_KEYS = ("encoder_token_ids", "decoder_token_ids")
IGNORE_INDEX = -100


def check_id_range(name, values, vocabulary_size, ignore_index=None):
    """Raises `InputError` unless every value of the integer array `values`
    lies in `[0, vocabulary_size)` (or equals `ignore_index`)."""
    values = np.asarray(values)
    if values.size == 0 or not np.issubdtype(values.dtype, np.integer):
        return
    bad = (values < 0) | (values >= vocabulary_size)
    if ignore_index is not None:
        bad &= values != ignore_index
    if bad.any():
        where = tuple(int(i) for i in np.argwhere(bad)[0])
        allowed = f"[0, {vocabulary_size})" + (
            "" if ignore_index is None else f" or {ignore_index} (ignored)"
        )
        raise InputError(
            f"`{name}` must lie in {allowed}. Received: {name}"
            f"[{', '.join(map(str, where))}]={values[where]} ({int(bad.sum())} "
            f"values out of range, min={values.min()}, max={values.max()})."
        )


def check_token_batch(x, y, vocabulary_size):
    """Checks the token ids of an input dict `x` and integer labels `y`
    (numpy-convertible; other types, e.g. strings, are skipped)."""
    if isinstance(x, dict):
        for name in TOKEN_ID_KEYS:
            if name in x and _is_host_array(x[name]):
                check_id_range(name, x[name], vocabulary_size)
    if not _is_host_array(y):
        return
    decoder_ids = x.get("decoder_token_ids") if isinstance(x, dict) else None
    if decoder_ids is not None and _is_host_array(decoder_ids):
        if np.shape(y) != np.shape(decoder_ids):
            raise InputError(
                "Labels `y` must have the shape of `decoder_token_ids`. "
                f"Received: y.shape={np.shape(y)}, decoder_token_ids.shape="
                f"{np.shape(decoder_ids)}."
            )
    check_id_range("labels y", y, vocabulary_size, IGNORE_INDEX)


def _is_host_array(value):
    return isinstance(value, (np.ndarray, list)) or (
        keras.ops.is_tensor(value) and not _is_symbolic(value)
    )


def _is_symbolic(value):
    return isinstance(value, keras.KerasTensor) or "Tracer" in type(value).__name__


def _first_batch(data):
    """`(x, y)` of the first element of a `tf.data.Dataset`, or None."""
    import tensorflow as tf

    if not isinstance(data, tf.data.Dataset):
        return None
    for element in data.take(1):
        element = tuple(element) if isinstance(element, tuple) else (element,)
        x = element[0]
        y = element[1] if len(element) > 1 else None
        return (
            {k: v.numpy() for k, v in x.items()} if isinstance(x, dict) else x,
            None if y is None else y.numpy(),
        )
    return None


def check_sampler(sampler):
    """Raises a `ValueError` unless `sampler` is a keras-hub sampler or the
    name of one (keras-hub accepts any name and fails at `generate`)."""
    import keras_hub

    if isinstance(sampler, keras_hub.samplers.Sampler):
        return
    try:
        resolved = keras_hub.samplers.get(sampler)
    except (KeyError, ValueError, TypeError):
        resolved = None
    if not isinstance(resolved, keras_hub.samplers.Sampler):
        raise ValueError(
            f"Unknown sampler. Received: sampler={sampler!r}. Expected a "
            "`keras_hub.samplers.Sampler` or one of the names 'greedy', "
            "'top_k', 'top_p', 'beam', 'random', 'contrastive'."
        )


def check_max_length(max_length):
    """Raises a `ValueError` unless `max_length` is None or an int >= 1."""
    if max_length is None:
        return
    if isinstance(max_length, bool) or not isinstance(
        max_length, (int, np.integer)
    ) or max_length < 1:
        raise ValueError(
            "`max_length` must be None (the preprocessor's length) or an int "
            f">= 1. Received: max_length={max_length!r}."
        )


def check_no_segment_ids(inputs):
    """Raises a `ValueError` when `generate` inputs carry segment ids
    (packing is for training; each prompt needs its own row)."""
    batches = inputs if isinstance(inputs, (list, tuple)) else [inputs]
    for batch in batches:
        given = sorted(set(SEGMENT_NAMES) & set(batch)) if isinstance(
            batch, dict) else []
        if given:
            raise ValueError(
                "`generate()` does not take packed inputs. Received: "
                f"{given}. Sequence packing is a training feature (fit, "
                "evaluate, predict); to generate, give each prompt its own "
                "row, without segment ids."
            )


@contextlib.contextmanager
def keep_variables_on_failure(model):
    """Reattaches variable values that a failed JAX step left detached."""
    if keras.backend.backend() != "jax":
        yield
        return
    variables = list(model.variables) + list(model.metrics_variables)
    if model.optimizer is not None:
        variables += list(model.optimizer.variables)
    values = [(v, v._value) for v in variables]  # references, not copies
    try:
        yield
    except BaseException:
        for variable, value in values:
            if variable._value is None and value is not None:
                variable._value = value
        model._jax_state = None
        model._jax_state_synced = True
        raise


class TaskGuardsMixin:
    """Input range checks and failure recovery for `fit`, `evaluate` and
    `predict`, and an atomic `save_to_preset` (see the module docstring). Set `check_token_ranges = False`
    on an instance to skip the range checks."""

    check_token_ranges = True

    def _check_data(self, x, y):
        if not self.check_token_ranges:
            return
        first = _first_batch(x)
        if first is not None:
            x, y = first
        check_token_batch(x, y, self.backbone.vocabulary_size)

    def fit(self, x=None, y=None, *args, **kwargs):
        self._check_data(x, y)
        with keep_variables_on_failure(self):
            return super().fit(x, y, *args, **kwargs)

    def evaluate(self, x=None, y=None, *args, **kwargs):
        if not kwargs.get("_use_cached_eval_dataset", False):
            self._check_data(x, y)
        with keep_variables_on_failure(self):
            return super().evaluate(x, y, *args, **kwargs)

    def predict(self, x=None, *args, **kwargs):
        self._check_data(x, None)
        with keep_variables_on_failure(self):
            return super().predict(x, *args, **kwargs)

    def compile(self, *args, sampler="top_k", **kwargs):
        check_sampler(sampler)
        super().compile(*args, sampler=sampler, **kwargs)

    def generate(self, inputs, max_length=None, *args, **kwargs):
        check_max_length(max_length)
        check_no_segment_ids(inputs)
        return super().generate(inputs, max_length, *args, **kwargs)

    def save_to_preset(self, preset_dir, max_shard_size=10, overwrite=False):
        """Saves the task (config, weights, preprocessor) to a folder.

        Like keras-hub's `Task.save_to_preset`, but atomic and exclusive:
        the preset is written into a temporary sibling and moved into place
        in one step, so an interrupted save leaves the old preset or the new
        one, never a mix; files of an earlier save are gone. Free disk space
        is checked first (`keras_encdec.errors.InsufficientSpaceError`).

        Args:
            preset_dir: str. The preset folder.
            max_shard_size: int or float or None. Largest weights shard in
                GB. Defaults to `10`.
            overwrite: bool. Replace a folder holding files keras-encdec
                did not write. Defaults to `False` (such a folder raises
                `keras_encdec.errors.TargetExistsError`).

        Examples:

        >>> import os, tempfile
        >>> from keras_encdec.models import T5GemmaSeq2SeqLM
        >>> lm = T5GemmaSeq2SeqLM.from_preset("t5gemma_tiny_random")
        >>> folder = os.path.join(tempfile.mkdtemp(), "preset")
        >>> lm.save_to_preset(folder)
        >>> lm.save_to_preset(folder)  # ours: replaced in one step
        >>> "task.json" in os.listdir(folder)
        True
        """
        with atomic_save.atomic_folder(
            preset_dir,
            overwrite=overwrite,
            needed_bytes=atomic_save.variables_nbytes(self.weights),
        ) as staging:
            super().save_to_preset(staging, max_shard_size=max_shard_size)

    def _check_call_inputs(self, inputs):
        """For `__call__`: checks numpy token ids (never device tensors)."""
        if self.check_token_ranges and isinstance(inputs, dict):
            for name in TOKEN_ID_KEYS:
                if isinstance(inputs.get(name), (np.ndarray, list)):
                    check_id_range(
                        name, inputs[name], self.backbone.vocabulary_size
                    )
