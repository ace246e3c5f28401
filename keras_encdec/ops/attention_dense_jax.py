"""Dense grouped-query attention with its own gradient, for XLA's CPU backend.

`dense_attention_parts` (keys concatenated into one set, float32, no
dropout) runs this on JAX with a CPU default backend. The values are the
same products as the `keras.ops` path; what changes is which matrices XLA
transposes:

- XLA's CPU runtime multiplies row-major `[M, K] x [K, N]` blocks, and its
  simplifier folds a transpose of a product's result into the product by
  swapping the operands (`(A B)^T = B^T A^T`). The `[B, K, T, G, H]`
  attention output goes back to `[B, T, K, G, H]`, so XLA computed it as
  `V^T P^T` and copied the `[T * G, S]` probabilities transposed, in the
  forward pass and again (the score gradient) in the backward pass: four
  `[T * G, S]` transposed copies per layer, the largest tensors of the step.
- Here every product is written in the form XLA runs without a copy of a
  `[T * G, S]` block (`dK^T = Q^T dS`, `dV^T = dO^T P`, `dQ = dS K`,
  `O = P V`), and an optimization barrier keeps the small `[.., H]`
  results' transposes out of the products.
- The softmax gradient uses `sum(dO * O)` over the head dimension for
  `sum(dP * P)` over the keys (the same value, a smaller reduction).

T5Gemma 2's merged decoder attention (4 x 256 queries, 512 keys) fwd+bwd
1.22-1.27x faster than autodiff of the `keras.ops` path, T5Gemma's
soft-capped encoder attention 1.23x (BENCHMARKS.md, tenth session).
Gradients agree with autodiff to float rounding
(`attention_dense_jax_test.py`).
"""

import functools

from keras_encdec.utils import dispatch

# `jax.lax.dot_general` dimension numbers. Shapes: query `[B, T, K, G, H]`,
# key/value `[B, S, K, H]`, scores `[B, K, T, G, S]`.
_SCORES = (((4,), (3,)), ((0, 2), (0, 2)))  # q . k -> [B, K, T, G, S]
_WEIGHTED = (((4,), (1,)), ((0, 1), (0, 2)))  # p . v -> [B, K, T, G, H]
_HEADS_MAJOR_SCORES = (((4,), (3,)), ((0, 1), (0, 2)))  # [B, K, T, G, H] . k
_BY_KEY = (((2, 3), (2, 3)), ((0, 1), (0, 1)))  # [B, K, T, G, H] x scores
#                                                 -> [B, K, H, S]


def applies(query, key, value, probabilities_dropout):
    """Whether `grouped_attention` runs for these operands: JAX computing on
    the CPU, float32 query, keys and values, no dropout."""
    return probabilities_dropout is None and dispatch.jax_cpu_float32(
        query, key, value)


def grouped_attention(query, key, value, bias, soft_cap):
    """Softmax attention of grouped queries over one key set.

    Args:
        query: float32 `[B, T, K, G, H]`, already multiplied by the logit
            scale (divided by `soft_cap` when given).
        key: float32 `[B, S, K, H]`.
        value: float32 `[B, S, K, H]`.
        bias: float32 `[B or 1, 1, T, 1, S]`, added to the logits: 0 where a
            key is visible, `MASKED_LOGIT` where not. No gradient flows to
            it.
        soft_cap: float or None: logits are `tanh(q . k) * soft_cap`.

    Returns:
        float32 `[B, T, K, G, H]`.

    Examples:

    >>> import jax.numpy as jnp
    >>> q = jnp.ones((1, 3, 2, 2, 4)) * 0.1
    >>> kv = jnp.ones((1, 5, 2, 4))
    >>> out = grouped_attention(q, kv, kv, jnp.zeros((1, 1, 3, 1, 5)), None)
    >>> tuple(out.shape), float(out[0, 0, 0, 0, 0])
    ((1, 3, 2, 2, 4), 1.0)
    """
    return _custom_attention()(query, key, value, bias, soft_cap)


def _forward(query, key, value, bias, soft_cap):
    import jax

    scores = jax.lax.dot_general(query, key, _SCORES)
    capped = None
    if soft_cap is not None:
        capped = jax.numpy.tanh(scores)
        scores = capped * soft_cap
    probabilities = jax.nn.softmax(scores + bias, axis=-1)
    heads_major = jax.lax.dot_general(probabilities, value, _WEIGHTED)
    heads_major = jax.lax.optimization_barrier(heads_major)
    output = jax.numpy.transpose(heads_major, (0, 2, 1, 3, 4))
    return output, (query, key, value, probabilities, capped, heads_major)


def _backward(soft_cap, residuals, output_grad):
    import jax
    import jax.numpy as jnp

    query, key, value, probabilities, capped, heads_major = residuals
    output_grad = jnp.transpose(output_grad, (0, 2, 1, 3, 4))  # [B,K,T,G,H]
    probabilities_grad = jax.lax.dot_general(
        output_grad, value, _HEADS_MAJOR_SCORES)
    row_dot = jnp.sum(output_grad * heads_major, axis=-1, keepdims=True)
    scores_grad = probabilities * (probabilities_grad - row_dot)
    if soft_cap is not None:
        scores_grad = scores_grad * (soft_cap * (1.0 - capped * capped))
    query_grad = jax.lax.dot_general(scores_grad, key, _WEIGHTED)
    query_heads_major = jnp.transpose(query, (0, 2, 1, 3, 4))
    key_grad = jax.lax.dot_general(query_heads_major, scores_grad, _BY_KEY)
    value_grad = jax.lax.dot_general(output_grad, probabilities, _BY_KEY)
    query_grad, key_grad, value_grad = jax.lax.optimization_barrier(
        (query_grad, key_grad, value_grad))
    return (jnp.transpose(query_grad, (0, 2, 1, 3, 4)),
            jnp.transpose(key_grad, (0, 3, 1, 2)),
            jnp.transpose(value_grad, (0, 3, 1, 2)),
            None)


@functools.cache
def _custom_attention():
    import jax

    @functools.partial(jax.custom_vjp, nondiff_argnums=(4,))
    def attention(query, key, value, bias, soft_cap):
        return _forward(query, key, value, bias, soft_cap)[0]

    attention.defvjp(_forward, _backward)
    return attention
