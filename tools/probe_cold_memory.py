"""How much slower a jitted matmul chain runs after the process idled.

On a VM where guest memory left untouched is slow to touch again (the
project's CI VM: a Firecracker guest with nested paging), the first call
after an idle gap pays for every page it touches. Interleaved A/B timings
(`benchmark_vs_transformers.py` without `--warm`) include that cost on both
sides. Prints milliseconds per call of 26 chained `[4, 256] x [256, 1024]`
/ `[1024, 256]` matmuls (26 MiB of float32 weights, a T5Gemma decode step's
size): back to back, then the first and second call after each gap.

Usage:
    python tools/probe_cold_memory.py
    python tools/probe_cold_memory.py --gaps 0.02 0.1 0.5 --repeats 5
"""

import argparse
import statistics
import time

import numpy as np


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--gaps", type=float, nargs="+",
                        default=[0.02, 0.1, 0.5], help="idle seconds")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    import jax
    import jax.numpy as jnp

    rng = np.random.default_rng(0)
    weights = [
        jnp.asarray(0.05 * rng.standard_normal(
            (256, 1024) if i % 2 == 0 else (1024, 256)).astype("float32"))
        for i in range(26)
    ]

    @jax.jit
    def chain(x, weights):
        for w in weights:
            x = jnp.tanh(x @ w)
        return x

    x = jnp.ones((4, 256), jnp.float32)
    chain(x, weights).block_until_ready()

    def ms():
        start = time.perf_counter()
        chain(x, weights).block_until_ready()
        return 1000 * (time.perf_counter() - start)

    warm = statistics.median(ms() for _ in range(20))
    print("| idle before the call | first call (ms) | second call (ms) |")
    print("|---|---|---|")
    print(f"| none (back to back) | {warm:.2f} | |")
    for gap in args.gaps:
        first, second = [], []
        for _ in range(args.repeats):
            time.sleep(gap)
            first.append(ms())
            second.append(ms())
        print(f"| {gap:g} s | {statistics.median(first):.2f} "
              f"| {statistics.median(second):.2f} |")


if __name__ == "__main__":
    main()
