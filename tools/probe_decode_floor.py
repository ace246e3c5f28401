"""The weight-streaming floor of a decode step, on XLA's CPU backend and torch.

A greedy decode step of a small encoder-decoder multiplies a few rows
(`[batch, width]`) by every decoder weight once: the self-attention
projections, T5Gemma's cross-attention query and output projections (the
cross keys and values are computed once, before the loop), the three
feed-forward matrices and the tied `[vocab, width]` LM head. This runs just
those products, chained as in a step (each product's rows feed the next, a
ReLU and a residual add in between), in a loop:

- on JAX: a jitted `fori_loop` of `--steps` steps (weights loop-invariant,
  as in `generate`), the LM head vocabulary-major as
  `keras_encdec/models/vocab_major_head.py` runs it; float32, and with
  `--bf16` also bfloat16 weights and rows multiplied with float32
  accumulation (`preferred_element_type`);
- on torch: the same chain in eager mode as transformers runs it
  (`torch.nn.functional.linear` over `[out, in]` weights), at 1 and 2
  intra-op threads.

It prints the weights' MiB, ms per step, microseconds per MiB and the
tokens/s a decode step could reach if it did nothing else (`--batch` rows
per step). Issue 16 used it to bound the jax decode ratio against
transformers on the 2-core CPU VM (BENCHMARKS.md, eleventh session): the
float32 floor of the benchmark's model (`tools/benchmark_vs_transformers.py`,
whose shapes are the defaults here) against transformers' measured tok/s.

Usage:
    python tools/probe_decode_floor.py
    python tools/probe_decode_floor.py --family t5gemma --bf16
    python tools/probe_decode_floor.py --width 640 --ffn 2048 --vocab 262144
"""

import argparse
import statistics
import time


def decode_weight_shapes(family, width, ffn, heads, kv_heads, head_dim,
                         layers, vocab):
    """`(layer, head)`: one decoder layer's weight shapes, by name, and the
    tied LM head's `(vocab, width)` (multiplied vocabulary-major)."""
    q, kv = heads * head_dim, kv_heads * head_dim
    layer = {"query": (width, q), "key": (width, kv), "value": (width, kv),
             "output": (q, width)}
    if family == "t5gemma":  # Cross-attention: its own query and output.
        layer.update(cross_query=(width, q), cross_output=(q, width))
    layer.update(gate=(width, ffn), up=(width, ffn), down=(ffn, width))
    return [layer] * layers, (vocab, width)


def _mib(layers, head, itemsize):
    shapes = [s for layer in layers for s in layer.values()] + [head]
    return sum(a * b for a, b in shapes) * itemsize / 2**20


def _median_seconds(run, repeats):
    """Median seconds of `repeats` calls of `run`, after one untimed call
    (compilation, warm-up)."""
    run()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _step(h, layers, head, matmul, relu, mean, head_logits):
    """One decode step's products on the running rows `h [batch, width]`,
    in a step's order and dependencies: q, k and v read `h`, the output
    projection reads the query (mixed with the keys and values, so none is
    dead code), gate and up read `h`, down their product. Returns the new
    `h` and the logits."""
    for w in layers:
        query = matmul(h, w["query"])
        mixed = query + mean(matmul(h, w["key"])) + mean(matmul(h, w["value"]))
        h = h + 0.01 * matmul(mixed, w["output"])
        if "cross_query" in w:
            h = h + 0.01 * matmul(matmul(h, w["cross_query"]),
                                  w["cross_output"])
        hidden = relu(matmul(h, w["gate"])) * matmul(h, w["up"])
        h = h + 0.01 * matmul(hidden, w["down"])
    return h, head_logits(head, h)


