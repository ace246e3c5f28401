"""Ours vs keras-hub's T5Gemma or T5Gemma 2, side by side in one run.

Measures on the same config, backend and inputs:
- forward + backward train step (ms, median of `--steps` after warm-up);
- cached greedy `generate` throughput (new tokens/s over the batch) and
  per-token decode cost at two output lengths (flat means no growth).

Usage:
    python tools/benchmark_model.py                      # jax and torch
    python tools/benchmark_model.py --backends jax --steps 3
    python tools/benchmark_model.py --family t5gemma2    # T5Gemma 2

`--family t5gemma2` builds keras-hub's `T5Gemma2Seq2SeqLM` (text only),
saves it as a keras-hub preset and loads that folder with our
`T5Gemma2Seq2SeqLM.from_preset`, so both run the very same weights (the
loader checks that keras-hub's two embedding tables are equal). Layers
alternate sliding and full attention, window 4096 (full at this length),
no attention soft-cap (transformers ignores it; keras-hub applies it),
final soft-cap 30.

Both families load keras-hub's saved preset folder through our
`from_preset`, so ours and keras-hub's run identical weights; the table's
first row per backend is the max-abs logit difference between the two.

Each backend runs in its own subprocess (KERAS_BACKEND is per process); the
table printed at the end gives absolute figures and ours/keras-hub ratios.
Config defaults follow ANCHORS: V=8192, width 256, 4+4 layers, batch 4,
length 256, float32.
"""

import argparse
import atexit
import json
import os
import shutil
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


def _keras_hub_stacks(config):
    """keras-hub's per-stack keyword arguments for `config` (both stacks
    alike)."""
    return {
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
    }


