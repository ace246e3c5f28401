"""Small T5Gemma building blocks: projections, RMS normalization and the
gated MLP."""

import functools
import math

import keras
from keras import ops

from keras_encdec.api import register
from keras_encdec.errors import InputError
from keras_encdec.ops import matmul_jax
from keras_encdec.weight_roles import projection_kernel
from keras_encdec.utils.sublayer import call_sublayer

_TORCH = keras.backend.backend() == "torch"


def kernel_initializer(initializer_range):
    """The T5Gemma weight initializer: a normal with `initializer_range` std."""
    return keras.initializers.RandomNormal(mean=0.0, stddev=initializer_range)


@functools.lru_cache(maxsize=None)
def contracted_axes(equation):
    """How many trailing input axes `equation` contracts with the kernel's
    leading axes, all other axes kept in order (`"btd,dnh->btnh"`: 1,
    `"btnh,nhd->btd"`: 2); 0 when it is not of that form."""
    inputs, _, output = equation.replace(" ", "").partition("->")
    x, _, kernel = inputs.partition(",")
    for count in range(1, len(x) + 1):
        contracted = x[-count:]
        if (
            kernel.startswith(contracted)
            and len(set(x + kernel)) == len(x) + len(kernel) - count
            and output == x[:-count] + kernel[count:]
        ):
            return count
    return 0


@register
class Projection(keras.layers.EinsumDense):
    """`EinsumDense` that runs as one matmul where it can.

    Where the equation contracts the input's trailing axes with the
    kernel's leading ones (`"btd,dnh->btnh"`, `"td,df->tf"`,
    `"btnh,nhd->btd"`), without bias or activation, the flattened axes are
    multiplied:

    - on torch, every such projection: `torch.einsum` parses the equation
      and permutes on every call, 20-35 us more than `matmul` per
      projection on a 2-core CPU (64 projections per T5Gemma 2 forward),
      and its backward is a chain of permutes and `bmm`s;
    - on JAX and TensorFlow, those that contract two or more axes (the
      attention output, `"btnh,nhd->btd"`): XLA otherwise lays the
      `[heads, head_dim, hidden]` kernel out again, a copy of the whole
      kernel on every decode step (T5Gemma 2 decoding on JAX, with the
      argmax of `greedy_sampler`: 1857-1981 -> 2030-2067 tokens/s,
      BENCHMARKS.md);
    - on JAX with a CPU default backend, for float32 operands, every such
      projection, through `keras_encdec.ops.matmul_jax.matmul`: the same
      product, with a kernel gradient XLA's CPU runtime computes faster
      (train step 1.02-1.03x, BENCHMARKS.md, tenth session).

    Same results up to float rounding; LoRA included (the `kernel`
    property merges it). Other equations run `EinsumDense.call`.

    Examples:

    >>> import numpy as np
    >>> layer = Projection("btd,dnh->btnh", output_shape=(None, 2, 3))
    >>> tuple(layer(np.ones((1, 4, 5), "float32")).shape)
    (1, 4, 2, 3)
    """

    def quantize(self, mode=None, type_check=True, config=None):
        # `EinsumDense.quantize` refuses subclasses (their `call` may differ
        # from the quantized calls it installs). Only the float call
        # differs here; quantized layers run `EinsumDense`'s quantized call.
        return super().quantize(mode, type_check=False, config=config)

    def call(self, inputs, training=None):
        count = contracted_axes(self.equation)
        if (
            not count
            or self.bias is not None
            or self.activation is not keras.activations.linear
        ):
            return super().call(inputs, training=training)
        if not _TORCH:
            # Decided on the variable, so that the kernel (LoRA merged) is
            # read once, and only where this call multiplies it itself.
            wide_grad = matmul_jax.applies(inputs, self._kernel)
            if count == 1 and not wide_grad:
                return super().call(inputs, training=training)
        contracted = tuple(self._kernel.shape[:count])
        received = tuple(inputs.shape[-count:])
        if any(a is not None and a != b for a, b in zip(received, contracted)):
            # Flattening would multiply equal-sized but different axes.
            raise InputError(
                f"Projection {self.name!r} ({self.equation!r}) contracts "
                f"input axes of sizes {contracted}. Received: input shape "
                f"{tuple(inputs.shape)}."
            )
        if not _TORCH:
            kernel = ops.convert_to_tensor(self.kernel)
            kept = tuple(kernel.shape[count:])
            width = math.prod(contracted)
            lead = tuple(ops.shape(inputs)[:-count])
            kernel = ops.reshape(kernel, (width, -1))
            if wide_grad:
                flat = ops.reshape(inputs, (-1, width))
                out = matmul_jax.matmul(flat, kernel)
            else:
                flat = ops.reshape(inputs, (*lead, width))
                out = ops.matmul(flat, kernel)
            return ops.reshape(out, (*lead, *kept))
        import torch

        kernel = self.kernel
        if isinstance(kernel, keras.Variable):
            kernel = kernel.value
        flat = kernel.reshape(-1, *kernel.shape[count:]).flatten(1)
        out = torch.matmul(inputs.flatten(-count), flat)
        return out.reshape(*inputs.shape[:-count], *kernel.shape[count:])


def einsum_dense(equation, output_shape, name, initializer_range, dtype):
    """A bias-free `Projection` with the T5Gemma initializer."""
    return Projection(
        equation,
        output_shape=output_shape,
        kernel_initializer=kernel_initializer(initializer_range),
        dtype=dtype,
        name=name,
    )