def jax_floor(layers, head, batch, steps, repeats, dtype):
    """Median seconds per step of the weight chain on JAX, `dtype` operands
    (`"float32"` or `"bfloat16"`, accumulating in float32)."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    rng = np.random.default_rng(0)

    def weight(shape):
        return jnp.asarray(rng.normal(0, 0.02, shape).astype("float32"), dtype)

    weights = [{name: weight(shape) for name, shape in layer.items()}
               for layer in layers]
    table = weight(head)
    x = jnp.asarray(rng.normal(size=(batch, head[1])), "float32")

    def matmul(rows, w):
        return jnp.dot(rows.astype(dtype), w,
                       preferred_element_type=jnp.float32)

    def head_logits(table, h):
        by_vocab = jax.lax.dot_general(
            table, h.astype(dtype), (((1,), (1,)), ((), ())),
            preferred_element_type=jnp.float32,
        )
        return jax.lax.optimization_barrier(by_vocab).T

    def body(_, carry):
        h, acc = carry
        h, logits = _step(h, weights, table, matmul, jax.nn.relu,
                          lambda t: jnp.mean(t, -1, keepdims=True),
                          head_logits)
        return h, acc + logits[:, :1]

    @jax.jit
    def run(h):
        return jax.lax.fori_loop(0, steps, body, (h, jnp.zeros((batch, 1))))

    return _median_seconds(lambda: jax.block_until_ready(run(x)),
                           repeats) / steps


def torch_floor(layers, head, batch, steps, repeats, threads):
    """Median seconds per step of the same chain in eager torch (float32)
    at `threads` intra-op threads, each weight stored `[out, in]` and
    applied with `torch.nn.functional.linear`, as `nn.Linear` does."""
    import torch
    from torch.nn.functional import linear

    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        generator = torch.Generator().manual_seed(0)

        def weight(rows, columns):
            return torch.randn(rows, columns, generator=generator) * 0.02

        weights = [{name: weight(cols, rows)  # [out, in]
                    for name, (rows, cols) in layer.items()}
                   for layer in layers]
        table = weight(*head)  # [vocab, width]: `lm_head.weight`
        x = torch.randn(batch, head[1], generator=generator)

        def step(h):
            return _step(h, weights, table, linear, torch.relu,
                         lambda t: t.mean(-1, keepdim=True), linear)

        def run():
            h = x
            for _ in range(steps):
                h, _ = step(h)

        with torch.inference_mode():
            return _median_seconds(run, repeats) / steps
    finally:
        torch.set_num_threads(previous)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--family", choices=["t5gemma", "t5gemma2"],
                        default="t5gemma2")
    parser.add_argument("--width", type=int, default=256)
    parser.add_argument("--ffn", type=int, default=1024)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--kv-heads", type=int, default=2)
    parser.add_argument("--head-dim", type=int, default=64)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--vocab", type=int, default=8192)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--steps", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--bf16", action="store_true",
                        help="also bfloat16 weights on JAX (float32 sums)")
    parser.add_argument("--no-torch", action="store_true")
    args = parser.parse_args(argv)
    for name in ("width", "ffn", "heads", "kv_heads", "head_dim", "layers",
                 "vocab", "batch", "steps", "repeats"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1; "
                         f"received {getattr(args, name)}.")
    layers, head = decode_weight_shapes(
        args.family, args.width, args.ffn, args.heads, args.kv_heads,
        args.head_dim, args.layers, args.vocab)
    loop = dict(batch=args.batch, steps=args.steps, repeats=args.repeats)
    # (name, bytes per weight, seconds per step)
    runs = [("jax float32", 4, lambda: jax_floor(
        layers, head, dtype="float32", **loop))]
    if args.bf16:
        runs.append(("jax bfloat16", 2, lambda: jax_floor(
            layers, head, dtype="bfloat16", **loop)))
    if not args.no_torch:
        for threads in (1, 2):
            runs.append((f"torch float32, {threads} thread(s)", 4,
                         lambda t=threads: torch_floor(
                             layers, head, threads=t, **loop)))
    print(f"{args.family}: {sum(map(len, layers)) + 1} products a step, batch "
          f"{args.batch}, {args.steps}-step loop, medians of {args.repeats}")
    print("| run | weights MiB | ms/step | us/MiB | floor tok/s |")
    print("|---|---|---|---|---|")
    for name, itemsize, fn in runs:
        seconds = fn()
        mib = _mib(layers, head, itemsize)
        print(f"| {name} | {mib:.1f} | {seconds * 1e3:.3f} | "
              f"{seconds * 1e6 / mib:.1f} | {args.batch / seconds:.0f} |",
              flush=True)


if __name__ == "__main__":
    main()
