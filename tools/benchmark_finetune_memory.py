"""Peak memory of one LoRA fine-tuning step, from the compiled JAX program.

No weights are allocated: models are built inside a `keras.StatelessScope`
(Keras defers variable initialization there), every weight is a
`jax.ShapeDtypeStruct`, and the SGD step on the LoRA factors is only lowered
and compiled. Reported per row:

- peak GiB: the compiled program's peak (`memory_analysis()`;
  `peak_memory_in_bytes` where the compiler reports it, otherwise
  `argument + output + temp - alias`). Arguments are the bf16 weights and the
  batch; the trainable LoRA factors are donated, so their updates alias them.
- weights GiB: the argument size.
- saved GiB: the arrays autodiff keeps for the backward pass (`jax.vjp`
  residuals), the weights and the batch left out: the activation memory
  that remat, blockwise attention and the chunked loss cut. Device
  independent.

Targets (`--target`):

- `cpu` (default): XLA's CPU compiler. It computes bf16 matmuls in float32
  and keeps float32 copies of the bf16 weights, so its peak overstates what
  an accelerator needs (about 2x the weights on top).
- `tpu-v5e`, `tpu-v5p`, `tpu-v6e`: deviceless ahead-of-time compilation for
  one TPU chip (`jax.experimental.topologies`), no TPU needed, real bf16.
  Needs libtpu matching jax 0.10.2, outside the pinned venv (684 MB):

      .venv/bin/python -m pip install --target /tmp/libtpu "libtpu==0.0.42.*"
      PYTHONPATH=/tmp/libtpu KERAS_BACKEND=jax .venv/bin/python \
          tools/benchmark_finetune_memory.py --target tpu-v5p

Rows (2b_2b, LoRA rank 16 on `query`/`value` as keras-hub's default):

- `c`: keras-hub 0.32 `T5GemmaBackbone`, dense loss (full `[T, V]` logits).
- `b`: ours, dense loss, dense attention, no remat (keras-hub's recipe).
- `b+xla`: `b` with blockwise attention (`attention_impl="xla"`).
- `b+xla+remat`: and remat (`remat=True`).
- `a-dense-attn`: ours, chunked loss + remat, dense attention.
- `a`: ours, chunked loss (`linear_cross_entropy`, `impl="xla"`) + blockwise
  attention + remat: the recommended fine-tuning setup.
- `a-pallas`: `a` with the Pallas flash-attention kernels (TPU targets only:
  they lower through Mosaic; the TPU device is made the default device while
  lowering, as the Pallas TPU lowering reads the chip from it).

Usage:

    KERAS_BACKEND=jax python tools/benchmark_finetune_memory.py \
        --length 4096 --target tpu-v5p --rows a a-dense-attn b+xla+remat
"""

import argparse
import contextlib
import copy
import os
import time

os.environ.setdefault("KERAS_BACKEND", "jax")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import keras  # noqa: E402
import numpy as np  # noqa: E402

PRESET = "t5gemma_2b_2b_prefixlm"  # a name in the package's registry
GIB = 1024**3
LORA_TARGET = ["query", "value"]  # keras-hub's default LoRA layers
# row: (model, loss, attention_impl, remat)
ROWS = {
    "c": ("keras-hub", "dense", None, False),
    "b": ("ours", "dense", "dense", False),
    "b+xla": ("ours", "dense", "xla", False),
    "b+xla+remat": ("ours", "dense", "xla", True),
    "a-dense-attn": ("ours", "chunked", "dense", True),
    "a": ("ours", "chunked", "xla", True),
    "a-pallas": ("ours", "chunked", "pallas", True),
}
TPU_TOPOLOGIES = {"tpu-v5e": "v5e:1x1", "tpu-v5p": "v5p:1x1x1",
                  "tpu-v6e": "v6e:1x1"}
TARGETS = ("cpu",) + tuple(TPU_TOPOLOGIES)


def load_config(layers=None):
    """2b_2b's config; `layers` keeps only the first blocks of each stack
    (for quick comparisons: compile time grows with the block count)."""
    from keras_encdec.models.t5gemma.t5gemma_presets import T5GEMMA_PRESETS

    config = copy.deepcopy(T5GEMMA_PRESETS[PRESET]["config"])
    if layers is not None:
        for side in ("encoder", "decoder"):
            config[f"{side}_num_layers"] = layers
            config[f"{side}_layer_types"] = (
                config[f"{side}_layer_types"][:layers])
    return config


def build_ours(config, attention_impl, remat):
    from keras_encdec.models import T5GemmaBackbone

    config = dict(config, attention_impl=attention_impl, remat=remat)
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


