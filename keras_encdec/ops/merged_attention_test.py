"""`merged_dot_product_attention`: dense vs a numpy reference, impls vs dense.

The numpy reference does what transformers' T5Gemma 2 decoder does:
concatenate keys, values and masks, add a large negative number where
masked, one softmax.
"""

import numpy as np
import pytest

from keras_encdec.ops.attention import dot_product_attention
from keras_encdec.ops.attention_testing import TOLERANCE
from keras_encdec.ops.attention_testing import forward_and_grads
from keras_encdec.ops.merged_attention import merged_dot_product_attention

MERGED_CASES = {
    "causal_pad_both": dict(T=21, S=21, S2=13, pad=True, cross_pad=True),
    "window_soft_cap": dict(T=37, S=37, S2=11, sliding_window=5,
                            soft_cap=2.0, cross_pad=True),
    "encoder_fully_padded": dict(T=9, S=9, S2=6, cross_pad="all"),
    "decode_step": dict(T=1, S=24, S2=10, offset=13, sliding_window=4,
                        pad=True, cross_pad=True),
}


def make_merged_inputs(T, S, S2, pad=False, cross_pad=False, batch=2,
                       heads=4, kv_heads=2, head_dim=8, seed=1, **_):
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
    mask = np.concatenate([own, cross], -1)[:, None]
    logits = np.where(mask, logits, -1e30)
    weights = np.exp(logits - logits.max(-1, keepdims=True))
    weights /= weights.sum(-1, keepdims=True)
    return np.einsum("bhts,bshd->bthd", weights, values)


def _merged(impl, masks, case):
    def fn(q, k, v, ck, cv):
        return merged_dot_product_attention(
            q, k, v, ck, cv, impl=impl, **masks, **merged_options(case))

    return fn


def merged_errors(case, impl, **impl_options):
    """Max-abs error of `impl` vs "dense": output and all five gradients."""
    arrays, masks = make_merged_inputs(**case)
    inputs = [arrays[name] for name in ("query", "key", "value", "cross_key",
                                        "cross_value", "d_out")]
    reference = forward_and_grads(_merged("dense", masks, case), *inputs)
    got = forward_and_grads(_merged(impl, masks, case), *inputs)
    names = ("out", "dq", "dk", "dv", "dck", "dcv")
    return {n: float(np.max(np.abs(a - b)))
            for n, a, b in zip(names, reference, got)}


@pytest.mark.parametrize("name", sorted(MERGED_CASES))
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


def test_bad_inputs_raise():
    x = np.zeros((1, 4, 2, 8), "float32")
    with pytest.raises(ValueError, match="Unknown merged attention impl"):
        merged_dot_product_attention(x, x, x, x, x, scale=1.0, impl="fast")
    with pytest.raises(ValueError, match="cross_key.shape"):
        merged_dot_product_attention(x, x, x, x[..., :4], x, scale=1.0)
