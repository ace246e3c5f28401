"""Ours vs keras-hub's T5Gemma, side by side in one run, per backend.

Measures on the same config, backend and inputs:
- forward + backward train step (ms, median of `--steps` after warm-up);
- cached greedy `generate` throughput (new tokens/s over the batch) and
  per-token decode cost at two output lengths (flat means no growth).

Usage:
    python tools/benchmark_model.py                      # jax and torch
    python tools/benchmark_model.py --backends jax --steps 3

Each backend runs in its own subprocess (KERAS_BACKEND is per process); the
table printed at the end gives absolute figures and ours/keras-hub ratios.
Config defaults follow ANCHORS: V=8192, width 256, 4+4 layers, batch 4,
length 256, float32.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

CONFIG = dict(
    vocabulary_size=8192,
    hidden_dim=256,
    intermediate_dim=512,
    num_layers=4,
    num_heads=4,
    num_kv_heads=2,
    head_dim=64,
)


def _models(config):
    import keras_hub
    import numpy as np

    import keras
    from keras_encdec.models import T5GemmaBackbone
    from keras_encdec.models import T5GemmaSeq2SeqLM

    types = ["sliding_attention", "full_attention"] * (config["num_layers"] // 2)
    keras.utils.set_random_seed(0)
    theirs = keras_hub.models.T5GemmaSeq2SeqLM(
        keras_hub.models.T5GemmaBackbone(
            vocabulary_size=config["vocabulary_size"],
            **{
                f"{side}_{name}": config[key]
                for side in ("encoder", "decoder")
                for name, key in (
                    ("hidden_dim", "hidden_dim"),
                    ("intermediate_dim", "intermediate_dim"),
                    ("num_layers", "num_layers"),
                    ("num_attention_heads", "num_heads"),
                    ("num_key_value_heads", "num_kv_heads"),
                    ("head_dim", "head_dim"),
                )
            },
            encoder_layer_types=types,
            decoder_layer_types=types,
            sliding_window=4096,
            query_pre_attn_scalar=config["head_dim"],
            attn_logit_softcapping=50.0,
            final_logit_softcapping=30.0,
        )
    )
    ours = T5GemmaSeq2SeqLM(
        T5GemmaBackbone(
            vocabulary_size=config["vocabulary_size"],
            **{
                f"{side}_{name}": config[name]
                for side in ("encoder", "decoder")
                for name in (
                    "hidden_dim",
                    "intermediate_dim",
                    "num_layers",
                    "num_heads",
                    "num_kv_heads",
                    "head_dim",
                )
            },
            encoder_sliding_window=4096,
            decoder_sliding_window=4096,
        )
    )
    assert theirs.count_params() == ours.count_params(), "configs differ"
    return {"keras_hub": theirs, "ours": ours}, np


def _median_seconds(fn, repeats):
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def run_backend(args):
    """Runs every measurement on this process's backend; prints JSON."""
    import keras

    models, np = _models(CONFIG)
    rng = np.random.default_rng(0)
    batch, length = args.batch, args.length
    x = {
        "encoder_token_ids": rng.integers(3, CONFIG["vocabulary_size"],
                                          (batch, length)).astype("int32"),
        "encoder_padding_mask": np.ones((batch, length), "int32"),
        "decoder_token_ids": rng.integers(3, CONFIG["vocabulary_size"],
                                          (batch, length)).astype("int32"),
        "decoder_padding_mask": np.ones((batch, length), "int32"),
    }
    y = rng.integers(3, CONFIG["vocabulary_size"], (batch, length)).astype("int32")
    results = {}
    for name, lm in models.items():
        lm.compile(
            optimizer=keras.optimizers.Adam(1e-4),
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            sampler="greedy",
        )
        lm.train_on_batch(x, y)  # Compile / warm up.
        train = _median_seconds(lambda: lm.train_on_batch(x, y), args.steps)
        entry = {"train_step_ms": 1000 * train}
        for new_tokens in args.new_tokens:
            prompt = dict(x)
            ids = np.zeros((batch, new_tokens + 1), "int32")
            ids[:, 0] = 2
            mask = np.zeros_like(ids)
            mask[:, 0] = 1
            prompt["decoder_token_ids"], prompt["decoder_padding_mask"] = ids, mask
            generate = lambda: lm.generate(prompt, stop_token_ids=None)  # noqa
            generate()  # Compile / warm up at this length.
            seconds = _median_seconds(generate, args.generate_repeats)
            entry[f"generate_{new_tokens}_tok_per_s"] = batch * new_tokens / seconds
            entry[f"generate_{new_tokens}_ms_per_step"] = 1000 * seconds / new_tokens
        results[name] = entry
    print("RESULTS " + json.dumps({"backend": keras.backend.backend(), **results}))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--backends", nargs="+", default=["jax", "torch"])
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--length", type=int, default=256)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--new-tokens", type=int, nargs="+", default=[64, 256])
    parser.add_argument("--generate-repeats", type=int, default=2)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return run_backend(args)
    rows = []
    for backend in args.backends:
        command = [sys.executable, __file__, "--worker"] + [
            a for a in sys.argv[1:] if a != "--worker"
        ]
        env = dict(os.environ, KERAS_BACKEND=backend, TF_CPP_MIN_LOG_LEVEL="3")
        out = subprocess.run(command, env=env, capture_output=True, text=True)
        line = [l for l in out.stdout.splitlines() if l.startswith("RESULTS ")]
        if not line:
            print(out.stdout[-2000:], out.stderr[-4000:])
            raise SystemExit(f"{backend} run failed")
        rows.append(json.loads(line[0][len("RESULTS "):]))
    metrics = [k for k in rows[0]["ours"]]
    print(f"\nbatch={args.batch} length={args.length} config={CONFIG}\n")
    print("| backend | metric | keras-hub | ours | ours / keras-hub |")
    print("|---|---|---|---|---|")
    for row in rows:
        for metric in metrics:
            theirs, ours = row["keras_hub"][metric], row["ours"][metric]
            print(f"| {row['backend']} | {metric} | {theirs:.1f} | {ours:.1f} "
                  f"| {ours / theirs:.2f} |")


if __name__ == "__main__":
    main()