def target_sharding(target):
    """None for the host CPU; one chip of a TPU topology otherwise."""
    if target == "cpu":
        return None
    from jax.experimental import topologies

    try:
        topology = topologies.get_topology_desc(
            platform="tpu",
            topology_name=TPU_TOPOLOGIES[target],
            chips_per_host_bounds=(1, 1, 1),
        )
    except Exception as error:  # libtpu missing or incompatible
        raise SystemExit(
            f"--target {target} needs libtpu for jax {jax.__version__} on "
            "PYTHONPATH (see this script's docstring). Loading the TPU "
            f"topology failed with: {error}"
        ) from error
    return jax.sharding.SingleDeviceSharding(topology.devices[0])


def measure(backbone, embedding_layer, loss_fn, length, soft_cap, sharding,
            default_device=False):
    from keras_encdec.training import saved_activation_bytes

    def spec(shape, dtype):
        return jax.ShapeDtypeStruct(tuple(shape), dtype, sharding=sharding)

    trainable = [spec(v.shape, v.dtype) for v in backbone.trainable_variables]
    frozen = [spec(v.shape, v.dtype) for v in backbone.non_trainable_variables]
    embedding_var = embedding_layer._embeddings
    index = [id(v) for v in backbone.non_trainable_variables].index(
        id(embedding_var)
    )
    ids = spec((1, length), "int32")
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

    device = contextlib.nullcontext()
    if sharding is not None and default_device:
        device = jax.default_device(next(iter(sharding.device_set)))
    start = time.perf_counter()
    with device:
        compiled = jax.jit(step, donate_argnums=0).lower(
            trainable, frozen, inputs
        ).compile()
        seconds = time.perf_counter() - start
        saved = saved_activation_bytes(loss, trainable, frozen, inputs)
    memory = compiled.memory_analysis()
    peak = getattr(memory, "peak_memory_in_bytes", 0) or (
        memory.argument_size_in_bytes + memory.output_size_in_bytes
        + memory.temp_size_in_bytes - memory.alias_size_in_bytes
    )
    return dict(
        peak=peak / GIB,
        weights=memory.argument_size_in_bytes / GIB,
        temp=memory.temp_size_in_bytes / GIB,
        saved=saved / GIB,
        compile_s=seconds,
    )


def run_row(row, config, length, sharding):
    model, loss, attention_impl, remat = ROWS[row]
    if model == "keras-hub":
        backbone, embedding = build_keras_hub(config)
    else:
        backbone, embedding = build_ours(config, attention_impl, remat)
    loss_fn = chunked_loss if loss == "chunked" else dense_loss
    if attention_impl == "pallas" and sharding is None:
        raise SystemExit(
            f"Row {row!r} needs a TPU target (--target tpu-...): the Pallas "
            "kernels do not compile for the host CPU."
        )
    return measure(backbone, embedding, loss_fn, length,
                   config["final_logit_soft_cap"], sharding,
                   default_device=attention_impl == "pallas")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--length", type=int, default=4096,
                        help="encoder and decoder length (default 4096)")
    parser.add_argument("--rows", nargs="+", default=list(ROWS),
                        choices=list(ROWS))
    parser.add_argument("--target", default="cpu", choices=TARGETS,
                        help="compiler to measure with (default cpu)")
    parser.add_argument("--layers", type=int, default=None,
                        help="keep only this many blocks per stack "
                        "(default: all 26)")
    args = parser.parse_args()
    if keras.backend.backend() != "jax":
        raise SystemExit("Run with KERAS_BACKEND=jax.")
    sharding = target_sharding(args.target)
    config = load_config(args.layers)
    device = "host CPU" if sharding is None else (
        f"{args.target} ({sharding.device_set.pop().device_kind}, "
        "deviceless AOT)")
    blocks = config["encoder_num_layers"]
    print(f"2b_2b ({blocks}+{blocks} blocks), enc/dec {args.length}/{args.length}, batch 1, bf16 "
          f"weights, LoRA rank 16 on {LORA_TARGET}, SGD step, compiled for "
          f"{device}", flush=True)
    results = {}
    failures = {}
    for row in args.rows:
        try:
            results[row] = run_row(row, config, args.length, sharding)
        except Exception as error:  # e.g. the program exceeds the HBM
            if sharding is None:
                raise
            failures[row] = " ".join(str(error).split())[:600]
            print(f"{row}: compile failed: {failures[row]}", flush=True)
            continue
        print(f"{row}: {results[row]}", flush=True)
    base = results.get("c")
    print(f"| row | model | loss | attention | remat | peak GiB | "
          f"weights GiB | saved GiB | peak / c | saved / c | compile s |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for row, r in results.items():
        model, loss, attention, remat = ROWS[row]
        ratios = (f"{r['peak'] / base['peak']:.3f} | "
                  f"{r['saved'] / base['saved']:.4f}") if base else "- | -"
        print(f"| {row} | {model} | {loss} | {attention or 'keras-hub'} | "
              f"{'yes' if remat else 'no'} | {r['peak']:.2f} | "
              f"{r['weights']:.2f} | {r['saved']:.2f} | {ratios} | "
              f"{r['compile_s']:.0f} |")
    for row, message in failures.items():
        print(f"{row}: does not compile for {args.target}: {message}")


if __name__ == "__main__":
    main()
