"""A projection matmul whose kernel gradient XLA's CPU backend runs fast.

The kernel gradient of `x [N, in] @ kernel [in, out]` is `x^T g`, a product
with a transposed left operand. XLA's CPU runtime runs it (Eigen) about
1.5x slower when its result is tall than when it is wide: for 1024 tokens
on one core, `[1024, 256]` (a feed-forward down projection) takes 4.7 ms,
`[256, 1024]` 2.9 ms. `matmul` computes the gradient wide (`(g^T x)^T`
when `in > out`; an optimization barrier keeps XLA from folding the small
transpose back into the product) and is `x @ kernel` otherwise, values
and input gradient unchanged. T5Gemma 2's train step on 2 cores: 1.02x
(BENCHMARKS.md, tenth session).

`Projection` (T5Gemma's `EinsumDense`) uses it on JAX with a CPU default
backend for float32 operands (`applies`).
"""

import functools

from keras_encdec.utils import dispatch

_KERNEL_GRAD = (((0,), (0,)), ((), ()))  # Contract the rows (tokens).
_INPUT_GRAD = (((1,), (1,)), ((), ()))  # g [N, out] . kernel [in, out].


def applies(inputs, kernel):
    """Whether `matmul` runs for these operands: JAX computing on the CPU,
    float32 inputs and kernel."""
    return dispatch.jax_cpu_float32(inputs, kernel)


def matmul(inputs, kernel):
    """`inputs [N, in] @ kernel [in, out]`, with the kernel gradient
    computed wide.

    Args:
        inputs: float32 `[N, in]`.
        kernel: float32 `[in, out]`.

    Returns:
        float32 `[N, out]`.

    Examples:

    >>> import jax, jax.numpy as jnp
    >>> x, w = jnp.ones((3, 4)), jnp.ones((4, 2))
    >>> grad = jax.grad(lambda w: matmul(x, w).sum())(w)
    >>> grad.tolist()
    [[3.0, 3.0], [3.0, 3.0], [3.0, 3.0], [3.0, 3.0]]
    """
    return _custom_matmul()(inputs, kernel)


def _forward(inputs, kernel):
    return inputs @ kernel, (inputs, kernel)


def _backward(residuals, output_grad):
    import jax

    inputs, kernel = residuals
    input_grad = jax.lax.dot_general(output_grad, kernel, _INPUT_GRAD)
    if kernel.shape[0] > kernel.shape[1]:
        wide = jax.lax.dot_general(output_grad, inputs, _KERNEL_GRAD)
        kernel_grad = jax.lax.optimization_barrier(wide).T
    else:
        kernel_grad = jax.lax.dot_general(inputs, output_grad, _KERNEL_GRAD)
    return input_grad, kernel_grad


@functools.cache
def _custom_matmul():
    import jax

    @jax.custom_vjp
    def custom(inputs, kernel):
        return inputs @ kernel

    custom.defvjp(_forward, _backward)
    return custom
