"""`first_max_index` is `argmax`, and `FirstMaxGreedySampler` decodes the
tokens keras-hub's `GreedySampler` decodes."""

import numpy as np
import pytest
from keras import ops
from keras_hub.samplers import GreedySampler
from keras_hub.samplers import TopKSampler

from keras_encdec.models.greedy_sampler import FirstMaxGreedySampler
from keras_encdec.models.greedy_sampler import first_max_index
from keras_encdec.models.greedy_sampler import for_compiled_loop
from keras_encdec.testing import compiled


def _rows():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(10, 50)).astype("float32")
    x[1, [3, 17, 40]] = 9.0  # a tie: the first index wins
    x[2] = 0.5  # all equal
    x[3, 5] = np.inf
    x[4] = -np.inf
    x[5, [7, 30]] = np.nan  # the first NaN, as argmax
    x[6, 49] = 11.0  # the last position
    x[7, [2, 9]] = [np.nan, np.inf]
    x[8] = np.nan  # a softmax of NaN logits
    x[9, [0, 4]] = [50.0, np.nan]  # the largest number before the NaN
    return x


def test_first_max_index_is_argmax():
    x = _rows()
    got = ops.convert_to_numpy(first_max_index(x))
    assert got.dtype == np.int32
    # numpy's semantics: the first maximum, or the first NaN.
    np.testing.assert_array_equal(got, [np.argmax(r) for r in x])
    # The backend's argmax agrees, except that TensorFlow's skips NaNs in
    # rows that mix them with numbers (softmax rows never do: one NaN
    # logit makes every probability NaN, row 8).
    mixed = np.isnan(x).any(-1) & ~np.isnan(x).all(-1)
    want = ops.convert_to_numpy(ops.argmax(x, axis=-1))
    np.testing.assert_array_equal(got[~mixed], want[~mixed])
    assert mixed.sum() == 3


def test_first_max_index_compiled_in_a_loop():
    # Rows a softmax can produce: no NaN, or all NaN. (Compiled by XLA,
    # TensorFlow's max skips NaNs, so rows mixing NaNs and numbers follow
    # the backend there; see `first_max_index`.)
    x = _rows()
    x = x[~(np.isnan(x).any(-1) & ~np.isnan(x).all(-1))]
    assert len(x) == 7

    def loop(x):
        def body(i, total):
            return total + first_max_index(x)

        return ops.fori_loop(0, 3, body, ops.zeros((x.shape[0],), "int32"))

    total = compiled(loop)(ops.convert_to_tensor(x))
    np.testing.assert_array_equal(ops.convert_to_numpy(total),
                                  [3 * np.argmax(r) for r in x])


@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_sampler_decodes_greedy_sampler_tokens(temperature):
    rng = np.random.default_rng(1)
    batch, length, vocab = 3, 9, 40
    # Logits per (position, previous token), so each token feeds the next.
    table = rng.normal(size=(length, vocab, vocab)).astype("float32")
    table[4, :, [5, 6]] = 20.0  # tied maxima at one position

    def next(prompt, cache, index):
        column = ops.reshape(index - 1, (1, 1)) + ops.zeros_like(prompt[:, :1])
        previous = ops.take_along_axis(prompt, column, axis=1)[:, 0]
        logits = ops.take(ops.convert_to_tensor(table)[index], previous,
                          axis=0)
        return logits, None, cache

    prompt = np.zeros((batch, length), "int32")
    prompt[:, 0] = [1, 2, 3]
    mask = np.zeros((batch, length), bool)
    mask[:, 0] = True
    mask[1, 1] = True  # a longer prompt row keeps its token
    prompt[1, 1] = 7
    outputs = []
    for sampler in (GreedySampler(temperature=temperature),
                    FirstMaxGreedySampler(temperature=temperature)):
        run = compiled(lambda prompt, sampler=sampler: sampler(
            next=next, prompt=prompt, index=1, mask=mask))
        out = run(ops.convert_to_tensor(prompt))
        outputs.append(ops.convert_to_numpy(out))
    np.testing.assert_array_equal(outputs[1], outputs[0])
    assert (outputs[0][:, 4] == 5).all()  # the first of the tie
    assert outputs[0][1, 1] == 7


def test_for_compiled_loop_swaps_only_plain_greedy():
    swapped = for_compiled_loop(GreedySampler(temperature=0.5))
    assert type(swapped) is FirstMaxGreedySampler
    assert swapped.temperature == 0.5
    top_k = TopKSampler(k=3)
    assert for_compiled_loop(top_k) is top_k

    class MyGreedy(GreedySampler):
        pass

    mine = MyGreedy()
    assert for_compiled_loop(mine) is mine
