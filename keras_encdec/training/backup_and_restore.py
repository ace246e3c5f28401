"""`BackupAndRestore` whose checkpoints are committed atomically.

Keras' `BackupAndRestore` (3.15) overwrites `latest.weights.h5` in place and
then writes `training_metadata.json` separately. A process killed during
the weights write leaves a truncated file that fails to load on restart,
and one killed between the two writes pairs new weights with the old epoch.

`AtomicBackupAndRestore` writes each checkpoint under a fresh name and then
commits it by atomically replacing one small pointer file
(`checkpoint.json`, via `os.replace`). Whatever moment the process dies,
the pointer names a complete checkpoint (or none), and restarting resumes
from it. Older and partial files are removed after each commit.

The checkpoint stores every model and optimizer variable as is. (Keras'
`save_weights` folds LoRA factors into the base kernel and zeroes them on
load, so a LoRA run restored from it continues on a different trajectory.)
"""

import json
import os

import keras

from keras_encdec.errors import CheckpointError
from keras_encdec.utils import atomic_save

POINTER = "checkpoint.json"
CREATED_MARKER = ".created_by_keras_encdec"


class AtomicBackupAndRestore(keras.callbacks.BackupAndRestore):
    """Resumable training with crash-safe checkpoints (local filesystem).

    Same arguments and restore behaviour as
    `keras.callbacks.BackupAndRestore`: on `fit()` start, the model weights
    and optimizer state of the last committed checkpoint are loaded and
    training continues from the epoch after it. With `save_freq="epoch"` a
    run killed at any point, mid-epoch included, ends with exactly the
    weights and per-epoch losses of an uninterrupted run when the data
    order is the same each run (e.g. `shuffle=False`, or a dataset seeded
    by the epoch). With an integer `save_freq`, Keras restarts the
    interrupted epoch from its first batch on top of mid-epoch weights,
    so those batches are seen twice.

    Args:
        backup_dir: str. Folder for the checkpoints (created if needed).
        save_freq: `"epoch"` or int. Checkpoint at each epoch end, or every
            `save_freq` batches. Defaults to `"epoch"`.
        delete_checkpoint: bool. Delete the checkpoints when training
            ends. Only files this callback wrote are removed, and the folder
            itself only if this callback created it: a user's existing
            folder and their files in it stay. Defaults to `True`.

    Examples:

    >>> import numpy as np, tempfile
    >>> model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    >>> model.compile("sgd", "mse")
    >>> folder = tempfile.mkdtemp()
    >>> backup = AtomicBackupAndRestore(folder, delete_checkpoint=False)
    >>> _ = model.fit(np.ones((4, 2)), np.ones((4, 1)), epochs=2,
    ...               callbacks=[backup], verbose=0)
    >>> json.load(open(os.path.join(folder, "checkpoint.json")))["epoch"]
    2
    """

    def __init__(self, backup_dir, save_freq="epoch", delete_checkpoint=True):
        super().__init__(
            backup_dir,
            save_freq=save_freq,
            double_checkpoint=False,
            delete_checkpoint=delete_checkpoint,
        )
        self._pointer_path = os.path.join(backup_dir, POINTER)

    def read_pointer(self):
        """The committed checkpoint as a dict (`weights`, `epoch`, `batch`,
        `index`), or None when there is none."""
        if not os.path.exists(self._pointer_path):
            return None
        with open(self._pointer_path) as f:
            return json.load(f)

    def on_train_begin(self, logs=None):
        self._load_model()

    def _load_model(self):
        if not self.model.built:
            raise ValueError(
                "To use AtomicBackupAndRestore the model must be built before "
                f"`fit()`. Model {self.model.name} is unbuilt: call it on a "
                "batch first."
            )
        pointer = self.read_pointer()
        if pointer is None:
            return
        if self.model.optimizer is not None and not self.model.optimizer.built:
            self.model.optimizer.build(self.model.trainable_variables)
        read_state(self.model, os.path.join(self.backup_dir, pointer["weights"]))
        self.model._initial_epoch = pointer["epoch"]

    def on_train_end(self, logs=None):
        if not self.delete_checkpoint or not os.path.isdir(self.backup_dir):
            return
        for name in os.listdir(self.backup_dir):
            if _is_ours(name):
                os.remove(os.path.join(self.backup_dir, name))
        marker = os.path.join(self.backup_dir, CREATED_MARKER)
        if os.listdir(self.backup_dir) == [CREATED_MARKER]:
            os.remove(marker)
            os.rmdir(self.backup_dir)

    def _save_model(self):
        if not os.path.isdir(self.backup_dir):
            os.makedirs(self.backup_dir)
            # Marks the folder as ours, so that training end may remove it.
            open(os.path.join(self.backup_dir, CREATED_MARKER), "w").close()
        previous = self.read_pointer()
        index = 0 if previous is None else previous["index"] + 1
        weights = f"ckpt-{index}.weights.h5"
        atomic_save.check_free_space(
            self.backup_dir,
            atomic_save.variables_nbytes(_state_variables(self.model)),
        )
        write_state(self.model, os.path.join(self.backup_dir, weights))
        _fsync_file(os.path.join(self.backup_dir, weights))
        pointer = {
            "weights": weights,
            "epoch": self._current_epoch,
            "batch": self._last_batch_seen,
            "index": index,
        }
        staging = self._pointer_path + ".tmp"
        with open(staging, "w") as f:
            json.dump(pointer, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(staging, self._pointer_path)  # the commit
        _fsync_dir(self.backup_dir)
        for name in os.listdir(self.backup_dir):
            if name.startswith("ckpt-") and name != weights:
                os.remove(os.path.join(self.backup_dir, name))


def _is_ours(name):
    return name in (POINTER, POINTER + ".tmp") or name.startswith("ckpt-")


def _state_variables(model):
    variables = list(model.weights)
    if model.optimizer is not None:
        variables += list(model.optimizer.variables)
    return variables


def write_state(model, path):
    """Writes every model and optimizer variable, in order, to `path`."""
    import h5py

    with h5py.File(path, "w") as f:
        for index, variable in enumerate(_state_variables(model)):
            data = f.create_dataset(
                str(index), data=keras.ops.convert_to_numpy(variable)
            )
            data.attrs["path"] = variable.path


def read_state(model, path):
    """Restores the variables written by `write_state`."""
    import h5py

    variables = _state_variables(model)
    try:
        handle = h5py.File(path, "r")
    except OSError as e:
        raise CheckpointError(
            f"Could not read the backup checkpoint '{path}': {e}."
        ) from e
    with handle as f:
        if len(f) != len(variables):
            raise ValueError(
                f"Checkpoint '{path}' holds {len(f)} variables; the model and "
                f"optimizer have {len(variables)}. Was the model changed?"
            )
        for index, variable in enumerate(variables):
            data = f[str(index)]
            if data.attrs["path"] != variable.path:
                raise ValueError(
                    f"Checkpoint variable {index} is '{data.attrs['path']}'; "
                    f"the model's is '{variable.path}'."
                )
            variable.assign(data[()])


def _fsync_file(path):
    with open(path, "rb") as f:
        os.fsync(f.fileno())


def _fsync_dir(path):
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
