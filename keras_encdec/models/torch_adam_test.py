import keras
import numpy as np
import pytest

from keras_encdec.models import torch_adam

pytestmark = pytest.mark.skipif(
    keras.backend.backend() != "torch", reason="Keras' torch Adam only"
)

# Sizes 5, 24 and 31: with CHUNK=7, one short slice, whole slices plus a
# remainder, and several slices.
SHAPES = [(5,), (4, 6), (31,)]


def _adam_pair(**kwargs):
    """Two equal variable sets with their own Adam; the second fast."""
    rng = np.random.default_rng(0)
    values = [rng.normal(size=s).astype("float32") for s in SHAPES]
    pairs = []
    for fast in (False, True):
        variables = [keras.Variable(v) for v in values]
        optimizer = keras.optimizers.Adam(1e-2, **kwargs)
        optimizer.build(variables)
        if fast:
            assert torch_adam.use_fast_adam_update(optimizer)
        pairs.append((optimizer, variables))
    return pairs


def _three_steps(adam_pair):
    """Three equal updates on both sides; `[(slow, fast)]` numpy values of
    every variable and optimizer slot (the iteration counter included)."""
    import torch

    (slow, slow_vars), (fast, fast_vars) = adam_pair
    rng = np.random.default_rng(1)
    for _ in range(3):
        grads = [rng.normal(size=s).astype("float32") for s in SHAPES]
        slow.apply([torch.tensor(g) for g in grads], slow_vars)
        fast.apply([torch.tensor(g) for g in grads], fast_vars)
    assert int(fast.iterations.numpy()) == 3
    return [
        (keras.ops.convert_to_numpy(a), keras.ops.convert_to_numpy(b))
        for a, b in zip(slow_vars + slow.variables, fast_vars + fast.variables)
    ]


@pytest.mark.parametrize("amsgrad", [False, True])
def test_chunked_update_is_keras_adam_bit_for_bit(monkeypatch, amsgrad):
    monkeypatch.setattr(torch_adam, "CHUNK", 7)  # several slices + remainder
    monkeypatch.setattr(torch_adam, "FUSED", False)
    pairs = _three_steps(_adam_pair(amsgrad=amsgrad))
    for slow_value, fast_value in pairs:
        np.testing.assert_array_equal(fast_value, slow_value)


@pytest.mark.parametrize("epsilon", [1e-7, 0.3])
def test_fused_update_matches_keras_adam(monkeypatch, epsilon):
    """torch's fused kernel with the rescaled epsilon gives Keras' update
    (epsilon added to sqrt(v), not to the bias-corrected root): equal up
    to float rounding. A large epsilon makes the placement matter."""
    import torch

    calls = []
    fused = torch._fused_adam_
    monkeypatch.setattr(torch, "_fused_adam_",
                        lambda *a, **k: calls.append(1) or fused(*a, **k))
    pairs = _three_steps(_adam_pair(epsilon=epsilon))
    assert calls
    for slow_value, fast_value in pairs:
        np.testing.assert_allclose(fast_value, slow_value, rtol=2e-6,
                                   atol=1e-7)
    # The first variable moved: the comparison is not vacuous.
    moved, start = pairs[0][1], np.random.default_rng(0).normal(
        size=SHAPES[0]).astype("float32")
    assert np.abs(moved - start).max() > 1e-3


def test_strided_gradient_and_variable_match_keras_adam():
    import torch

    (slow, slow_vars), (fast, fast_vars) = _adam_pair()
    grad = torch.arange(24, dtype=torch.float32).reshape(6, 4).T  # strided
    for optimizer, variables in ((slow, slow_vars), (fast, fast_vars)):
        optimizer.apply([grad], [variables[1]])
        # A strided variable takes the whole-tensor path.
        value = variables[1].value.detach()
        variables[1]._value = torch.nn.Parameter(value.T.contiguous().T)
        assert not variables[1].value.is_contiguous()
        optimizer.apply([grad], [variables[1]])
    np.testing.assert_array_equal(
        keras.ops.convert_to_numpy(slow_vars[1]),
        keras.ops.convert_to_numpy(fast_vars[1]),
    )


def test_only_keras_adam_steps_are_replaced():
    class OwnStep(keras.optimizers.Adam):
        def _parallel_update_step(self, grads, variables, learning_rate):
            raise AssertionError("not called here")

    assert not torch_adam.use_fast_adam_update(None)
    assert not torch_adam.use_fast_adam_update(keras.optimizers.SGD())
    assert not torch_adam.use_fast_adam_update(OwnStep())
    scaled = keras.optimizers.LossScaleOptimizer(keras.optimizers.Adam())
    assert torch_adam.use_fast_adam_update(scaled)
    assert "_parallel_update_step" in vars(scaled.inner_optimizer)


def test_seq2seq_compile_uses_fast_adam():
    from keras_encdec.testing import tiny_seq2seq_lm

    lm = tiny_seq2seq_lm()
    lm.compile(optimizer=keras.optimizers.Adam(1e-3))
    assert "_parallel_update_step" in vars(lm.optimizer)
