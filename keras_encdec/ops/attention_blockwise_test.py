"""`impl="xla"` (blockwise keras.ops attention) against `"dense"`."""

import numpy as np
import pytest

from keras_encdec.ops.attention import dot_product_attention
from keras_encdec.ops.attention_blockwise import blockwise_attention
from keras_encdec.ops.attention_blockwise import blockwise_cost_fraction
from keras_encdec.ops.attention_testing import BACKEND
from keras_encdec.ops.attention_testing import CASES
from keras_encdec.ops.attention_testing import TOLERANCE
from keras_encdec.ops.attention_testing import case_options
from keras_encdec.ops.attention_testing import forward_and_grads
from keras_encdec.ops.attention_testing import make_inputs
from keras_encdec.ops.attention_testing import max_errors

BLOCK = 8  # Every case length is a non-multiple of it.


def _blockwise(options, mask):
    return lambda q, k, v: blockwise_attention(
        q, k, v, key_padding_mask=mask, block_q=BLOCK, block_k=BLOCK,
        **options)


@pytest.mark.parametrize("name", sorted(CASES))
def test_matches_dense_forward_and_gradients(name):
    errors = max_errors(CASES[name], _blockwise)
    assert max(errors.values()) < TOLERANCE, errors


def test_decode_step_with_tensor_offset_matches_dense():
    case = CASES["decode_window"]
    query, key, value, d_out, mask = make_inputs(**case)
    options = case_options(case, offset_as_tensor=True)
    dense = forward_and_grads(
        lambda q, k, v: dot_product_attention(q, k, v, impl="dense",
                                              **options),
        query, key, value, d_out)
    got = forward_and_grads(
        lambda q, k, v: blockwise_attention(q, k, v, block_q=BLOCK,
                                            block_k=BLOCK, **options),
        query, key, value, d_out)
    for a, b in zip(dense, got):
        np.testing.assert_allclose(a, b, atol=TOLERANCE, rtol=0)


def test_window_skips_key_blocks():
    # Cost grows with the window, not with the sequence.
    assert blockwise_cost_fraction(4096, 4096, True, None) == 1.0
    assert blockwise_cost_fraction(4096, 4096, True, 512, 128, 128) < 0.2
    assert blockwise_cost_fraction(8192, 8192, True, 512, 128, 128) < 0.1
    # T5Gemma 2's asymmetric encoder window (255, 256) skips blocks too.
    assert blockwise_cost_fraction(8192, 8192, False, (255, 256), 128,
                                   128) < 0.1


def _largest_intermediate_per_head(jaxpr, num_heads):
    """Largest `size / (batch * heads)` over every value a jaxpr defines."""
    from jax.extend import core

    largest = 0
    for eqn in jaxpr.eqns:
        for var in eqn.outvars:
            shape = getattr(var.aval, "shape", ())
            largest = max(largest, int(np.prod(shape)) // num_heads)
        for param in eqn.params.values():
            params = param if isinstance(param, (tuple, list)) else [param]
            for sub in params:
                if isinstance(sub, core.ClosedJaxpr):
                    sub = sub.jaxpr
                if isinstance(sub, core.Jaxpr):
                    largest = max(largest, _largest_intermediate_per_head(
                        sub, num_heads))
    return largest


@pytest.mark.skipif(BACKEND != "jax", reason="inspects a jaxpr")
def test_value_and_grad_never_holds_the_score_matrix():
    import jax
    import jax.numpy as jnp

    length, heads = 256, 4
    query, key, value, _, mask = make_inputs(length, length, pad=True,
                                             batch=1, heads=heads)

    def loss(impl):
        def fn(q, k, v):
            out = dot_product_attention(
                q, k, v, scale=0.3, soft_cap=50.0, causal=True,
                key_padding_mask=mask, impl=impl) if impl == "dense" else (
                blockwise_attention(q, k, v, scale=0.3, soft_cap=50.0,
                                    causal=True, key_padding_mask=mask,
                                    block_q=64, block_k=64))
            return jnp.sum(out * out)
        return jax.value_and_grad(fn, argnums=(0, 1, 2))

    per_head_scores = length * length
    blockwise = jax.make_jaxpr(loss("xla"))(query, key, value).jaxpr
    assert _largest_intermediate_per_head(blockwise, heads) < per_head_scores
    # The check can fail: dense attention holds [T, S] per head.
    dense = jax.make_jaxpr(loss("dense"))(query, key, value).jaxpr
    assert _largest_intermediate_per_head(dense, heads) >= per_head_scores
