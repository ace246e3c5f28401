"""Implementation selection shared by attention and the chunked loss.

One convention for every op with an `impl=` flag:

- the op defines `unavailable_reason(impl) -> str | None` (why that
  implementation cannot run on these inputs here, `None` if it can);
- `resolve(impl, ...)` returns a named impl that can run, raises
  `ValueError` with the reason for one that cannot (never a silent
  fallback), and for `impl=None` returns the first of the op's
  `candidates` that can run;
- `device_kind(x)` is the one device probe (`"cpu"`, `"gpu"`, `"tpu"`);
  `jax_cpu_float32(*tensors)` says where the XLA-CPU-specific gradients
  apply;
- `pallas_unavailable_reason()` is the one Pallas check (JAX backend on a
  GPU or TPU, or interpret mode through `INTERPRET_ENV`).

Kernel modules (Pallas, Triton, flex) are never imported here.
"""

import os

import keras

# Set to "1" to run Pallas kernels in interpret mode on any JAX platform
# (slow; for tests). `impl=None` never picks an interpreted kernel.
INTERPRET_ENV = "KERAS_ENCDEC_PALLAS_INTERPRET"


def pallas_interpret():
    """Whether `KERAS_ENCDEC_PALLAS_INTERPRET=1` asks for interpret mode."""
    return os.environ.get(INTERPRET_ENV, "0") == "1"


def _jax_platform():
    """Platform of JAX's default device (`jax_default_device`, else the
    default backend)."""
    import jax

    device = jax.config.jax_default_device
    if device is None:
        return jax.default_backend()
    if isinstance(device, str):
        return device
    return device.platform


def device_kind(x=None):
    """`"cpu"`, `"gpu"` or `"tpu"`: where this backend computes `x`.

    Args:
        x: tensor or None. On torch, the tensor's device decides (`None`:
            whether CUDA is available); other backends use their default
            device. Defaults to `None`.

    Returns:
        A string.

    Examples:

    >>> device_kind() in ("cpu", "gpu", "tpu")
    True
    """
    backend = keras.backend.backend()
    if backend == "jax":
        return _jax_platform()
    if backend == "torch":
        import torch

        if x is None:
            return "gpu" if torch.cuda.is_available() else "cpu"
        if not isinstance(x, torch.Tensor):  # numpy & co. live on the CPU
            return "cpu"
        return "gpu" if x.device.type == "cuda" else x.device.type
    if backend == "tensorflow":
        import tensorflow as tf

        return "gpu" if tf.config.list_logical_devices("GPU") else "cpu"
    return "cpu"


def jax_cpu_float32(*tensors):
    """Whether this is JAX computing on the CPU and every tensor is float32:
    where the XLA-CPU-specific gradients (`keras_encdec.ops.matmul_jax`,
    `keras_encdec.ops.attention_dense_jax`) apply.

    Examples:

    >>> import keras, numpy as np
    >>> jax_cpu_float32(np.ones(2, "float32")) == (
    ...     keras.backend.backend() == "jax" and device_kind() == "cpu")
    True
    >>> jax_cpu_float32(np.ones(2, "float16"))
    False
    """
    if keras.backend.backend() != "jax" or device_kind() != "cpu":
        return False
    return all(keras.backend.standardize_dtype(t.dtype) == "float32"
               for t in tensors)


def pallas_unavailable_reason(x=None):
    """Why a Pallas kernel cannot run here, or `None`.

    Examples:

    >>> import keras
    >>> (pallas_unavailable_reason() is None) == (
    ...     keras.backend.backend() == "jax" and (
    ...         pallas_interpret() or device_kind() in ("gpu", "tpu")))
    True
    """
    backend, device = keras.backend.backend(), device_kind(x)
    if backend == "jax" and (device in ("gpu", "tpu") or pallas_interpret()):
        return None
    return (
        "impl='pallas' needs the JAX backend on a GPU or TPU (or Pallas "
        f"interpret mode: set {INTERPRET_ENV}=1, slow, for tests); this "
        f"process runs {backend} on {device}"
    )


def resolve(impl, *, impls, unavailable_reason, candidates, what="impl"):
    """The implementation to run.

    Args:
        impl: str or None. The requested implementation.
        impls: tuple of str. Every known implementation.
        unavailable_reason: callable `(impl) -> str | None`.
        candidates: sequence of str. What `impl=None` tries, in order; the
            first that can run wins.
        what: str. What the flag selects, for error messages. Defaults to
            `"impl"`.

    Returns:
        One of `impls`.

    Examples:

    >>> reasons = {"fast": "no GPU", "slow": None}
    >>> resolve(None, impls=("fast", "slow"),
    ...         unavailable_reason=reasons.get, candidates=("fast", "slow"))
    'slow'
    """
    if impl is None:
        reasons = []
        for candidate in candidates:
            reason = unavailable_reason(candidate)
            if reason is None:
                return candidate
            reasons.append(f"{candidate}: {reason}")
        raise ValueError(
            f"No {what} can run here ({'; '.join(reasons)})."
        )
    if impl not in impls:
        raise ValueError(
            f"Unknown {what}. Received: impl={impl!r}. Expected one of "
            f"{impls} or None (pick the best available)."
        )
    reason = unavailable_reason(impl)
    if reason is not None:
        raise ValueError(reason + ".")
    return impl