def _models(config):
    import tempfile

    import keras_hub
    import numpy as np

    import keras
    from keras_encdec.models import T5GemmaSeq2SeqLM

    types = ["sliding_attention", "full_attention"] * (config["num_layers"] // 2)
    keras.utils.set_random_seed(0)
    theirs = keras_hub.models.T5GemmaSeq2SeqLM(
        keras_hub.models.T5GemmaBackbone(
            vocabulary_size=config["vocabulary_size"],
            **_keras_hub_stacks(config),
            encoder_layer_types=types,
            decoder_layer_types=types,
            sliding_window=4096,
            query_pre_attn_scalar=config["head_dim"],
            attn_logit_softcapping=50.0,
            final_logit_softcapping=30.0,
        )
    )
    # Our keras-hub loader reads the very same weights.
    folder = tempfile.mkdtemp(prefix="t5gemma_bench_")
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    theirs.backbone.save_to_preset(folder)
    ours = T5GemmaSeq2SeqLM.from_preset(folder)
    assert theirs.count_params() == ours.count_params(), "configs differ"
    return {"keras_hub": theirs, "ours": ours}, np


def _t5gemma2_models(config):
    import tempfile

    import keras_hub
    import numpy as np

    import keras
    from keras_encdec.models import T5Gemma2Seq2SeqLM

    types = ["sliding_attention", "full_attention"] * (config["num_layers"] // 2)
    keras.utils.set_random_seed(0)
    theirs = keras_hub.models.T5Gemma2Seq2SeqLM(
        keras_hub.models.T5Gemma2Backbone(
            vocabulary_size=config["vocabulary_size"],
            **_keras_hub_stacks(config),
            encoder_layer_types=types,
            decoder_layer_types=types,
            sliding_window=4096,
            query_pre_attn_scalar=config["head_dim"],
            final_logit_softcapping=30.0,
        )
    )
    # A fresh keras-hub model has two different random tables; tie them as
    # a converted checkpoint has them, so one set of weights serves both.
    backbone = theirs.backbone
    # (A numpy copy: two jax variables sharing one buffer cannot both be
    # donated to the train step.)
    backbone.decoder_token_embedding.embeddings.assign(
        keras.ops.convert_to_numpy(backbone.token_embedding.embeddings)
    )
    folder = tempfile.mkdtemp(prefix="t5gemma2_bench_")
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    theirs.backbone.save_to_preset(folder)
    ours = T5Gemma2Seq2SeqLM.from_preset(folder)
    # keras-hub keeps two copies of the shared table; ours keeps one, plus
    # the EOI row that keras-hub only creates with a vision encoder.
    table = config["vocabulary_size"] * config["hidden_dim"]
    eoi = config["hidden_dim"]
    assert theirs.count_params() == ours.count_params() + table - eoi, (
        "configs differ"
    )
    return {"keras_hub": theirs, "ours": ours}, np


def _interleaved_medians(calls, repeats):
    """Median seconds of each of `calls` ({name: fn}), run in turns."""
    times = {name: [] for name in calls}
    for _ in range(repeats):
        for name, fn in calls.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}


def run_backend(args):
    """Runs every measurement on this process's backend; prints JSON."""
    import keras

    if args.torch_threads and keras.backend.backend() == "torch":
        import torch

        torch.set_num_threads(args.torch_threads)

    build = _t5gemma2_models if args.family == "t5gemma2" else _models
    models, np = build(CONFIG)
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
    logits = {
        name: keras.ops.convert_to_numpy(lm(x)) for name, lm in models.items()
    }
    gap = float(np.max(np.abs(logits["ours"] - logits["keras_hub"])))
    # Timed calls alternate between the two models (A B A B ...), so load
    # from other processes hits both alike; each figure is the median.
    for lm in models.values():
        lm.compile(
            optimizer=keras.optimizers.Adam(1e-4),
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            sampler="greedy",
        )
        lm.train_on_batch(x, y)  # Compile / warm up.
    train = _interleaved_medians(
        {n: (lambda lm=lm: lm.train_on_batch(x, y)) for n, lm in models.items()},
        args.steps,
    )
    results = {n: {"train_step_ms": 1000 * t} for n, t in train.items()}
    for new_tokens in args.new_tokens:
        prompt = dict(x)
        ids = np.zeros((batch, new_tokens + 1), "int32")
        ids[:, 0] = 2
        mask = np.zeros_like(ids)
        mask[:, 0] = 1
        prompt["decoder_token_ids"], prompt["decoder_padding_mask"] = ids, mask
        calls = {
            n: (lambda lm=lm: lm.generate(prompt, stop_token_ids=None))
            for n, lm in models.items()
        }
        for call in calls.values():
            call()  # Compile / warm up at this length.
        seconds = _interleaved_medians(calls, args.generate_repeats)
        for n, sec in seconds.items():
            results[n][f"generate_{new_tokens}_tok_per_s"] = batch * new_tokens / sec
            results[n][f"generate_{new_tokens}_ms_per_step"] = 1000 * sec / new_tokens
    print("RESULTS " + json.dumps(
        {"backend": keras.backend.backend(), "logits_max_abs": gap, **results}
    ))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--family", choices=["t5gemma", "t5gemma2"],
                        default="t5gemma")
    parser.add_argument("--backends", nargs="+", default=["jax", "torch"])
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--length", type=int, default=256)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--new-tokens", type=int, nargs="+", default=[64, 256])
    parser.add_argument("--generate-repeats", type=int, default=2)
    parser.add_argument("--torch-threads", type=int, default=0,
                        help="torch intra-op threads (both models share the "
                        "process); 0 keeps torch's default. 1 gives stable "
                        "figures on a loaded CPU")
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
    print(f"\nfamily={args.family} batch={args.batch} length={args.length} "
          f"config={CONFIG}\n")
    print("| backend | metric | keras-hub | ours | ours / keras-hub |")
    print("|---|---|---|---|---|")
    for row in rows:
        print(f"| {row['backend']} | logits max-abs, ours vs keras-hub | "
              f"{row['logits_max_abs']:.1e} | | |")
        for metric in metrics:
            theirs, ours = row["keras_hub"][metric], row["ours"][metric]
            print(f"| {row['backend']} | {metric} | {theirs:.1f} | {ours:.1f} "
                  f"| {ours / theirs:.2f} |")


if __name__ == "__main__":
    main()
