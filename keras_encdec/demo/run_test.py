import keras
import pytest

from keras_encdec.demo.run import DemoSettings
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
