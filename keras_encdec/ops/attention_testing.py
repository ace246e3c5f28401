"""Shared helpers for the attention tests (not a test module).

Random inputs, the named mask cases every implementation is checked on,
forward-and-gradient evaluation on the active backend and max-abs errors
against impl `"dense"`.
"""

import keras
import numpy as np
from keras import ops

from keras_encdec.ops.attention import dot_product_attention
from keras_encdec.ops.mask_rule import t5gemma2_encoder_window

BACKEND = keras.backend.backend()
TOLERANCE = 1e-5
# Tiny test programs: XLA CPU optimization costs more than it saves.
FAST_COMPILE = {"xla_backend_optimization_level": 0}

# Each case: shapes and mask options. Lengths are not multiples of the small
# block sizes the tests use (8), windows are shorter than the sequence, and
# "pad" rows include fully masked queries (dense gives them mean(value)).
CASES = {
    "full_gqa": dict(T=37, S=37),
    "causal": dict(T=37, S=37, causal=True),
    "causal_window": dict(T=37, S=37, causal=True, sliding_window=5),
    "two_sided_window": dict(T=37, S=37, sliding_window=4),
    "soft_cap_window": dict(T=37, S=37, sliding_window=3, soft_cap=2.0),
    "pad_causal_window": dict(T=37, S=37, causal=True, sliding_window=6,
                              pad=True),
    "cross_pad": dict(T=19, S=45, pad=True, soft_cap=3.0),
    "decode_window": dict(T=1, S=40, causal=True, sliding_window=7,
                          offset=20),
    "decode_pad": dict(T=1, S=40, causal=True, offset=9, pad=True),
    # Asymmetric (left, right) windows: T5Gemma 2's encoder, odd and even W.
    "t5gemma2_window_odd": dict(T=37, S=37,
                                sliding_window=t5gemma2_encoder_window(9)),
    "t5gemma2_window_even_pad": dict(
        T=70, S=70, sliding_window=t5gemma2_encoder_window(10), pad=True),
    "asym_window_soft_cap": dict(T=37, S=37, sliding_window=(1, 6),
                                 soft_cap=2.0),
    "asym_window_left_only": dict(T=37, S=37, sliding_window=(6, 0),
                                  pad=True),
    # Sequence packing: keys visible only within the query's segment.
    "segments_causal_pad": dict(T=37, S=37, causal=True, pad=True,
                                segments=True),
    "segments_t5gemma2_window": dict(
        T=37, S=37, sliding_window=t5gemma2_encoder_window(8),
        segments=True),
    "segments_cross": dict(T=19, S=45, segments=True, soft_cap=3.0),
    "segments_decode": dict(T=1, S=40, causal=True, sliding_window=9,
                            offset=20, segments=True),
}


def segment_ids(length, batch=2, offset=0, query_length=None):
    """`[batch, length]` packed-segment ids (3 segments per row, different
    boundaries per row); with `query_length`, the ids of the queries at
    `offset .. offset + query_length` instead."""
    ids = np.zeros((batch, length), "int32")
    for row in range(batch):
        for fraction in (0.3 + 0.15 * row, 0.7):
            ids[row, int(length * fraction):] += 1
    if query_length is not None:
        return ids[:, offset:offset + query_length]
    return ids


def make_inputs(T, S, pad=False, batch=2, heads=4, kv_heads=2, head_dim=8,
                seed=0, **_):
    """Random fp32 `(query, key, value, d_out, key_padding_mask)`."""
    rng = np.random.default_rng(seed)
    query = rng.standard_normal((batch, T, heads, head_dim), "float32")
    key = rng.standard_normal((batch, S, kv_heads, head_dim), "float32")
    value = rng.standard_normal((batch, S, kv_heads, head_dim), "float32")
    d_out = rng.standard_normal((batch, T, heads, head_dim), "float32")
    mask = None
    if pad:
        mask = np.ones((batch, S), bool)
        mask[0, :10] = False  # left padding: early queries see no key
        mask[-1, -7:] = False  # right padding
    return query, key, value, d_out, mask


def case_options(case, offset_as_tensor=False):
    """`dot_product_attention` keyword options of a case."""
    options = dict(scale=0.3, soft_cap=case.get("soft_cap"),
                   causal=case.get("causal", False),
                   sliding_window=case.get("sliding_window"),
                   query_offset=case.get("offset", 0))
    if case.get("segments"):
        T, S, offset = case["T"], case["S"], case.get("offset", 0)
        options["key_segment_ids"] = segment_ids(S)
        options["query_segment_ids"] = (
            segment_ids(S, offset=offset, query_length=T) if T != S
            and case.get("causal") else segment_ids(T))
    if offset_as_tensor:
        options["query_offset"] = ops.convert_to_tensor(
            options["query_offset"], "int32")
    return options


def forward_and_grads(fn, *inputs_and_d_out):
    """`(out, d_input_0, d_input_1, ...)` as numpy, on the active backend.

    `fn(*inputs)` is differentiated at `inputs_and_d_out[:-1]` with the
    output cotangent `inputs_and_d_out[-1]`.
    """
    inputs, d_out = inputs_and_d_out[:-1], inputs_and_d_out[-1]
    if BACKEND == "jax":
        import jax

        def vjp(do, *xs):
            out, pullback = jax.vjp(fn, *xs)
            return (out,) + pullback(do)

        results = jax.jit(vjp, compiler_options=FAST_COMPILE)(d_out, *inputs)
    elif BACKEND == "torch":
        import torch

        tensors = [torch.tensor(x, requires_grad=True) for x in inputs]
        out = fn(*tensors)
        out.backward(torch.tensor(d_out))
        results = (out.detach(),) + tuple(t.grad for t in tensors)
    else:
        import tensorflow as tf

        tensors = [tf.constant(x) for x in inputs]
        with tf.GradientTape() as tape:
            tape.watch(tensors)
            out = fn(*tensors)
        results = (out,) + tuple(tape.gradient(
            out, tensors, output_gradients=tf.constant(d_out)))
    return [ops.convert_to_numpy(x) for x in results]


def impl_factory(impl):
    """A `max_errors` factory: public `dot_product_attention(impl=impl)`."""

    def factory(options, mask):
        return lambda q, k, v: dot_product_attention(
            q, k, v, key_padding_mask=mask, impl=impl, **options)

    return factory


_DENSE_CACHE = {}


def max_errors(case, fn_factory):
    """Max-abs error of `fn_factory(options, mask)` vs "dense", per output.

    Returns a dict `{"out"|"dq"|"dk"|"dv": error}`.
    """
    query, key, value, d_out, mask = make_inputs(**case)
    options = case_options(case)
    cache_key = repr(sorted(case.items()))
    if cache_key not in _DENSE_CACHE:

        def dense(q, k, v):
            return dot_product_attention(q, k, v, key_padding_mask=mask,
                                         impl="dense", **options)

        _DENSE_CACHE[cache_key] = forward_and_grads(dense, query, key, value,
                                                    d_out)
    reference = _DENSE_CACHE[cache_key]
    got = forward_and_grads(fn_factory(options, mask), query, key, value,
                            d_out)
    names = ("out", "dq", "dk", "dv")
    return {name: float(np.max(np.abs(a - b)))
            for name, a, b in zip(names, reference, got)}
