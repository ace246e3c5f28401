"""Tests of the dense reference helpers."""

import keras
import numpy as np

from keras_encdec.losses.dense import dense_token_losses
from keras_encdec.losses.dense import soft_cap
from keras_encdec.losses.ce_testing import assert_close
from keras_encdec.losses.ce_testing import make_problem
from keras_encdec.losses.ce_testing import reference


def test_soft_cap_values():
    x = np.array([-1e4, -30.0, 0.0, 1.0, 1e4], "float32")
    got = keras.ops.convert_to_numpy(soft_cap(x, 30.0))
    np.testing.assert_allclose(got, 30.0 * np.tanh(x / 30.0), rtol=1e-6)
    assert soft_cap(x, None) is x


def test_dense_token_losses_match_reference():
    hidden, embedding, labels, _ = make_problem(n=50)
    valid = labels != -100
    got = dense_token_losses(hidden, embedding, np.where(valid, labels, 0),
                             valid, logit_soft_cap=30.0)
    want = reference(hidden, embedding, labels, cap=30.0, reduction="none")
    assert_close(keras.ops.convert_to_numpy(got), want[0])
    assert np.all(keras.ops.convert_to_numpy(got)[~valid] == 0.0)
