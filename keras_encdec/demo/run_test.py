import argparse

import keras
import numpy as np
import pytest

from keras_encdec.demo.cli import parse_bool
from keras_encdec.demo.run import DemoSettings
from keras_encdec.demo.run import learning_rate_schedule
from keras_encdec.demo.run import prepare_data

pytestmark = pytest.mark.skipif(
    keras.backend.backend() != "jax", reason="pure Python: one backend"
)


def test_prepare_data_held_out_set_is_fixed_and_disjoint():
    train, evaluation = prepare_data(DemoSettings.fast(steps=2))
    more_train, same_evaluation = prepare_data(DemoSettings.fast(steps=5))
    assert same_evaluation == evaluation  # --steps never moves the test set
    assert len(train) == 2 * 2 and len(more_train) == 5 * 2
    assert len(evaluation) == DemoSettings.fast().num_eval
    assert not ({p["module"] for p in more_train}
                & {p["module"] for p in evaluation})
    with pytest.raises(ValueError, match="the settings need 20000"):
        prepare_data(DemoSettings.fast(steps=10000))


def test_learning_rate_schedule_warms_up_then_decays_to_near_zero():
    schedule = learning_rate_schedule(
        DemoSettings(steps=8, warmup_steps=3, learning_rate=1e-3))
    rates = [float(schedule(step)) for step in range(8)]
    np.testing.assert_allclose(rates[:4], [2.5e-4, 5e-4, 7.5e-4, 1e-3],
                               rtol=1e-5)
    assert all(a > b for a, b in zip(rates[3:], rates[4:]))
    last = 1e-3 * 0.5 * (1 + np.cos(np.pi * 4 / 5))
    np.testing.assert_allclose(rates[-1], last, rtol=1e-5)
    with pytest.raises(ValueError, match=r"must be in \[0, steps=3\)"):
        learning_rate_schedule(DemoSettings(steps=3, warmup_steps=3))


def test_bool_flags_parse_false():
    assert parse_bool("False") is False and parse_bool("yes") is True
    with pytest.raises(argparse.ArgumentTypeError, match="received 'maybe'"):
        parse_bool("maybe")
