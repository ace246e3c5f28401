"""Shared checks of the cross-entropy impls (not a test module: the CE, dense,
chunked, Pallas and Triton tests import it).

Tests of the public API against a float64 numpy reference.

Tolerances (stated once): float32 inputs must match the float64 reference
to `rtol=2e-5` and `atol=2e-5 * max|reference|` for the loss and both
gradients. bf16 inputs follow the CCE rule: the error of an impl vs float64
must not exceed the dense bf16 error plus `2**-8 * max|reference|`.
"""

import keras
import numpy as np

from keras_encdec.losses import linear_cross_entropy
BACKEND = keras.backend.backend()
N, D, V = 257, 63, 1001  # deliberately not powers of two
RTOL = 2e-5


def make_problem(seed=0, n=N, d=D, v=V, ignored=0.2, hidden_scale=1.0):
    rng = np.random.default_rng(seed)
    hidden = rng.normal(size=(n, d)).astype("float32") * hidden_scale
    embedding = (rng.normal(size=(v, d)) / np.sqrt(d)).astype("float32")
    labels = rng.integers(0, v, size=(n,)).astype("int32")
    labels[rng.random(n) < ignored] = -100
    weights = rng.uniform(0.5, 2.0, size=(n,)).astype("float32")
    return hidden, embedding, labels, weights


def reference(hidden, embedding, labels, weights=None, cap=None,
              reduction="mean", cotangent=None, ignore_index=-100):
    """float64 loss, d_hidden, d_embedding (analytic gradients)."""
    h = hidden.astype("float64")
    e = embedding.astype("float64")
    raw = h @ e.T
    z = cap * np.tanh(raw / cap) if cap else raw
    m = z.max(-1, keepdims=True)
    lse = (m + np.log(np.exp(z - m).sum(-1, keepdims=True)))[:, 0]
    valid = labels != ignore_index
    safe = np.where(valid, labels, 0)
    losses = np.where(valid, lse - z[np.arange(len(z)), safe], 0.0)
    w = valid * (1.0 if weights is None else weights.astype("float64"))
    if reduction == "none":
        value = w * losses
        scale = w * (1.0 if cotangent is None else cotangent)
    elif reduction == "sum":
        value, scale = (w * losses).sum(), w
    else:
        denom = w.sum() if w.sum() != 0 else 1.0
        value, scale = (w * losses).sum() / denom, w / denom
    onehot = (np.arange(e.shape[0])[None] == safe[:, None]) & valid[:, None]
    dz = (np.exp(z - lse[:, None]) - onehot) * scale[:, None]
    if cap:
        dz = dz * (1.0 - np.tanh(raw / cap) ** 2)
    return value, dz @ e, dz.T @ h


def value_and_grads(hidden, embedding, labels, cotangent=None, **kwargs):
    """Runs the loss with the backend's own autodiff (compiled on jax/tf).

    Returns numpy (value, d_hidden, d_embedding). For reduction "none" the
    scalar differentiated is `sum(cotangent * value)`.
    """

    def scalar(value):
        if cotangent is None:
            return keras.ops.sum(value)
        return keras.ops.sum(value * keras.ops.convert_to_tensor(cotangent))

    if BACKEND == "jax":
        import jax

        def f(h, e):
            value = linear_cross_entropy(h, e, labels, **kwargs)
            return scalar(value), value

        (_, value), grads = jax.jit(
            jax.value_and_grad(f, argnums=(0, 1), has_aux=True)
        )(hidden, embedding)
        return np.asarray(value), np.asarray(grads[0]), np.asarray(grads[1])
    if BACKEND == "tensorflow":
        import tensorflow as tf

        h_var, e_var = tf.Variable(hidden), tf.Variable(embedding)

        @tf.function
        def f():
            with tf.GradientTape() as tape:
                value = linear_cross_entropy(h_var, e_var, labels, **kwargs)
                total = scalar(value)
            return value, tape.gradient(total, [h_var, e_var])

        value, (dh, de) = f()
        return value.numpy(), dh.numpy(), de.numpy()
    import torch

    h = keras.ops.convert_to_tensor(hidden).detach().requires_grad_(True)
    e = keras.ops.convert_to_tensor(embedding).detach().requires_grad_(True)
    value = linear_cross_entropy(h, e, torch.as_tensor(labels), **kwargs)
    scalar(value).backward()
    grads = h.grad.float().numpy(), e.grad.float().numpy()
    return (value.detach().numpy(),) + grads


