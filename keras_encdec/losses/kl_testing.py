"""Shared checks of the KL impls (not a test module: the KL, Pallas and
Triton tests import it).

KL(teacher || student) vs a float64 numpy reference, on every backend.

Tolerance: float32 inputs match the float64 loss and student gradients to
`rtol=2e-5`, `atol=2e-5 * max(1, max|reference|)`.
"""

import keras
import numpy as np

BACKEND = keras.backend.backend()
N, D, DT, V = 97, 24, 20, 301  # not powers of two; teacher width differs
RTOL = 2e-5


def make_problem(seed=0, n=N, masked=0.25):
    rng = np.random.default_rng(seed)
    h = rng.normal(size=(n, D)).astype("float32")
    e = (rng.normal(size=(V, D)) * 2 / np.sqrt(D)).astype("float32")
    th = rng.normal(size=(n, DT)).astype("float32")
    te = (rng.normal(size=(V, DT)) * 2 / np.sqrt(DT)).astype("float32")
    mask = rng.random(n) >= masked
    return h, e, th, te, mask


def reference(h, e, th, te, mask=None, temperature=1.0, cap=None,
              t_cap=None, reduction="mean", cotangent=None):
    """float64 (value, d_hidden, d_embedding), analytic gradients."""
    def logits(h_, e_, c):
        raw = h_.astype("float64") @ e_.astype("float64").T
        return raw, (c * np.tanh(raw / c) if c else raw) / temperature

    def log_softmax(z):
        m = z.max(-1, keepdims=True)
        return z - m - np.log(np.exp(z - m).sum(-1, keepdims=True))

    raw, s = logits(h, e, cap)
    _, t = logits(th, te, t_cap)
    ls, lt = log_softmax(s), log_softmax(t)
    losses = (np.exp(lt) * (lt - ls)).sum(-1)
    keep = np.ones(len(h)) if mask is None else mask.astype("float64")
    if reduction == "none":
        value = keep * losses
        scale = keep * (1.0 if cotangent is None else cotangent)
    elif reduction == "sum":
        value, scale = (keep * losses).sum(), keep
    else:
        denom = keep.sum() if keep.sum() else 1.0
        value, scale = (keep * losses).sum() / denom, keep / denom
    dz = (np.exp(ls) - np.exp(lt)) * scale[:, None] / temperature
    if cap:
        dz = dz * (1.0 - np.tanh(raw / cap) ** 2)
    return value, dz @ e.astype("float64"), dz.T @ h.astype("float64")


def value_and_grads(loss_fn, h, e, th, te, cotangent=None):
    """(value, d_h, d_e, d_th, d_te) via the backend's autodiff (compiled on
    jax/tf). The teacher gradients are zeros when none flows."""

    def scalar(value):
        if cotangent is None:
            return keras.ops.sum(value)
        return keras.ops.sum(value * keras.ops.convert_to_tensor(cotangent))

    if BACKEND == "jax":
        import jax

        def f(*xs):
            value = loss_fn(*xs)
            return scalar(value), value

        (_, value), grads = jax.jit(
            jax.value_and_grad(f, argnums=(0, 1, 2, 3), has_aux=True)
        )(h, e, th, te)
        return (np.asarray(value),) + tuple(np.asarray(g) for g in grads)
    if BACKEND == "tensorflow":
        import tensorflow as tf

        variables = [tf.Variable(x) for x in (h, e, th, te)]

        @tf.function
        def f():
            with tf.GradientTape() as tape:
                value = loss_fn(*variables)
                total = scalar(value)
            return value, tape.gradient(total, variables)

        value, grads = f()
        grads = [np.zeros(x.shape) if g is None else g.numpy()
                 for g, x in zip(grads, (h, e, th, te))]
        return (value.numpy(),) + tuple(grads)
    xs = [keras.ops.convert_to_tensor(x).detach().requires_grad_(True)
          for x in (h, e, th, te)]
    value = loss_fn(*xs)
    scalar(value).backward()
    grads = [np.zeros(x.shape) if x.grad is None else x.grad.numpy()
             for x in xs]
    return (value.detach().numpy(),) + tuple(grads)


def assert_close(got, want, name=""):
    got = np.asarray(got, dtype="float64")
    atol = RTOL * max(1.0, float(np.abs(want).max()))
    np.testing.assert_allclose(got, want, rtol=RTOL, atol=atol, err_msg=name)
