"""`merged_dot_product_attention`: dense vs a numpy reference, impls vs dense.

The numpy reference does what transformers' T5Gemma 2 decoder does:
concatenate keys, values and masks, add a large negative number where
masked, one softmax.
"""

import numpy as np
import pytest

from keras_encdec.ops.attention import dot_product_attention
from keras_encdec.ops.attention_parts import attend_parts
from keras_encdec.ops.attention_testing import BACKEND
from keras_encdec.ops.attention_testing import TOLERANCE
from keras_encdec.ops.attention_testing import forward_and_grads
from keras_encdec.ops.attention_testing import segment_ids
from keras_encdec.ops.merged_attention import merged_dot_product_attention
from keras_encdec.ops.merged_attention import merged_rules

MERGED_CASES = {
    "causal_pad_both": dict(T=21, S=21, S2=13, pad=True, cross_pad=True),
    "window_soft_cap": dict(T=37, S=37, S2=11, sliding_window=5,
                            soft_cap=2.0, cross_pad=True),
    "encoder_fully_padded": dict(T=9, S=9, S2=6, cross_pad="all"),
    "decode_step": dict(T=1, S=24, S2=10, offset=13, sliding_window=4,
                        pad=True, cross_pad=True),
    "packed_segments": dict(T=21, S=21, S2=17, sliding_window=6, pad=True,
                            cross_pad=True, segments=True),
    "packed_decode_step": dict(T=1, S=24, S2=10, offset=13, segments=True),
}


def make_merged_inputs(T, S, S2, pad=False, cross_pad=False, segments=False,
                       offset=0, batch=2, heads=4, kv_heads=2, head_dim=8,
                       seed=1, **_):
    rng = np.random.default_rng(seed)

    def normal(*shape):
        return rng.standard_normal(shape, "float32")

    arrays = dict(
        query=normal(batch, T, heads, head_dim),
        key=normal(batch, S, kv_heads, head_dim),
        value=normal(batch, S, kv_heads, head_dim),
        cross_key=normal(batch, S2, kv_heads, head_dim),
        cross_value=normal(batch, S2, kv_heads, head_dim),
        d_out=normal(batch, T, heads, head_dim),
    )
    masks = dict(key_padding_mask=None, cross_padding_mask=None)
    if pad:
        mask = np.ones((batch, S), bool)
        mask[0, :3] = False  # left padding: the first queries see no own key
        masks["key_padding_mask"] = mask
    if cross_pad == "all":
        masks["cross_padding_mask"] = np.zeros((batch, S2), bool)
    elif cross_pad:
        mask = np.ones((batch, S2), bool)
        mask[-1, -4:] = False
        mask[0, :2] = False
        masks["cross_padding_mask"] = mask
    if segments:
        masks["key_segment_ids"] = segment_ids(S, batch)
        masks["query_segment_ids"] = segment_ids(
            S, batch, offset=offset, query_length=T)
        masks["cross_segment_ids"] = segment_ids(S2, batch)
    return arrays, masks


def merged_options(case):
    return dict(scale=0.3, soft_cap=case.get("soft_cap"),
                sliding_window=case.get("sliding_window"),
                query_offset=case.get("offset", 0))


def numpy_reference(arrays, masks, case):
    """transformers-style: concatenate, additive mask, one softmax."""
    q, k, v = arrays["query"], arrays["key"], arrays["value"]
    ck, cv = arrays["cross_key"], arrays["cross_value"]
    batch, length, heads, _ = q.shape
    groups = heads // k.shape[2]
    keys = np.repeat(np.concatenate([k, ck], 1), groups, axis=2)
    values = np.repeat(np.concatenate([v, cv], 1), groups, axis=2)
    logits = np.einsum("bthd,bshd->bhts", q, keys).astype("float64") * 0.3
    if case.get("soft_cap"):
        logits = np.tanh(logits / case["soft_cap"]) * case["soft_cap"]
    qpos = np.arange(length)[:, None] + case.get("offset", 0)
    kpos = np.arange(k.shape[1])[None]
    own = kpos <= qpos
    if case.get("sliding_window"):
        own = own & (kpos > qpos - case["sliding_window"])
    own = np.broadcast_to(own, (batch,) + own.shape)
    cross = np.ones((batch, length, ck.shape[1]), bool)
    if masks["key_padding_mask"] is not None:
        own = own & masks["key_padding_mask"][:, None]
    if masks["cross_padding_mask"] is not None:
        cross = cross & masks["cross_padding_mask"][:, None]
    if "query_segment_ids" in masks:
        query_ids = masks["query_segment_ids"][:, :, None]
        own = own & (query_ids == masks["key_segment_ids"][:, None])
        cross = cross & (query_ids == masks["cross_segment_ids"][:, None])
    mask = np.concatenate([own, cross], -1)[:, None]
    logits = np.where(mask, logits, -1e30)
    weights = np.exp(logits - logits.max(-1, keepdims=True))
    weights /= weights.sum(-1, keepdims=True)
    return np.einsum("bhts,bshd->bthd", weights, values)


