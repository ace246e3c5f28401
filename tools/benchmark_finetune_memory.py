"""Peak memory of one LoRA fine-tuning step, from the compiled JAX program.

No weights are allocated: models are built inside a `keras.StatelessScope`
(Keras defers variable initialization there), every weight is a
`jax.ShapeDtypeStruct`, and the SGD step on the LoRA factors is only lowered
and compiled. Reported per row:

- peak GiB: `argument + output + temp - alias` of `memory_analysis()`
  (arguments are the weights and the batch; the trainable LoRA factors are
  donated, so their updates alias them);
- weights GiB: the argument size;
- saved GiB: arrays autodiff keeps for the backward pass (`jax.vjp`
  residuals, device independent).

XLA's CPU compiler upcasts many bf16 ops to float32, so CPU figures are upper
bounds: compare the ratios.

Rows:

- `a`: ours, chunked loss (`keras_encdec.losses.linear_cross_entropy`,
  `impl="xla"`) + blockwise attention (`impl="xla"`). (Remat is not in
  this release; see BENCHMARKS.md.)
  Runs only when `keras_encdec.losses` imports (the loss module lands
  separately); otherwise it is reported as skipped.
- `b`: ours, dense loss (full `[T, V]` logits), default attention.
- `b+xla`: the dense-loss model with blockwise attention added,
  to show what each one buys.
- `c`: keras-hub 0.32 `T5GemmaBackbone`, same config, dense loss.

Usage:

    KERAS_BACKEND=jax python tools/benchmark_finetune_memory.py \\
        --length 1024 --rows b b+xla c a
"""

import argparse
import json
import os
import time

os.environ.setdefault("KERAS_BACKEND", "jax")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import keras  # noqa: E402
import numpy as np  # noqa: E402

PRESET = os.path.join(
    os.path.dirname(__file__), "..", "presets", "t5gemma",
    "t5gemma_2b_2b_prefixlm.json",
)
GIB = 1024**3
LORA_TARGET = ["query", "value"]  # keras-hub's default LoRA layers
ROWS = ("a", "b", "b+xla", "c")


def load_config():
    with open(PRESET) as f:
        return json.load(f)["config"]


def build_ours(config, attention_impl=None):
    from keras_encdec.models import T5GemmaBackbone

    config = dict(config, attention_impl=attention_impl)
    with keras.StatelessScope():
        backbone = T5GemmaBackbone(**config, dtype="bfloat16")
        backbone.enable_lora(16, target=LORA_TARGET)
    return backbone, backbone.decoder_token_embedding


def build_keras_hub(config):
    from keras_hub.models import T5GemmaBackbone as HubBackbone

    rename = {
        "num_heads": "num_attention_heads",
        "num_kv_heads": "num_key_value_heads",
    }
    hub = {"vocabulary_size": config["vocabulary_size"]}
    for side in ("encoder", "decoder"):
        for name in ("hidden_dim", "intermediate_dim", "num_layers",
                     "num_heads", "num_kv_heads", "head_dim", "layer_types"):
            hub[f"{side}_{rename.get(name, name)}"] = config[f"{side}_{name}"]
    hub.update(
        query_pre_attn_scalar=config["decoder_query_pre_attn_scalar"],
        sliding_window=config["decoder_sliding_window"],
        attn_logit_softcapping=config["decoder_attention_logit_soft_cap"],
        final_logit_softcapping=config["final_logit_soft_cap"],
        cross_attention_hidden_size=config["encoder_hidden_dim"],
        tie_word_embeddings=True,
    )
    with keras.StatelessScope():
        backbone = HubBackbone(**hub, dtype="bfloat16")
        backbone.enable_lora(16, target_layer_names=LORA_TARGET)
    embedding = backbone.get_layer("decoder_token_embedding")
    return backbone, embedding


def dense_loss(hidden, embedding, labels, soft_cap):
    logits = jnp.einsum("btd,vd->btv", hidden, embedding.astype(hidden.dtype))
    logits = logits.astype("float32")
    logits = jnp.tanh(logits / soft_cap) * soft_cap
    log_probs = jax.nn.log_softmax(logits, axis=-1)
    picked = jnp.take_along_axis(log_probs, labels[..., None], axis=-1)
    return -jnp.mean(picked)


def chunked_loss(hidden, embedding, labels, soft_cap):
    from keras_encdec.losses import linear_cross_entropy

    batch, length, width = hidden.shape
    return linear_cross_entropy(
        hidden.reshape(batch * length, width),
        embedding,
        labels.reshape(batch * length),
        logit_soft_cap=soft_cap,
        impl="xla",
    )


