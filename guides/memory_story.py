# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # The memory story: chunked loss and blockwise attention vs dense
#
# Fine-tuning an encoder-decoder Gemma runs out of memory in two places
# long before the weights do:
#
# - **the loss**: the LM head makes `[tokens, vocabulary]` logits. With
#   Gemma's 256k-token vocabulary, 4096 target tokens in float32 are 4 GiB,
#   and the backward pass keeps a softmax of the same size;
# - **attention**: every layer makes `[heads, T, S]` scores: 8 heads at
#   4096 x 4096 in float32 are 512 MiB per layer, again kept for backward.
#
# `keras_encdec.losses.linear_cross_entropy` computes the cross-entropy
# from the hidden states and the embedding in vocabulary chunks (the
# logits never exist), and `keras_encdec.ops.dot_product_attention` with
# `impl="xla"` walks key blocks with an online softmax (the scores never
# exist). This guide measures both against the dense computation on this
# machine: the compiled program's working memory (JAX's
# `memory_analysis()`) and what autodiff keeps for the backward pass. It
# runs on CPU in about a minute, with JAX (it reads JAX's compiler
# figures). In Colab or Kaggle, the first cell installs the package
# (`!pip install keras-encdec`).

# %%
# Colab / Kaggle: install keras-encdec (skipped when it is importable).
import importlib.util
import subprocess
import sys

if importlib.util.find_spec("keras_encdec") is None:
    subprocess.run([sys.executable, "-m", "pip", "install", "-q",
                    "keras-encdec"], check=True)

# %%
import os

os.environ.setdefault("KERAS_BACKEND", "jax")

import keras_encdec  # noqa: F401  (before keras: loads Triton before TF)
import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np

from keras_encdec.losses import linear_cross_entropy
from keras_encdec.ops import dot_product_attention
from keras_encdec.training.memory import saved_activation_bytes

# The test suite sets KERAS_ENCDEC_GUIDE_FAST=1 for smaller problems.
FAST = os.environ.get("KERAS_ENCDEC_GUIDE_FAST") == "1"
MIB = 2.0**20


def compiled_temp_mib(function, *args):
    """Working memory XLA plans for `function(*args)`, inputs excluded."""
    compiled = jax.jit(function).lower(*args).compile()
    return compiled.memory_analysis().temp_size_in_bytes / MIB


# %% [markdown]
# ## 1. The loss
#
# `N` target tokens of width `D` against a `V`-token vocabulary. Both
# methods must give the same loss and gradients; only their memory
# differs. We differentiate with respect to the hidden states and the
# embedding (full fine-tuning; with LoRA the embedding gradient goes away,
# the logits do not).

# %%
N, D, V = (256, 128, 8192) if FAST else (2048, 256, 65536)
rng = np.random.default_rng(0)
hidden = jnp.asarray(rng.standard_normal((N, D)), "float32")
embedding = jnp.asarray(rng.standard_normal((V, D)) * 0.05, "float32")
labels = jnp.asarray(rng.integers(0, V, N), "int32")


def loss_fn(impl):
    def f(h, e):
        return linear_cross_entropy(h, e, labels, logit_soft_cap=30.0,
                                    impl=impl)
    return jax.value_and_grad(f, argnums=(0, 1))


loss_memory = {}
for impl in ("dense", "xla"):
    loss_memory[impl] = compiled_temp_mib(loss_fn(impl), hidden, embedding)
(dense_loss, dense_grads) = loss_fn("dense")(hidden, embedding)
(xla_loss, xla_grads) = loss_fn("xla")(hidden, embedding)
print(f"N={N} D={D} V={V}: loss dense {float(dense_loss):.6f}, "
      f"chunked {float(xla_loss):.6f}")
for name, a, b in zip(("d hidden", "d embedding"), dense_grads, xla_grads):
    print(f"  max |{name} difference| = {float(jnp.max(jnp.abs(a - b))):.2e}")
    assert float(jnp.max(jnp.abs(a - b))) < 1e-5
assert abs(float(dense_loss) - float(xla_loss)) < 1e-4
print({k: f"{v:.1f} MiB" for k, v in loss_memory.items()},
      f"logits alone: {N * V * 4 / MIB:.1f} MiB")

# %% [markdown]
# ## 2. Attention
#
# One causal self-attention layer, forward and backward, with Gemma's
# soft-cap: `T` tokens, 4 query heads sharing 2 key/value heads of width
# 64. Besides the compiled working memory we count the arrays `jax.vjp`
# saves for the backward pass (`saved_activation_bytes`): that is what a
# deep model stacks up once per layer.

# %%
T, HEADS, KV, HEAD_DIM = (1024, 4, 2, 64) if FAST else (4096, 4, 2, 64)
q = jnp.asarray(rng.standard_normal((1, T, HEADS, HEAD_DIM)), "float32")
k = jnp.asarray(rng.standard_normal((1, T, KV, HEAD_DIM)), "float32")
v = jnp.asarray(rng.standard_normal((1, T, KV, HEAD_DIM)), "float32")