@register
class T5GemmaRMSNormalization(keras.layers.Layer):
    """RMS normalization with a `(1 + scale)` weight, computed in float32.

    Args:
        epsilon: float. Added to the mean square. Defaults to `1e-6`.
        **kwargs: passed to `keras.layers.Layer`.

    Examples:

    >>> import numpy as np
    >>> from keras import ops
    >>> norm = T5GemmaRMSNormalization()
    >>> y = norm(np.array([[3.0, 4.0]], "float32"))
    >>> [round(float(v), 4) for v in ops.convert_to_numpy(y)[0]]
    [0.8485, 1.1314]
    """

    def __init__(self, epsilon=1e-6, **kwargs):
        super().__init__(**kwargs)
        self.epsilon = epsilon

    def build(self, input_shape):
        self.scale = self.add_weight(
            name="scale", shape=(input_shape[-1],), initializer="zeros"
        )

    def call(self, x):
        if _TORCH:
            import torch

            if isinstance(x, torch.Tensor):
                # The same five float32 ops without the keras.ops wrappers
                # (dtype checks, conversions): 54 norms per T5Gemma 2 step.
                x = x.float()
                x = x * torch.rsqrt(
                    x.square().mean(-1, keepdim=True) + self.epsilon
                )
                x = x * (1.0 + self.scale.value.float())
                return x.to(getattr(torch, self.compute_dtype))
        x = ops.cast(x, "float32")
        variance = ops.mean(ops.square(x), axis=-1, keepdims=True)
        x = x * ops.rsqrt(variance + self.epsilon)
        x = x * (1.0 + ops.cast(self.scale, "float32"))
        return ops.cast(x, self.compute_dtype)

    def get_config(self):
        config = super().get_config()
        config.update({"epsilon": self.epsilon})
        return config


@register
class T5GemmaMLP(keras.layers.Layer):
    """The gated feed-forward block: `down(act(gate(x)) * up(x))`.

    Sublayer names follow keras-hub's Gemma: `ffw_gating` (the activation
    branch, HF `gate_proj`), `ffw_gating_2` (HF `up_proj`) and `ffw_linear`
    (HF `down_proj`).

    Args:
        hidden_dim: int. Input and output width.
        intermediate_dim: int. The feed-forward width.
        hidden_activation: str. `"gelu_approximate"` (Gemma's tanh GELU) or
            any Keras activation name. Defaults to `"gelu_approximate"`.
        dropout_rate: float. Dropout on the gated activations. Defaults to
            `0.0`.
        initializer_range: float. Std of the kernel initializer. Defaults to
            `0.02`.
        **kwargs: passed to `keras.layers.Layer`.

    Examples:

    >>> import numpy as np
    >>> mlp = T5GemmaMLP(hidden_dim=8, intermediate_dim=16)
    >>> tuple(mlp(np.ones((2, 3, 8), "float32")).shape)
    (2, 3, 8)
    """

    def __init__(
        self,
        hidden_dim,
        intermediate_dim,
        hidden_activation="gelu_approximate",
        dropout_rate=0.0,
        initializer_range=0.02,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.hidden_dim = hidden_dim
        self.intermediate_dim = intermediate_dim
        self.hidden_activation = hidden_activation
        self.dropout_rate = dropout_rate
        self.initializer_range = initializer_range

        def dense(equation, shape, name):
            return einsum_dense(
                equation, shape, name, initializer_range, self.dtype_policy
            )

        # Tokens flattened to `[batch * T, ...]`: plain matmuls. The XLA:CPU
        # backward of "btd,df->btf" fuses the GELU gradient into a transposing
        # copy (~2.5x slower MLP gradient, same results).
        self.gating = dense("td,df->tf", (intermediate_dim,), "ffw_gating")
        self.gating_2 = dense("td,df->tf", (intermediate_dim,), "ffw_gating_2")
        self.linear = dense("tf,fd->td", (hidden_dim,), "ffw_linear")
        self.dropout = keras.layers.Dropout(
            dropout_rate, dtype=self.dtype_policy, name="ffw_dropout"
        )
        if hidden_activation == "gelu_approximate":
            self.activation = lambda x: keras.activations.gelu(
                x, approximate=True
            )
        else:
            self.activation = keras.activations.get(hidden_activation)

    def build(self, input_shape):
        self.gating.build((None, input_shape[-1]))
        self.gating_2.build((None, input_shape[-1]))
        self.linear.build((None, self.intermediate_dim))

    def weight_roles(self):
        """`{weight: variable}`: the `gate`, `up` and `down` kernels."""
        return {
            "gate": projection_kernel(self.gating),
            "up": projection_kernel(self.gating_2),
            "down": projection_kernel(self.linear),
        }

    def call(self, x, training=None):
        shape = ops.shape(x)
        x = ops.reshape(x, (-1, shape[-1]))
        gate = self.activation(call_sublayer(self.gating, x, training=training))
        hidden = gate * call_sublayer(self.gating_2, x, training=training)
        hidden = call_sublayer(self.dropout, hidden, training=training)
        output = call_sublayer(self.linear, hidden, training=training)
        return ops.reshape(output, shape[:-1] + (self.hidden_dim,))

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1]) + (self.hidden_dim,)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "hidden_dim": self.hidden_dim,
                "intermediate_dim": self.intermediate_dim,
                "hidden_activation": self.hidden_activation,
                "dropout_rate": self.dropout_rate,
                "initializer_range": self.initializer_range,
            }
        )
        return config