def measure(backbone, embedding_layer, loss_fn, length, soft_cap):
    spec = lambda v: jax.ShapeDtypeStruct(tuple(v.shape), v.dtype)  # noqa
    trainable = [spec(v) for v in backbone.trainable_variables]
    frozen = [spec(v) for v in backbone.non_trainable_variables]
    embedding_var = embedding_layer._embeddings
    index = [id(v) for v in backbone.non_trainable_variables].index(
        id(embedding_var)
    )
    ids = jax.ShapeDtypeStruct((1, length), "int32")
    inputs = {
        "encoder_token_ids": ids,
        "encoder_padding_mask": ids,
        "decoder_token_ids": ids,
        "decoder_padding_mask": ids,
    }

    def loss(params, weights, batch):
        outputs, _ = backbone.stateless_call(
            params, weights, batch, training=True
        )
        hidden = outputs["decoder_sequence_output"]
        return loss_fn(hidden, weights[index], batch["decoder_token_ids"],
                       soft_cap)

    def step(params, weights, batch):
        value, grads = jax.value_and_grad(loss)(params, weights, batch)
        return value, [p - 1e-4 * g.astype(p.dtype)
                       for p, g in zip(params, grads)]

    start = time.perf_counter()
    compiled = jax.jit(step, donate_argnums=0).lower(
        trainable, frozen, inputs
    ).compile()
    seconds = time.perf_counter() - start
    memory = compiled.memory_analysis()
    pullback = jax.eval_shape(
        lambda p, w, b: jax.vjp(lambda q: loss(q, w, b), p)[1],
        trainable, frozen, inputs,
    )
    saved = sum(int(np.prod(x.shape)) * x.dtype.itemsize
                for x in jax.tree_util.tree_leaves(pullback))
    peak = (memory.argument_size_in_bytes + memory.output_size_in_bytes
            + memory.temp_size_in_bytes - memory.alias_size_in_bytes)
    return dict(
        peak=peak / GIB,
        weights=memory.argument_size_in_bytes / GIB,
        temp=memory.temp_size_in_bytes / GIB,
        saved=saved / GIB,
        compile_s=seconds,
    )


def losses_available():
    try:
        from keras_encdec.losses import linear_cross_entropy  # noqa: F401
    except ImportError as error:
        return str(error)
    return None


def run_row(row, config, length):
    cap = config["final_logit_soft_cap"]
    if row == "a":
        reason = losses_available()
        if reason:
            return None, f"skipped: keras_encdec.losses not importable ({reason})"
        backbone, emb = build_ours(config, attention_impl="xla")
        return measure(backbone, emb, chunked_loss, length, cap), None
    if row == "c":
        backbone, emb = build_keras_hub(config)
        return measure(backbone, emb, dense_loss, length, cap), None
    impl = "xla" if row.endswith("xla") else None
    backbone, emb = build_ours(config, attention_impl=impl)
    return measure(backbone, emb, dense_loss, length, cap), None


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--length", type=int, default=4096,
                        help="encoder and decoder length (default 4096)")
    parser.add_argument("--rows", nargs="+", default=list(ROWS),
                        choices=ROWS)
    args = parser.parse_args()
    if keras.backend.backend() != "jax":
        raise SystemExit("Run with KERAS_BACKEND=jax.")
    config = load_config()
    print(f"2b_2b, enc/dec {args.length}/{args.length}, batch 1, bf16 "
          f"weights, LoRA rank 16 on {LORA_TARGET}, SGD step, "
          f"{jax.devices()[0].platform}")
    results = {}
    header = (f"{'row':>12} | {'peak GiB':>9} | {'weights GiB':>11} | "
              f"{'temp GiB':>9} | {'saved GiB':>9} | {'peak / c':>8} | "
              f"{'compile s':>9}")
    lines = []
    for row in args.rows:
        result, note = run_row(row, config, args.length)
        if result is None:
            lines.append(f"{row:>12} | {note}")
            print(lines[-1], flush=True)
            continue
        results[row] = result
        print(f"{row}: {result}", flush=True)
    base = results.get("c")
    print(header)
    for row, r in results.items():
        ratio = f"{r['peak'] / base['peak']:8.3f}" if base else "       -"
        print(f"{row:>12} | {r['peak']:9.2f} | {r['weights']:11.2f} | "
              f"{r['temp']:9.2f} | {r['saved']:9.2f} | {ratio} | "
              f"{r['compile_s']:9.1f}")
    for line in lines:
        print(line)


if __name__ == "__main__":
    main()
