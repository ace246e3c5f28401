"""Benchmark one attention layer, forward + backward, side by side.

Modes:

- `cpu` (default; JAX): `impl="xla"` vs `"dense"` at T = S = 4096, 8 heads,
  4 kv heads, head dim 256, causal with window 4096 then 512, soft-cap 50.
  Reports the compiled program's memory analysis, the arrays autodiff saves
  for the backward pass (device independent, no run needed) and time.
- `gpu-jax`: `"pallas"` vs `"dense"` vs cuDNN `jax.nn.dot_product_attention`
  (no soft-cap: the speed reference), bf16, on a JAX GPU.
- `gpu-torch`: `"flex"` vs `"dense"` vs torch SDPA (no soft-cap), bf16, on
  CUDA.

Usage:

    KERAS_BACKEND=jax python tools/benchmark_attention.py --mode cpu
    KERAS_BACKEND=jax python tools/benchmark_attention.py --mode gpu-jax
    KERAS_BACKEND=torch python tools/benchmark_attention.py --mode gpu-torch
"""

import argparse
import os
import time

import numpy as np

MIB = 1024.0**2


def _inputs(args, dtype):
    rng = np.random.default_rng(0)
    q = rng.standard_normal((args.batch, args.length, args.heads,
                             args.head_dim)).astype(dtype)
    kv = rng.standard_normal((2, args.batch, args.length, args.kv_heads,
                              args.head_dim)).astype(dtype)
    return q, kv[0], kv[1]


def _jax_loss(impl, args, window, soft_cap):
    import jax.numpy as jnp

    from keras_encdec.ops.attention import dot_product_attention

    def loss(q, k, v):
        out = dot_product_attention(
            q, k, v, scale=args.head_dim**-0.5, soft_cap=soft_cap,
            causal=True, sliding_window=window, impl=impl)
        return jnp.sum(out.astype(jnp.float32))

    return loss


def _cudnn_loss(args):
    import jax
    import jax.numpy as jnp

    def loss(q, k, v):
        out = jax.nn.dot_product_attention(
            q, k, v, scale=args.head_dim**-0.5, is_causal=True,
            implementation="cudnn")
        return jnp.sum(out.astype(jnp.float32))

    return loss


def _time(fn, inputs, repeats):
    import jax

    jax.block_until_ready(fn(*inputs))  # compile + warm up
    start = time.perf_counter()
    for _ in range(repeats):
        jax.block_until_ready(fn(*inputs))
    return (time.perf_counter() - start) / repeats


def _measure_jax(loss, inputs, repeats):
    import jax

    grad = jax.jit(jax.value_and_grad(loss, argnums=(0, 1, 2)))
    memory = grad.lower(*inputs).compile().memory_analysis()
    pullback = jax.eval_shape(lambda *a: jax.vjp(loss, *a)[1], *inputs)
    saved = sum(int(np.prod(x.shape)) * x.dtype.itemsize
                for x in jax.tree_util.tree_leaves(pullback))
    seconds = _time(grad, inputs, repeats) if repeats else float("nan")
    return dict(temp=memory.temp_size_in_bytes / MIB, saved=saved / MIB,
                seconds=seconds)


def _print_rows(title, rows, baseline):
    print(f"\n{title}")
    print(f"{'impl':>8} | {'temp MiB':>9} | {'saved MiB':>9} | {'time s':>7} "
          f"| temp/{baseline} | saved/{baseline} | time/{baseline}")
    base = rows[baseline]
    for name, r in rows.items():
        print(f"{name:>8} | {r['temp']:9.1f} | {r['saved']:9.1f} | "
              f"{r['seconds']:7.3f} | {r['temp'] / base['temp']:9.3f} | "
              f"{r['saved'] / base['saved']:10.3f} | "
              f"{r['seconds'] / base['seconds']:9.3f}")


def run_jax(args, impls, dtype, soft_cap=50.0):
    import jax.numpy as jnp

    inputs = [jnp.asarray(x, dtype) for x in _inputs(args, "float32")]
    for window in args.windows:
        rows = {}
        for impl in impls:
            loss = (_cudnn_loss(args) if impl == "cudnn"
                    else _jax_loss(impl, args, window, soft_cap))
            rows[impl] = _measure_jax(loss, inputs, args.repeats)
        _print_rows(f"T=S={args.length} window={window} dtype={dtype}",
                    rows, "dense")


def run_torch(args):
    import torch
    import torch.nn.functional as F

    from keras_encdec.ops.attention import dot_product_attention

    def make(impl, window):
        def step(q, k, v):
            if impl == "sdpa":
                out = F.scaled_dot_product_attention(
                    q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2),
                    is_causal=True, enable_gqa=True)
            else:
                out = dot_product_attention(
                    q, k, v, scale=args.head_dim**-0.5, soft_cap=50.0,
                    causal=True, sliding_window=window, impl=impl)
            out.float().sum().backward()
        return step

    device = "cuda"
    inputs = [torch.tensor(x, device=device, dtype=torch.bfloat16,
                           requires_grad=True)
              for x in _inputs(args, "float32")]
    for window in args.windows:
        print(f"\nT=S={args.length} window={window} bf16")
        for impl in ("dense", "flex", "sdpa"):
            step = make(impl, window)
            step(*inputs)
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            start = time.perf_counter()
            for _ in range(args.repeats):
                step(*inputs)
            torch.cuda.synchronize()
            seconds = (time.perf_counter() - start) / args.repeats
            peak = torch.cuda.max_memory_allocated() / MIB
            print(f"{impl:>8} | peak {peak:9.1f} MiB | {seconds:.4f} s")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--mode", default="cpu",
                        choices=("cpu", "gpu-jax", "gpu-torch"))
    parser.add_argument("--length", type=int, default=4096)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--heads", type=int, default=8)
    parser.add_argument("--kv-heads", type=int, default=4)
    parser.add_argument("--head-dim", type=int, default=256)
    parser.add_argument("--windows", type=int, nargs="+",
                        default=[4096, 512])
    parser.add_argument("--repeats", type=int, default=1,
                        help="timed runs after one warm-up (0: no timing)")
    args = parser.parse_args()
    backend = os.environ.get("KERAS_BACKEND", "jax")
    if args.mode == "gpu-torch":
        if backend != "torch":
            raise SystemExit("--mode gpu-torch needs KERAS_BACKEND=torch")
        run_torch(args)
        return
    if backend != "jax":
        raise SystemExit(f"--mode {args.mode} needs KERAS_BACKEND=jax")
    import keras_encdec  # noqa: F401  (import order: triton first)

    if args.mode == "cpu":
        run_jax(args, ("dense", "xla"), "float32")
    else:
        run_jax(args, ("dense", "pallas", "cudnn"), "bfloat16")


if __name__ == "__main__":
    main()
