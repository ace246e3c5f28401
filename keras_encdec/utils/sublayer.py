"""Calling a built sublayer from inside another layer's `call`.

On eager torch every `Layer.__call__` costs tens of microseconds of Python:
input conversion, a `CallSpec`, name scopes, the call context, mask
bookkeeping, `torch.nn.Module` dispatch. A T5Gemma train step makes about
180 such calls (norms, projections, attention, MLP), about 20 ms per step on
a 2-core CPU (`tools/benchmark_vs_transformers.py`). jax and TensorFlow pay
it once, while tracing.

`call_sublayer(layer, ...)` runs `layer.call(...)` directly when that is
what `layer(...)` would run anyway: eager torch, a built layer, no
quantization, rematerialization, activity regularizer, autocast scope,
torch hooks or dtype conversion of a float input, and the `training`
argument passed explicitly where the layer takes one. Otherwise it calls
`layer(...)`.
"""

import keras

_TORCH = keras.backend.backend() == "torch"


def _direct(layer, args, kwargs):
    """Whether `layer.call(*args, **kwargs)` is what `layer(...)` runs."""
    import torch

    if not layer.built or torch.compiler.is_compiling():
        return False
    module_hooks = torch.nn.modules.module
    if (module_hooks._global_forward_hooks
            or module_hooks._global_forward_pre_hooks):
        return False
    if (
        layer.quantization_mode is not None
        or layer._remat_mode is not None
        or layer.activity_regularizer is not None
        or layer._forward_hooks
        or layer._forward_pre_hooks
        or keras.src.backend.get_autocast_scope() is not None
        or layer.compute_dtype != layer.variable_dtype
    ):
        return False
    if layer._call_has_training_arg and kwargs.get("training") is None:
        return False  # `Layer.__call__` would read the outer call's value.
    dtype = getattr(torch, layer.compute_dtype, None)
    for value in args + tuple(kwargs.values()):
        if isinstance(value, torch.Tensor):
            if value.is_floating_point() and value.dtype != dtype:
                return False
        elif isinstance(value, (list, tuple, dict)) or hasattr(
            value, "__array__"
        ):
            return False  # Nested or non-torch arrays: `Layer.__call__`.
    return True


def call_sublayer(layer, *args, **kwargs):
    """`layer(*args, **kwargs)`, without `Layer.__call__` where it is a no-op.

    Args:
        layer: a Keras layer, called from another layer's `call`.
        *args: positional arguments of `layer.call`.
        **kwargs: keyword arguments of `layer.call`. A `training` argument
            is dropped when `layer.call` takes none.

    Returns:
        What `layer(*args, **kwargs)` returns.

    Examples:

    >>> import numpy as np
    >>> import keras
    >>> dense = keras.layers.Dense(3)
    >>> x = keras.ops.ones((2, 4))
    >>> y = dense(x)
    >>> bool(np.all(keras.ops.convert_to_numpy(
    ...     call_sublayer(dense, x) == y)))
    True
    """
    if _TORCH and _direct(layer, args, kwargs):
        if not layer._call_has_training_arg:
            kwargs.pop("training", None)
        return layer.call(*args, **kwargs)
    return layer(*args, **kwargs)
