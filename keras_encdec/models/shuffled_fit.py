"""`fit()` that honours `shuffle=True` for in-memory text and arrays.

keras-hub's task `fit()` turns in-memory inputs (lists of strings, numpy
arrays) into a batched dataset before Keras sees them. Keras then receives a
dataset and ignores `shuffle=True` with a warning ("`shuffle=True` was
passed, but will be ignored since the data `x` was provided as a
tf.data.Dataset"), so in-memory training data was never shuffled.

`ShuffledFitMixin.fit` shuffles such inputs itself: the rows are sliced into
a `tf.data` pipeline that reshuffles every epoch before batching, and Keras
is told `shuffle=False` (there is nothing left for it to do). Datasets and
generators pass through unchanged: their order is the caller's, and Keras
cannot shuffle them either (as the Keras docs say for datasets), so Keras's
per-call warning about that is not raised.
"""

import keras
import numpy as np

DATASET_TYPES = ("DatasetV2", "MapDataset", "IterDataset", "PyDataset")


def is_in_memory(x):
    """Whether `x` holds rows that `fit` slices (not a dataset/generator).

    Examples:

    >>> is_in_memory(["a", "b"]), is_in_memory(np.zeros((2, 3)))
    (True, True)
    >>> is_in_memory(iter([1]))
    False
    """
    if x is None:
        return False
    if type(x).__name__ in DATASET_TYPES or hasattr(x, "__next__"):
        return False
    leaves = keras.tree.flatten(x)
    return bool(leaves) and all(
        isinstance(leaf, (list, tuple, str, bytes)) or hasattr(leaf, "shape")
        for leaf in leaves
    )


def shuffled_dataset(x, y, sample_weight, batch_size, seed=None):
    """Slices in-memory rows into a `tf.data` pipeline reshuffled per epoch.

    Args:
        x, y, sample_weight: in-memory inputs, as `fit` takes them.
        batch_size: int or None. Defaults to 32, as in Keras.
        seed: int or None. Shuffle seed; None draws one per call.

    Returns:
        A batched `tf.data.Dataset` of `(x, y, sample_weight)` tuples.

    Examples:

    >>> ds = shuffled_dataset(np.arange(6), None, None, 6, seed=0)
    >>> sorted(next(iter(ds)).numpy().tolist())
    [0, 1, 2, 3, 4, 5]
    """
    import tensorflow as tf

    rows = keras.utils.pack_x_y_sample_weight(x, y, sample_weight)
    rows = keras.tree.map_structure(
        lambda leaf: np.asarray(leaf) if isinstance(leaf, (list, tuple))
        else keras.ops.convert_to_numpy(leaf) if hasattr(leaf, "shape")
        else leaf,
        rows,
    )
    count = len(keras.tree.flatten(rows)[0])
    dataset = tf.data.Dataset.from_tensor_slices(rows)
    dataset = dataset.shuffle(count, seed=seed, reshuffle_each_iteration=True)
    return dataset.batch(batch_size or 32)


class ShuffledFitMixin:
    """Makes a keras-hub task's `fit(shuffle=True)` shuffle in-memory data.

    Put it before the keras-hub task class in the bases. See the module
    docstring for why keras-hub alone does not shuffle.
    """

    def fit(self, x=None, y=None, batch_size=None, sample_weight=None,
            shuffle=True, **kwargs):
        """`keras.Model.fit`; in-memory `x` is reshuffled every epoch.

        Args:
            x, y, batch_size, sample_weight: as in `keras.Model.fit`.
            shuffle: bool. For in-memory inputs (lists of strings, arrays
                or dicts of them), reshuffle the rows every epoch before
                batching. Datasets and generators keep their order.
                Defaults to `True`.
            **kwargs: passed to `keras.Model.fit`.
        """
        if shuffle and is_in_memory(x):
            if kwargs.get("validation_split"):
                raise ValueError(
                    "`validation_split` takes the last rows as validation "
                    "data, which shuffling first would mix into training. "
                    "Received: validation_split="
                    f"{kwargs['validation_split']!r} with shuffle=True. Pass "
                    "`validation_data=` instead, or shuffle=False."
                )
            x = shuffled_dataset(x, y, sample_weight, batch_size)
            y = sample_weight = batch_size = None
        # Whatever reaches Keras is a dataset by now (ours, the caller's, or
        # keras-hub's conversion), which Keras cannot shuffle: say so once,
        # here, instead of its per-call warning.
        return super().fit(
            x=x, y=y, batch_size=batch_size, sample_weight=sample_weight,
            shuffle=False, **kwargs,
        )
