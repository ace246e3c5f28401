"""`keras_encdec.utils.dispatch`: the shared impl-selection convention."""

import keras
import numpy as np
import pytest

from keras_encdec.utils import dispatch

BACKEND = keras.backend.backend()
REASONS = {"kernel": "needs a GPU", "portable": None}


def _resolve(impl, candidates=("kernel", "portable")):
    return dispatch.resolve(impl, impls=("kernel", "portable"),
                            unavailable_reason=REASONS.get,
                            candidates=candidates, what="test impl")


@pytest.mark.skipif(BACKEND != "jax", reason="backend-independent")
def test_resolve_convention():
    assert _resolve(None) == "portable"
    assert _resolve("portable") == "portable"
    with pytest.raises(ValueError, match="^needs a GPU.$"):
        _resolve("kernel")
    with pytest.raises(ValueError, match="Unknown test impl. Received: "
                                         "impl='fast'"):
        _resolve("fast")
    with pytest.raises(ValueError, match="No test impl can run here "
                                         r"\(kernel: needs a GPU\)"):
        _resolve(None, candidates=("kernel",))


def test_attention_and_loss_share_the_pallas_reason(monkeypatch):
    from keras_encdec.losses.linear_cross_entropy import linear_cross_entropy
    from keras_encdec.ops import dot_product_attention

    monkeypatch.setenv(dispatch.INTERPRET_ENV, "0")
    reason = dispatch.pallas_unavailable_reason()
    if reason is None:
        pytest.skip("Pallas runs here")
    x = np.zeros((1, 4, 2, 8), "float32")
    with pytest.raises(ValueError, match="impl='pallas' needs the JAX"):
        dot_product_attention(x, x, x, scale=1.0, impl="pallas")
    with pytest.raises(ValueError, match="impl='pallas' needs the JAX"):
        linear_cross_entropy(np.zeros((2, 8), "float32"),
                             np.zeros((5, 8), "float32"), np.array([1, 2]),
                             impl="pallas")
    assert f"runs {BACKEND} on {dispatch.device_kind()}" in reason
