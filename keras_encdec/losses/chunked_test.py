"""Tests specific to the portable chunked ("xla") path."""

import keras
import numpy as np
import pytest

from keras_encdec.losses import linear_cross_entropy
from keras_encdec.losses.chunked import resolve_vocab_chunk
from keras_encdec.losses.ce_testing import D
from keras_encdec.losses.ce_testing import N
from keras_encdec.losses.ce_testing import V
from keras_encdec.losses.ce_testing import assert_close
from keras_encdec.losses.ce_testing import make_problem
from keras_encdec.losses.ce_testing import reference
from keras_encdec.losses.ce_testing import value_and_grads

BACKEND = keras.backend.backend()


def test_resolve_vocab_chunk():
    assert resolve_vocab_chunk(256000) == 512  # divides: no overlap
    assert resolve_vocab_chunk(1000) == 500  # a divisor in [256, 512]
    assert resolve_vocab_chunk(1001) == 512  # none: overlapping tail
    assert resolve_vocab_chunk(1001, 128) == 128  # explicit is kept
    assert resolve_vocab_chunk(300) == 300  # whole vocabulary
    assert resolve_vocab_chunk(10, 64) == 10


@pytest.mark.parametrize("chunk_size", [1, 7, 91, 500, 1000, 1001, 4096])
def test_chunk_sizes_including_overlapping_tail(chunk_size):
    hidden, embedding, labels, _ = make_problem(n=37)
    got = value_and_grads(hidden, embedding, labels, impl="xla",
                          chunk_size=chunk_size, logit_soft_cap=30.0)
    want = reference(hidden, embedding, labels, cap=30.0)
    for g, w in zip(got, want):
        assert_close(g, w)


def test_filter_eps_zero_is_exact_and_large_eps_filters():
    hidden, embedding, labels, _ = make_problem(n=64)
    exact = value_and_grads(hidden, embedding, labels, impl="xla",
                            chunk_size=100)
    zero = value_and_grads(hidden, embedding, labels, impl="xla",
                           chunk_size=100, filter_eps=0.0)
    for a, b in zip(exact, zero):
        np.testing.assert_array_equal(a, b)
    # Softmax entries of a 1001-way problem are ~1e-3: eps=0.5 keeps only
    # the -1 one-hot terms, so the loss is unchanged but dE = -sum C[y].
    filtered = value_and_grads(hidden, embedding, labels, impl="xla",
                               chunk_size=100, filter_eps=0.5)
    assert float(filtered[0]) == pytest.approx(float(exact[0]), rel=1e-6)
    assert not np.allclose(filtered[1], exact[1], atol=1e-4)


@pytest.mark.skipif(BACKEND != "jax", reason="inspects a jaxpr (jax only)")
def test_no_tokens_by_vocab_intermediate_in_jaxpr():
    import jax

    hidden, embedding, labels, _ = make_problem()

    def largest_intermediate(impl):
        def f(h, e):
            return linear_cross_entropy(h, e, labels, impl=impl,
                                        chunk_size=128, logit_soft_cap=30.0)

        jaxpr = jax.make_jaxpr(jax.value_and_grad(f, argnums=(0, 1)))(
            hidden, embedding
        )
        sizes = []

        def walk(jaxpr):
            for eqn in jaxpr.eqns:
                sizes.extend(int(np.prod(v.aval.shape)) for v in eqn.outvars)
                for sub in jax.core.jaxprs_in_params(eqn.params):
                    walk(sub)

        walk(jaxpr.jaxpr)
        return max(sizes)

    assert largest_intermediate("dense") >= N * V  # the check can fail
    # Largest allowed: one logits chunk [N, 128] or the dC blocks
    # [ceil(V / 128), 128, D] (the overlapping tail adds 23 zero rows).
    largest = largest_intermediate("xla")
    assert largest <= max(N * 128, -(-V // 128) * 128 * D) < N * V


@pytest.mark.skipif(BACKEND != "tensorflow", reason="tf.function + XLA")
def test_tf_function_dynamic_batch_and_jit_compile():
    import tensorflow as tf

    hidden, embedding, labels, _ = make_problem()
    want = reference(hidden, embedding, labels, cap=30.0)
    e_var = tf.Variable(embedding)
    for jit_compile in (False, True):

        @tf.function(
            jit_compile=jit_compile,
            input_signature=[tf.TensorSpec([None, D]), tf.TensorSpec([None],
                                                                     tf.int32)],
        )
        def step(h, y):
            with tf.GradientTape() as tape:
                tape.watch(h)
                loss = linear_cross_entropy(h, e_var, y, impl="xla",
                                            chunk_size=300,
                                            logit_soft_cap=30.0)
            return loss, tape.gradient(loss, [h, e_var])

        loss, (dh, de) = step(hidden, labels)
        for g, w in zip((loss, dh, de), want):
            assert_close(g.numpy(), w)
