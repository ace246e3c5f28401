"""Keras `Adam` on torch CPU: the same update, in place, fused or chunked.

Keras' torch `Adam` (`keras/src/backend/torch/optimizers/torch_adam.py`)
updates every variable with `torch._foreach_*` calls. On CPU these are one
ordinary kernel per tensor, and five of them return new tensors the size of
the whole model (`g * g`, `sqrt(v)`, `+ eps`, `m * alpha`, the quotient):
fresh pages on every step, each written to and read back from memory.
`fast_adam_update` runs the same kernels, in the same order, with the same
scalars, on slices of at most `CHUNK` elements and two reused scratch
slices, so the variables, moments and `iterations` are bit for bit those of
Keras' update, and the temporaries stay in the CPU cache.

Where torch's fused CPU Adam kernel applies (float variables and gradients
of one dtype, contiguous, no `amsgrad`; `FUSED`), one
`torch._fused_adam_` call per dtype replaces the ten slice kernels: one
pass over each variable instead of ten, 19 vs 58 ms per update of 10M
parameters (`BENCHMARKS.md`, issue 16). The kernel is torch's Adam, whose
epsilon is added to the bias-corrected `sqrt(v_hat)`; Keras adds it to
`sqrt(v)`. Passing `epsilon / sqrt(1 - beta_2^t)` makes the two updates
equal: `alpha * m / (sqrt(v) + eps)` with Keras' `alpha = lr *
sqrt(1 - beta_2^t) / (1 - beta_1^t)`. The result equals Keras' update up
to float rounding (not bit for bit: the kernel uses `lerp` and fused
arithmetic), tested within 2e-6 relative.

`use_fast_adam_update(optimizer)` binds it to a Keras torch `Adam` (or the
inner optimizer of a `LossScaleOptimizer`); the seq2seq tasks' `compile`
calls it. Variables on an accelerator keep Keras' `_foreach` update (fused
multi-tensor kernels there); every other part of `optimizer.apply`
(clipping, weight decay, EMA, gradient accumulation, the step counter) is
Keras' own.
"""

import types

import keras
from keras import ops

# Elements per slice (two float32 scratch slices of 1 MiB). Measured on the
# 2-core CPU with T5Gemma 2's 10M parameters, one update: 2**14 88 ms, 2**16
# 49 ms, 2**17 42 ms, 2**18 41 ms, 2**20 41 ms (interleaved in one
# process, BENCHMARKS.md): fewer slices, fewer op dispatches.
CHUNK = 1 << 18

# Whether torch's fused CPU Adam kernel serves the variables it can (see the
# module docstring); False: the bit-for-bit chunked update everywhere.
FUSED = True
_FUSED_DTYPES = ("float32", "bfloat16", "float16")


def fast_adam_update(optimizer, grads, variables, learning_rate):
    """Keras torch `Adam._parallel_update_step`, in place on CPU: fused
    where torch's kernel applies (`_fused_update`), chunked elsewhere.

    Args:
        optimizer: the Keras torch `Adam` whose slots are updated.
        grads: list of torch tensors, one per variable.
        variables: list of Keras variables.
        learning_rate: the current learning rate (tensor or float).
    """
    import torch

    if any(v.value.device.type != "cpu" for v in variables):
        return type(optimizer)._parallel_update_step(
            optimizer, grads, variables, learning_rate
        )
    dtype = variables[0].value.dtype  # Keras' scalar dtype
    if FUSED and not optimizer.amsgrad:
        variables, grads = _fused_update(optimizer, grads, variables,
                                         learning_rate)
        if not variables:
            return
    # The scalars exactly as Keras computes them.
    lr = ops.cast(learning_rate, dtype)
    local_step = ops.cast(optimizer.iterations + 1, dtype)
    beta_1_power = ops.power(ops.cast(optimizer.beta_1, dtype), local_step)
    beta_2_power = ops.power(ops.cast(optimizer.beta_2, dtype), local_step)
    alpha = lr * ops.sqrt(1 - beta_2_power) / (1 - beta_1_power)
    scratch = {}
    for variable, grad in zip(variables, grads):
        index = optimizer._get_variable_index(variable)
        slots = [
            variable.value,
            optimizer._momentums[index].value,
            optimizer._velocities[index].value,
        ]
        if optimizer.amsgrad:
            slots.append(optimizer._velocity_hats[index].value)
        if not all(
            s.is_contiguous() and s.dtype == grad.dtype for s in slots
        ):
            _update(optimizer, alpha, grad, *slots)  # whole-tensor temporaries
            continue
        if grad.dtype not in scratch:
            scratch[grad.dtype] = [
                torch.empty(CHUNK, dtype=grad.dtype) for _ in range(2)
            ]
        flat = [s.view(-1) for s in slots]
        flat_grad = grad.reshape(-1)
        size = flat_grad.numel()
        for start in range(0, size, CHUNK):
            stop = min(size, start + CHUNK)
            buf, buf2 = [b[: stop - start] for b in scratch[grad.dtype]]
            _update(
                optimizer,
                alpha,
                flat_grad[start:stop],
                *[s[start:stop] for s in flat],
                buf=buf,
                buf2=buf2,
            )