def _merged(impl, masks, case, **tiles):
    options = merged_options(case)

    def fn(q, k, v, ck, cv):
        if not tiles:  # the public entry point
            return merged_dot_product_attention(
                q, k, v, ck, cv, impl=impl, **masks, **options)
        # Small tiles: several blocks per key set.
        rules = merged_rules(
            sliding_window=options["sliding_window"],
            query_offset=options["query_offset"], **masks)
        return attend_parts(impl, q, [(k, v, rules[0]), (ck, cv, rules[1])],
                            scale=options["scale"],
                            soft_cap=options["soft_cap"], **tiles)

    return fn


def merged_errors(case, impl, **tiles):
    """Max-abs error of `impl` vs "dense": output and all five gradients."""
    arrays, masks = make_merged_inputs(**case)
    inputs = [arrays[name] for name in ("query", "key", "value", "cross_key",
                                        "cross_value", "d_out")]
    reference = forward_and_grads(_merged("dense", masks, case), *inputs)
    got = forward_and_grads(_merged(impl, masks, case, **tiles), *inputs)
    names = ("out", "dq", "dk", "dv", "dck", "dcv")
    return {n: float(np.max(np.abs(a - b)))
            for n, a, b in zip(names, reference, got)}


@pytest.mark.parametrize("name", ["causal_pad_both", "decode_step",
                                  "packed_segments"])
def test_dense_matches_concatenated_numpy_reference(name):
    case = MERGED_CASES[name]
    arrays, masks = make_merged_inputs(**case)
    fn = _merged("dense", masks, case)
    got = fn(*(arrays[n] for n in ("query", "key", "value", "cross_key",
                                   "cross_value")))
    expected = numpy_reference(arrays, masks, case)
    from keras import ops

    error = np.max(np.abs(ops.convert_to_numpy(got) - expected))
    assert error < TOLERANCE, error


def test_fully_padded_encoder_equals_self_attention():
    case = MERGED_CASES["encoder_fully_padded"]
    arrays, masks = make_merged_inputs(**case)
    from keras import ops

    merged = merged_dot_product_attention(
        arrays["query"], arrays["key"], arrays["value"], arrays["cross_key"],
        arrays["cross_value"], scale=0.3, impl="dense", **masks)
    alone = dot_product_attention(
        arrays["query"], arrays["key"], arrays["value"], scale=0.3,
        causal=True, impl="dense")
    merged, alone = ops.convert_to_numpy(merged), ops.convert_to_numpy(alone)
    assert np.all(np.isfinite(merged))
    assert np.max(np.abs(merged - alone)) < TOLERANCE


@pytest.mark.parametrize("name", sorted(MERGED_CASES))
def test_xla_matches_dense_forward_and_gradients(name):
    errors = merged_errors(MERGED_CASES[name], "xla", block_q=8, block_k=8)
    assert max(errors.values()) < TOLERANCE, errors


def test_public_xla_matches_dense():
    errors = merged_errors(MERGED_CASES["window_soft_cap"], "xla")
    assert max(errors.values()) < TOLERANCE, errors


@pytest.mark.skipif(BACKEND != "jax", reason="JAX-only kernel")
@pytest.mark.parametrize("name", ["causal_pad_both", "decode_step",
                                  "encoder_fully_padded", "packed_segments"])
def test_pallas_matches_dense_forward_and_gradients(name, monkeypatch):
    from keras_encdec.ops import attention_pallas

    monkeypatch.setenv(attention_pallas.INTERPRET_ENV, "1")
    errors = merged_errors(MERGED_CASES[name], "pallas", block_q=16,
                           block_k=16)
    assert max(errors.values()) < TOLERANCE, errors


@pytest.mark.skipif(BACKEND != "torch", reason="torch only")
@pytest.mark.parametrize("name", sorted(MERGED_CASES))
def test_flex_matches_dense(name):
    import torch

    case = MERGED_CASES[name]
    if torch.cuda.is_available():
        errors = merged_errors(case, "flex")
        assert max(errors.values()) < TOLERANCE, errors
        return
    # CPU: flex has a forward only.
    arrays, masks = make_merged_inputs(**case)
    inputs = [arrays[n] for n in ("query", "key", "value", "cross_key",
                                  "cross_value")]
    with torch.no_grad():
        dense = _merged("dense", masks, case)(*inputs)
        flex = _merged("flex", masks, case)(*inputs)
    error = float(torch.max(torch.abs(dense - flex)))
    assert error < TOLERANCE, error


@pytest.mark.skipif(BACKEND != "torch", reason="torch only")
@pytest.mark.parametrize(
    "name", sorted(n for n, c in MERGED_CASES.items() if "soft_cap" not in c))
def test_sdpa_matches_dense_forward_and_gradients(name):
    errors = merged_errors(MERGED_CASES[name], "sdpa")
    assert max(errors.values()) < TOLERANCE, errors


def test_bad_inputs_raise():
    x = np.zeros((1, 4, 2, 8), "float32")
    with pytest.raises(ValueError, match="Unknown attention impl"):
        merged_dot_product_attention(x, x, x, x, x, scale=1.0, impl="fast")
    with pytest.raises(ValueError, match="needs `query_segment_ids`"):
        merged_dot_product_attention(x, x, x, x, x, scale=1.0,
                                     cross_segment_ids=np.zeros((1, 4)))
    with pytest.raises(ValueError, match="cross_key.shape"):
        merged_dot_product_attention(x, x, x, x[..., :4], x, scale=1.0)
