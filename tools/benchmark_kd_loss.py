"""Benchmark the chunked distillation loss against the dense KL.

`keras_encdec.losses.linear_kl_divergence`, `impl="xla"` (chunked over the
vocabulary, custom gradient) vs `impl="dense"` (both sides' `[N, V]` logits),
on jax, with and without soft-caps, every row measured in this one run.
Memory is the compiled forward+backward program's `memory_analysis()`
("temp": working memory beyond inputs and outputs; "peak" = arguments +
outputs + temp - aliased). Time is the minimum of `--repeats` runs after a
warm-up, methods interleaved so machine noise hits each alike. Gradients
are taken with respect to the student's hidden states and embedding.

    KERAS_BACKEND=jax .venv/bin/python tools/benchmark_kd_loss.py

Defaults: N=4096, D=640 (student and teacher), V=65536, float32,
temperature 2, soft-caps off and 30 / 30.
"""

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("KERAS_BACKEND", "jax")

MB = 2**20


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--n", type=int, default=4096)
    p.add_argument("--d", type=int, default=640)
    p.add_argument("--v", type=int, default=65536)
    p.add_argument("--dtype", default="float32")
    p.add_argument("--temperature", type=float, default=2.0)
    p.add_argument("--soft-caps", type=float, nargs="*", default=[0.0, 30.0],
                   help="Soft-cap settings to run (0 = none); both sides.")
    p.add_argument("--chunk-size", type=int, default=None)
    p.add_argument("--repeats", type=int, default=2)
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    import jax
    import jax.numpy as jnp
    import numpy as np

    from keras_encdec.losses import linear_kl_divergence

    rng = np.random.default_rng(0)

    def array(*shape, scale=1.0):
        x = rng.normal(size=shape).astype("float32") * scale
        return jnp.asarray(x, dtype=args.dtype)

    h, th = array(args.n, args.d), array(args.n, args.d)
    e = array(args.v, args.d, scale=args.d**-0.5)
    te = array(args.v, args.d, scale=args.d**-0.5)
    steps, rows = {}, {}
    for cap in args.soft_caps:
        cap = cap or None
        for impl in ("dense", "xla"):
            def loss(h_, e_, th_, te_, impl=impl, cap=cap):
                return linear_kl_divergence(
                    h_, e_, th_, te_, temperature=args.temperature,
                    logit_soft_cap=cap, teacher_logit_soft_cap=cap,
                    impl=impl,
                    chunk_size=None if impl == "dense" else args.chunk_size)

            step = jax.jit(jax.value_and_grad(loss, argnums=(0, 1)))
            mem = step.lower(h, e, th, te).compile().memory_analysis()
            key = (cap, impl)
            rows[key] = dict(
                temp=mem.temp_size_in_bytes / MB,
                peak=(mem.argument_size_in_bytes + mem.output_size_in_bytes
                      + mem.temp_size_in_bytes - mem.alias_size_in_bytes) / MB,
                ms=[],
            )
            rows[key]["value"] = float(
                jax.block_until_ready(step(h, e, th, te))[0])  # warm-up
            steps[key] = step
    for _ in range(args.repeats):
        for key, step in steps.items():
            start = time.perf_counter()
            jax.block_until_ready(step(h, e, th, te))
            rows[key]["ms"].append((time.perf_counter() - start) * 1e3)

    print(f"\nN={args.n} D={args.d} V={args.v} dtype={args.dtype} "
          f"temperature={args.temperature} chunk_size={args.chunk_size} "
          f"repeats={args.repeats} jax={jax.__version__} "
          f"device={jax.default_backend()}")
    head = ("soft-caps", "method", "loss", "fwd+bwd ms", "temp MB",
            "peak MB", "time / dense", "temp / dense")
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for (cap, impl), r in rows.items():
        dense = rows[(cap, "dense")]
        print(f"| {cap or 'none'} | {impl} | {r['value']:.6f} | "
              f"{min(r['ms']):.0f} | {r['temp']:.1f} | {r['peak']:.1f} | "
              f"{min(r['ms']) / min(dense['ms']):.2f}x | "
              f"{100 * r['temp'] / dense['temp']:.1f}% |")


if __name__ == "__main__":
    main()