def _fused_update(optimizer, grads, variables, learning_rate):
    """Updates what torch's fused CPU Adam can update, one call per dtype.

    Returns `(variables, grads)` left for the chunked update.
    """
    import torch

    groups, rest = {}, ([], [])
    for variable, grad in zip(variables, grads):
        index = optimizer._get_variable_index(variable)
        value = variable.value
        slots = (value, grad, optimizer._momentums[index].value,
                 optimizer._velocities[index].value)
        dtype = str(value.dtype).replace("torch.", "")
        if dtype in _FUSED_DTYPES and all(
            s.dtype == value.dtype and s.is_contiguous() for s in slots
        ):
            group = groups.setdefault(dtype, ([], [], [], []))
            for items, tensor in zip(group, slots):
                items.append(tensor)
        else:
            rest[0].append(variable)
            rest[1].append(grad)
    if groups:
        step = float(ops.convert_to_numpy(optimizer.iterations)) + 1.0
        beta_2 = float(optimizer.beta_2)
        # torch adds epsilon to sqrt(v) / sqrt(1 - beta_2^t); Keras to
        # sqrt(v). Scaled, the two updates are equal.
        epsilon = float(optimizer.epsilon) / (1.0 - beta_2**step) ** 0.5
        steps = torch.full((), step, dtype=torch.float32)
        lr = float(ops.convert_to_numpy(learning_rate))
        for params, grad_list, momentums, velocities in groups.values():
            torch._fused_adam_(
                params, grad_list, momentums, velocities, [],
                [steps] * len(params), lr=lr,
                beta1=float(optimizer.beta_1),
                beta2=beta_2, weight_decay=0.0, eps=epsilon,
                amsgrad=False, maximize=False,
            )
    return rest


def _update(optimizer, alpha, g, var, m, v, v_hat=None, buf=None,
            buf2=None):
    """Keras' Adam kernels on one slice (`buf`/`buf2`: scratch of its size,
    None for fresh temporaries)."""
    import torch

    beta_1, beta_2 = optimizer.beta_1, optimizer.beta_2
    m.mul_(beta_1)
    m.add_(g, alpha=1 - beta_1)
    v.mul_(beta_2)
    buf = torch.mul(g, g) if buf is None else torch.mul(g, g, out=buf)
    v.add_(buf, alpha=1 - beta_2)
    if v_hat is not None:
        torch.maximum(v_hat, v, out=v_hat)
        v = v_hat
    torch.sqrt(v, out=buf)
    buf.add_(optimizer.epsilon)
    if buf2 is None:
        buf2 = torch.mul(m, alpha)
    else:
        torch.mul(m, alpha, out=buf2)
    buf2.div_(buf)
    var.add_(buf2, alpha=-1)


def _torch_adam_class():
    from keras.src.backend.torch.optimizers import torch_adam

    return torch_adam.Adam


def use_fast_adam_update(optimizer):
    """Binds `fast_adam_update` to a Keras torch `Adam`, if `optimizer` is one.

    Only an optimizer whose update step is Keras' own torch `Adam` step is
    changed (a subclass that overrides it is left alone); a
    `LossScaleOptimizer` gets it on its inner optimizer. Idempotent.

    Args:
        optimizer: a Keras optimizer (any backend) or None.

    Returns:
        bool. Whether the optimizer (now) uses `fast_adam_update`.

    Examples:

    >>> import keras
    >>> adam = keras.optimizers.Adam(1e-3)
    >>> use_fast_adam_update(adam) == (keras.backend.backend() == "torch")
    True
    """
    if optimizer is None or keras.backend.backend() != "torch":
        return False
    optimizer = getattr(optimizer, "inner_optimizer", optimizer)
    adam = _torch_adam_class()
    step = getattr(type(optimizer), "_parallel_update_step", None)
    if step is not adam._parallel_update_step:
        return False
    optimizer._parallel_update_step = types.MethodType(
        fast_adam_update, optimizer
    )
    return True