def attention_loss(impl):
    def f(q, k, v):
        out = dot_product_attention(q, k, v, scale=HEAD_DIM**-0.5,
                                    soft_cap=50.0, causal=True, impl=impl)
        return jnp.sum(out**2)
    return f


attention_memory, attention_saved, attention_out = {}, {}, {}
for impl in ("dense", "xla"):
    f = attention_loss(impl)
    grad = jax.grad(f, argnums=(0, 1, 2))
    attention_memory[impl] = compiled_temp_mib(grad, q, k, v)
    attention_saved[impl] = saved_activation_bytes(f, q, k, v) / MIB
    attention_out[impl] = grad(q, k, v)
worst = max(float(jnp.max(jnp.abs(a - b)))
            for a, b in zip(attention_out["dense"], attention_out["xla"]))
print(f"T={T}: max |gradient difference| = {worst:.2e}")
assert worst < 1e-3
print("temp MiB", {k: round(v, 1) for k, v in attention_memory.items()})
print("saved for backward MiB",
      {k: round(v, 2) for k, v in attention_saved.items()})

# %% [markdown]
# ## 3. The picture
#
# Measured above, on this machine (XLA's CPU compiler). The saving grows
# with the problem: the dense loss grows with `N x V`, the chunked one with
# `N x chunk`; dense attention grows with `T^2`, blockwise with `T x
# block`.

# %%
groups = ["loss: temp", "attention: temp", "attention: saved"]
dense = [loss_memory["dense"], attention_memory["dense"],
         attention_saved["dense"]]
ours = [loss_memory["xla"], attention_memory["xla"], attention_saved["xla"]]
x = np.arange(len(groups))
figure, axis = plt.subplots(figsize=(7, 3.5))
axis.bar(x - 0.2, dense, 0.4, label="dense")
axis.bar(x + 0.2, ours, 0.4, label="chunked / blockwise (impl='xla')")
for xi, d, o in zip(x, dense, ours):
    axis.annotate(f"{o / d:.0%}", (xi + 0.2, o), ha="center",
                  va="bottom", fontsize=9)
axis.set_xticks(x, groups)
axis.set_ylabel("MiB")
axis.set_title(f"Measured: loss N={N}, V={V}; attention T={T}")
axis.legend()
figure.tight_layout()
plt.show()
assert all(o < d for o, d in zip(ours, dense)), (ours, dense)

# %% [markdown]
# ## 4. A whole training step: T5Gemma 2B-2B at 4096 + 4096 tokens
#
# The same savings, compounded over 26 + 26 blocks, from
# [BENCHMARKS.md](../BENCHMARKS.md) ("Fine-tuning memory"): one LoRA step,
# batch 1, bf16 weights, compiled for one TPU v5p chip without running
# (`tools/benchmark_finetune_memory.py`). Peak is the compiled program's
# peak memory; "saved" is what the backward pass keeps, weights excluded.
#
# | row | loss | attention | remat | peak GiB | saved GiB |
# |---|---|---|---|---|---|
# | c: keras-hub 0.32 | dense | keras-hub (dense) | no | 76.49 | 174.76 |
# | b: ours | dense | dense | no | 75.92 | 261.29 |
# | b+xla | dense | xla (blockwise) | no | 39.84 | 76.03 |
# | b+xla+remat | dense | xla (blockwise) | yes | 21.30 | 12.88 |
# | a-dense-attn | chunked | dense | yes | 13.45 | 1.16 |
# | a | chunked | xla (blockwise) | yes | 15.18 | 1.16 |
# | a-pallas | chunked | pallas (Mosaic) | yes | 12.34 | 1.16 |
#
# The weights alone are 10.56 GiB. Row (a) fits a 24 GB GPU; keras-hub's
# step needs a 95 GiB-class chip.

# %%
rows = ["c", "b", "b+xla", "b+xla+remat", "a-dense-attn", "a", "a-pallas"]
peak = [76.49, 75.92, 39.84, 21.30, 13.45, 15.18, 12.34]  # BENCHMARKS.md
figure, axis = plt.subplots(figsize=(7, 3.5))
axis.bar(rows, peak, color=["grey"] + ["tab:blue"] * 6)
axis.axhline(10.56, color="black", linestyle="--", label="weights")
axis.axhline(22.35, color="tab:red", linestyle=":", label="24 GB GPU")
axis.set_ylabel("peak GiB")
axis.set_title("2b_2b LoRA step, 4096+4096 tokens (quoted, TPU v5p compile)")
axis.legend()
figure.tight_layout()
plt.show()

# %% [markdown]
# ## 5. Using it
#
# Nothing to switch on: `compile()` with the default `loss="auto"` trains
# with the chunked loss, and `attention_impl=None` picks the best
# attention that runs (blockwise XLA on CPU; Pallas or flex kernels on
# accelerators). `remat=True` in `from_preset` keeps only block inputs for
# the backward pass.

# %%
print("guide finished")
