"""Benchmark the chunked linear cross-entropy against the dense loss.

Prints one table, every method measured side by side in this run: forward
ms, forward+backward ms, memory and ratios vs dense.

CPU (default): jax, N=4096, D=512, V=32768, float32, "xla" vs "dense".
Memory is the compiled program's `memory_analysis()` of the
forward+backward step: "temp" is the working memory beyond inputs and
outputs; "peak" = arguments + outputs + temp - aliased.

    KERAS_BACKEND=jax .venv/bin/python tools/benchmark_loss.py

GPU (`--gpu`): the Gemma 2 2B problem (N=8192, D=2304, V=256000, bf16,
soft-cap 30). One subprocess per backend:
- jax: "dense", "xla", "pallas" and `tokamax` (if importable; it has no
  soft-cap, so it runs uncapped and is marked so). Memory: `memory_analysis`.
- torch: "dense", "xla", "triton", apple `cut-cross-entropy` and
  `liger-kernel` (if importable). Memory: `torch.cuda.max_memory_allocated`
  during the step minus the inputs.

    .venv/bin/python tools/benchmark_loss.py --gpu

Timings take the minimum of `--repeats` runs after one warm-up, methods
interleaved so that machine noise hits every method alike.
"""

import argparse
import json
import os
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MB = 2**20


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--gpu", action="store_true",
                   help="Gemma 2 2B problem on a GPU, all libraries.")
    p.add_argument("--n", type=int, default=None)
    p.add_argument("--d", type=int, default=None)
    p.add_argument("--v", type=int, default=None)
    p.add_argument("--dtype", default=None)
    p.add_argument("--soft-cap", type=float, default=None)
    p.add_argument("--chunk-size", type=int, default=None)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--methods", default=None,
                   help="Comma list; default: all for the mode.")
    p.add_argument("--worker", choices=["jax", "torch"], default=None,
                   help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    gpu_defaults = dict(n=8192, d=2304, v=256000, dtype="bfloat16",
                        soft_cap=30.0)
    cpu_defaults = dict(n=4096, d=512, v=32768, dtype="float32",
                        soft_cap=None)
    for key, value in (gpu_defaults if args.gpu else cpu_defaults).items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    return args


def selected(methods, args):
    """Keeps the methods named in `--methods` (all when unset)."""
    if not args.methods:
        return methods
    keep = set(args.methods.split(","))
    return {k: v for k, v in methods.items() if k in keep}


def make_inputs(args, np):
    rng = np.random.default_rng(0)
    hidden = rng.normal(size=(args.n, args.d)).astype("float32")
    embedding = (rng.normal(size=(args.v, args.d)) / args.d**0.5).astype(
        "float32")
    labels = rng.integers(0, args.v, size=(args.n,)).astype("int32")
    return hidden, embedding, labels


def jax_methods(args):
    """Returns {name: (loss_fn(h, e, y), note)} for the jax worker."""
    from keras_encdec.losses import linear_cross_entropy
    from keras_encdec.losses.chunked import DEFAULT_VOCAB_CHUNK

    methods = {}
    for impl in ("dense", "xla", "pallas"):
        def fn(h, e, y, impl=impl):
            return linear_cross_entropy(
                h, e, y, impl=impl, logit_soft_cap=args.soft_cap,
                chunk_size=None if impl == "dense" else args.chunk_size)
        methods[impl] = (fn, "")
    if args.chunk_size is None:
        # "xla" with a reduction and the default chunking builds the
        # gradient in the forward (token chunks); a chunk size selects the
        # vocabulary walk (`losses/chunked.py`).
        methods["xla-vocab-walk"] = (
            lambda h, e, y: linear_cross_entropy(
                h, e, y, impl="xla", logit_soft_cap=args.soft_cap,
                chunk_size=DEFAULT_VOCAB_CHUNK), "vocabulary chunks")
    try:
        import tokamax

        def tokamax_fn(h, e, y):
            return tokamax.linear_softmax_cross_entropy_loss(
                h, y, e.T, reduction="mean")
        methods["tokamax"] = (tokamax_fn, "no soft-cap")
    except ImportError:
        pass
    return methods


def run_jax(args):
    import jax
    import jax.numpy as jnp
    import numpy as np

    on_accel = jax.default_backend() in ("gpu", "tpu")
    h, e, y = (jnp.asarray(x) for x in make_inputs(args, np))
    h, e = h.astype(args.dtype), e.astype(args.dtype)
    rows, steps = {}, {}
    for name, (fn, note) in selected(jax_methods(args), args).items():
        if name == "pallas" and not on_accel:
            continue
        fwd = jax.jit(fn)
        both = jax.jit(jax.value_and_grad(fn, argnums=(0, 1)))
        mem = both.lower(h, e, y).compile().memory_analysis()
        fwd_mem = fwd.lower(h, e, y).compile().memory_analysis()
        rows[name] = dict(
            note=note,
            fwd_temp_mb=fwd_mem.temp_size_in_bytes / MB,
            temp_mb=mem.temp_size_in_bytes / MB,
            peak_mb=(mem.argument_size_in_bytes + mem.output_size_in_bytes
                     + mem.temp_size_in_bytes - mem.alias_size_in_bytes) / MB,
            fwd_ms=[], both_ms=[],
        )
        steps[name] = (fwd, both)
        jax.block_until_ready(both(h, e, y))  # compile + warm up
        jax.block_until_ready(fwd(h, e, y))
    for _ in range(args.repeats):
        for name, (fwd, both) in steps.items():
            for key, f in (("fwd_ms", fwd), ("both_ms", both)):
                start = time.perf_counter()
                jax.block_until_ready(f(h, e, y))
                rows[name][key].append((time.perf_counter() - start) * 1e3)
    return rows


def torch_methods(args):
    from keras_encdec.losses import linear_cross_entropy

    methods = {}
    for impl in ("dense", "xla", "triton"):
        def fn(h, e, y, impl=impl):
            return linear_cross_entropy(
                h, e, y, impl=impl, logit_soft_cap=args.soft_cap,
                chunk_size=None if impl in ("dense", "triton")
                else args.chunk_size)
        methods[impl] = (fn, "")
    try:
        from cut_cross_entropy import linear_cross_entropy as cce

        methods["apple-cce"] = (
            lambda h, e, y: cce(h, e, y, softcap=args.soft_cap), "")
    except ImportError:
        pass
    try:
        from liger_kernel.transformers import LigerFusedLinearCrossEntropyLoss

        liger = LigerFusedLinearCrossEntropyLoss(softcap=args.soft_cap)
        methods["liger"] = (lambda h, e, y: liger(e, h, y), "")
    except ImportError:
        pass
    return methods


def run_torch(args):
    import numpy as np
    import torch

    dev = "cuda"
    dtype = getattr(torch, args.dtype)
    h0, e0, y0 = make_inputs(args, np)
    h = torch.tensor(h0, device=dev, dtype=dtype, requires_grad=True)
    e = torch.tensor(e0, device=dev, dtype=dtype, requires_grad=True)
    y = torch.tensor(y0, device=dev, dtype=torch.int64)
    methods = selected(torch_methods(args), args)
    rows = {name: dict(note=note, fwd_ms=[], both_ms=[])
            for name, (_, note) in methods.items()}

    def step(fn, backward):
        h.grad = e.grad = None
        torch.cuda.synchronize()
        start = time.perf_counter()
        if backward:
            fn(h, e, y).backward()
        else:
            with torch.no_grad():
                fn(h, e, y)
        torch.cuda.synchronize()
        return (time.perf_counter() - start) * 1e3

    for name, (fn, _) in methods.items():
        for backward, key in ((False, "fwd_temp_mb"), (True, "temp_mb")):
            step(fn, backward)  # warm-up / autotune
            h.grad = e.grad = None
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            base = torch.cuda.memory_allocated()
            step(fn, backward)
            rows[name][key] = (torch.cuda.max_memory_allocated() - base) / MB
        rows[name]["peak_mb"] = rows[name]["temp_mb"] + base / MB
    for _ in range(args.repeats):
        for name, (fn, _) in methods.items():
            rows[name]["fwd_ms"].append(step(fn, False))
            rows[name]["both_ms"].append(step(fn, True))
    return rows


def print_table(args, results):
    print(f"\nN={args.n} D={args.d} V={args.v} dtype={args.dtype} "
          f"soft_cap={args.soft_cap} chunk_size={args.chunk_size}")
    head = ("backend", "method", "fwd ms", "fwd+bwd ms", "fwd temp MB",
            "fwd+bwd temp MB", "fwd+bwd peak MB", "time / dense",
            "temp / dense", "note")
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for backend, rows in results.items():
        dense = rows.get("dense")
        for name, r in rows.items():
            fwd, both = min(r["fwd_ms"]), min(r["both_ms"])
            t_ratio = both / min(dense["both_ms"]) if dense else float("nan")
            m_ratio = (r["temp_mb"] / dense["temp_mb"]
                       if dense and dense["temp_mb"] else float("nan"))
            print(f"| {backend} | {name} | {fwd:.0f} | {both:.0f} | "
                  f"{r['fwd_temp_mb']:.1f} | {r['temp_mb']:.1f} | "
                  f"{r['peak_mb']:.1f} | {t_ratio:.2f}x | "
                  f"{100 * m_ratio:.1f}% | {r['note']} |")


def main(argv=None):
    args = parse_args(argv)
    if args.worker:
        sys.path.insert(0, ROOT)
        rows = run_jax(args) if args.worker == "jax" else run_torch(args)
        print("RESULT " + json.dumps(rows))
        return
    backends = ["jax", "torch"] if args.gpu else ["jax"]
    results = {}
    for backend in backends:
        cmd = [sys.executable, os.path.abspath(__file__), "--worker", backend]
        cmd += argv if argv is not None else sys.argv[1:]
        env = dict(os.environ, KERAS_BACKEND=backend)
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
        lines = [l for l in proc.stdout.splitlines() if l.startswith("RESULT ")]
        if proc.returncode or not lines:
            print(f"{backend} worker failed:\n{proc.stderr[-4000:]}")
            continue
        results[backend] = json.loads(lines[-1][len("RESULT "):])
    print_table(args, results)


if __name__ == "__main__":
    main()