def assert_close(got, want, rtol=RTOL, name=""):
    got = np.asarray(got, dtype="float64")
    atol = rtol * max(1.0, float(np.abs(want).max()))
    np.testing.assert_allclose(got, want, rtol=rtol, atol=atol, err_msg=name)


def check_against_reference(impl, cap=None, reduction="mean", weighted=False,
                            chunk_size=None, ignored=0.2, hidden_scale=1.0,
                            rtol=RTOL):
    hidden, embedding, labels, weights = make_problem(
        ignored=ignored, hidden_scale=hidden_scale
    )
    weights = weights if weighted else None
    cotangent = None
    if reduction == "none":
        cotangent = np.random.default_rng(1).normal(size=(N,))
        cotangent = cotangent.astype("float32")
    value, dh, de = value_and_grads(
        hidden, embedding, labels, cotangent=cotangent, impl=impl,
        logit_soft_cap=cap, reduction=reduction, chunk_size=chunk_size,
        sample_weight=weights,
    )
    want = reference(hidden, embedding, labels, weights, cap, reduction,
                     cotangent)
    for got, ref, name in zip((value, dh, de), want, ("loss", "dh", "de")):
        assert np.all(np.isfinite(got)), name
        assert_close(got, ref, rtol, name)
    return value, dh, de


def bf16_errors(impl, chunk_size=256):
    hidden, embedding, labels, _ = make_problem(seed=3)
    hidden = keras.ops.cast(hidden, "bfloat16")
    embedding = keras.ops.cast(embedding, "bfloat16")
    h64 = keras.ops.convert_to_numpy(keras.ops.cast(hidden, "float32"))
    e64 = keras.ops.convert_to_numpy(keras.ops.cast(embedding, "float32"))
    want = reference(h64, e64, labels, cap=30.0)
    got = value_and_grads(hidden, embedding, labels, impl=impl,
                          logit_soft_cap=30.0, chunk_size=chunk_size)
    assert keras.backend.standardize_dtype(got[0].dtype) == "float32"
    return [
        float(np.abs(np.asarray(g, "float64") - w).max()) for g, w in
        zip(got, want)
    ], want


class TinyLM(keras.Model):
    """Hidden states from a Dense layer; loss from a tied embedding."""

    def __init__(self, vocab=50, dim=16):
        super().__init__()
        self.embedding = keras.layers.Embedding(vocab, dim)
        self.embedding.build((None,))
        self.proj = keras.layers.Dense(dim)

    def call(self, x):
        return self.proj(x)

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None,
                     training=True):
        return linear_cross_entropy(
            y_pred, self.embedding.embeddings, y, sample_weight=sample_weight,
            logit_soft_cap=30.0, impl="xla", chunk_size=16,
        )


def check_vocabulary_groups(impl, kernel_module, monkeypatch):
    """A kernel's dC in groups of 256 vocabulary rows (V=1001: four groups,
    the last partial) matches the float64 reference, and equals one group
    exactly."""
    hidden, embedding, labels, _ = make_problem(n=64)
    whole = value_and_grads(hidden, embedding, labels, impl=impl)
    monkeypatch.setattr(kernel_module, "GROUP_ROWS", 256)
    check_against_reference(impl, cap=30.0, chunk_size=128)
    grouped = value_and_grads(hidden, embedding, labels, impl=impl)
    for a, b in zip(whole, grouped):
        np.testing.assert_array_equal(a, b)


def check_filter_matches_xla(impl):
    """A kernel's gradient filtering equals impl="xla"'s: eps=0.5 drops
    every softmax entry, so both keep only the one-hot terms."""
    hidden, embedding, labels, _ = make_problem(n=64)
    xla = value_and_grads(hidden, embedding, labels, impl="xla",
                          filter_eps=0.5)
    kernel = value_and_grads(hidden, embedding, labels, impl=impl,
                             filter_eps=0.5)
    for a, b in zip(xla, kernel):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)
