"""XLA CPU: a decode step's LM head through the tied table or its transpose.

A tied LM head multiplies the decoder's few rows (`[batch, width]`) by the
`[vocab, width]` embedding table transposed. This times, per step of a
16-step `jax.lax.fori_loop` (weights loop-invariant, as in a decode loop),
`x @ table.T` against `x @ head` with `head` the table transposed once,
ahead of time (plus the cost of that one transpose), and against
`(table @ x.T).T` with an optimization barrier before the transpose, the
vocabulary-major product that `keras_encdec/models/vocab_major_head.py`
runs in cached decoder passes. Issue 16 used it to decide against
transposing the head once per `generate` call (on the 2-core CPU VM the
transposed copy wins for the benchmark's 8192 x 256 table and loses at
Gemma's 262144 x 640; BENCHMARKS.md, seventh session) and for the
vocabulary-major product (eighth session).

Usage:
    python tools/probe_lm_head_orientation.py            # both shapes
    python tools/probe_lm_head_orientation.py --shapes 65536x256 --batch 8
"""

import argparse
import statistics
import time

STEPS = 16


def _median_seconds(fn, *args, repeats):
    fn(*args).block_until_ready()  # Compile.
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn(*args).block_until_ready()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def probe(vocab, width, batch, repeats):
    """`(transpose ms, ms/step through table.T, ms/step through head,
    ms/step vocabulary-major)`."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    table = jnp.asarray(
        np.random.default_rng(0).normal(size=(vocab, width)).astype("float32")
    )
    head = jnp.array(table.T)
    x = jnp.ones((batch, width), "float32")

    def vocab_major(weights, h):
        by_vocab = jax.lax.dot_general(weights, h, (((1,), (1,)), ((), ())))
        return jax.lax.optimization_barrier(by_vocab).T

    def loop(weights, transposed, by_vocab=False):
        def body(_, h):
            if by_vocab:
                logits = vocab_major(weights, h)
            else:
                logits = h @ (weights.T if transposed else weights)
            return h + 1e-9 * jnp.max(logits)

        return jax.lax.fori_loop(0, STEPS, body, x)

    transpose = _median_seconds(jax.jit(jnp.transpose), table,
                                repeats=repeats)
    through_table = _median_seconds(
        jax.jit(lambda w: loop(w, True)), table, repeats=repeats) / STEPS
    through_head = _median_seconds(
        jax.jit(lambda w: loop(w, False)), head, repeats=repeats) / STEPS
    by_vocab = _median_seconds(
        jax.jit(lambda w: loop(w, False, True)), table, repeats=repeats
    ) / STEPS
    return (1e3 * transpose, 1e3 * through_table, 1e3 * through_head,
            1e3 * by_vocab)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--shapes", nargs="+",
                        default=["8192x256", "262144x640"],
                        help="vocab x width of each table")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    print(f"batch={args.batch}, {STEPS} steps per loop, float32, medians "
          f"of {args.repeats}")
    print("| table | transpose once (ms) | x @ table.T (ms/step) "
          "| x @ head (ms/step) | (table @ x.T).T (ms/step) "
          "| table.T / head | table.T / vocabulary-major |")
    print("|---|---|---|---|---|---|---|")
    for shape in args.shapes:
        try:
            vocab, width = (int(n) for n in shape.lower().split("x"))
        except ValueError:
            parser.error(f"--shapes takes VOCABxWIDTH, e.g. 8192x256; "
                         f"received {shape!r}")
        transpose, through_table, through_head, by_vocab = probe(
            vocab, width, args.batch, args.repeats)
        print(f"| {vocab} x {width} | {transpose:.1f} | {through_table:.3f} "
              f"| {through_head:.3f} | {by_vocab:.3f} "
              f"| {through_table / through_head:.2f}x "
              f"| {through_table / by_vocab:.2f}x |", flush=True)


if __name__ == "__main__":
    main()
