"""`dense_attention_parts` against the plain select formulation.

The masks enter the logits as a -1e30 bias and query rows that see no key
are zeroed (`attention_dense.py`). This checks, on jax, that values and
every gradient equal bit for bit those of selecting -1e30 where a key is
masked, with masked keys, a row that sees no key, two key sets and a
soft-cap.
"""

import numpy as np
import pytest

from keras_encdec.ops.attention_dense import dense_attention_parts
from keras_encdec.ops.attention_testing import BACKEND
from keras_encdec.ops.softmax_parts import MASKED_LOGIT

pytestmark = pytest.mark.skipif(BACKEND != "jax", reason="jax autodiff")


def _select_reference(query, parts, scale, soft_cap):
    """The same computation with the masks applied by a select (the path
    before the bias), step for step: float32 scale folded into the query,
    one logit block per key set, one softmax, one value product per set."""
    import jax
    import jax.numpy as jnp

    b, t, n, h = query.shape
    k = parts[0][0].shape[2]
    q = query * (scale if soft_cap is None else scale / soft_cap)
    q = q.reshape(b, t, k, n // k, h)
    logits = []
    for key, _, mask in parts:
        z = jnp.einsum("btkgh,bskh->bktgs", q, key)
        if soft_cap is not None:
            z = jnp.tanh(z) * soft_cap
        logits.append(jnp.where(mask[:, None, :, None, :], z, MASKED_LOGIT))
    p = jax.nn.softmax(jnp.concatenate(logits, -1), axis=-1)
    out, start = 0, 0
    for _, value, _ in parts:
        length = value.shape[1]
        out = out + jnp.einsum("bktgs,bskh->btkgh",
                               p[..., start:start + length], value)
        start += length
    return out.reshape(b, t, n, h)


@pytest.mark.parametrize("soft_cap", [None, 50.0])
def test_bias_and_zeroed_rows_equal_the_select_bit_for_bit(soft_cap):
    import jax
    import jax.numpy as jnp

    rng = np.random.default_rng(0)
    b, t, n, k, h, s1, s2 = 3, 8, 4, 2, 16, 8, 6

    def normal(*shape):
        return jnp.asarray(rng.normal(size=shape).astype("float32"))

    query = normal(b, t, n, h)
    k1, v1, k2, v2 = (normal(b, s, k, h) for s in (s1, s1, s2, s2))
    causal = np.tril(np.ones((t, s1), bool))[None].repeat(b, 0)
    causal[1, 3:] = False  # Rows 3.. of batch 1 see no self key...
    padding = np.ones((b, t, s2), bool)
    padding[1] = False  # ...nor any cross key: they see no key at all.
    padding[2, :, 4:] = False
    weights = normal(b, t, n, h)

    def loss(fn, *args):
        q, a1, c1, a2, c2 = args
        parts = [(a1, c1, jnp.asarray(causal)), (a2, c2, jnp.asarray(padding))]
        out = fn(q, parts, 0.25, soft_cap)
        return jnp.sum(out * weights), out

    def ours(q, parts, scale, cap):
        return dense_attention_parts(q, parts, scale=scale, soft_cap=cap)

    args = (query, k1, v1, k2, v2)
    grad = jax.value_and_grad(loss, argnums=(1, 2, 3, 4, 5), has_aux=True)
    (_, out), grads = jax.jit(grad, static_argnums=0)(ours, *args)
    (_, want), want_grads = jax.jit(grad, static_argnums=0)(
        _select_reference, *args)
    assert not np.all(np.asarray(out[1, 3:]) == 0)  # Uniform, not zero.
    np.testing.assert_array_equal(np.asarray(out), np.asarray(want))
    for name, got, expected in zip(("query", "k1", "v1", "k2", "v2"),
                                   grads, want_grads):
        np.testing.assert_array_equal(np.asarray(got), np.asarray(expected),
                                      err_msg=name)
    # The rows that see no key send no gradient to their query.
    assert np.all(np.asarray(grads[0][1, 3:]) == 0)
