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
# # Fine-tuning T5Gemma with LoRA, offline
#
# This guide runs top to bottom on CPU in well under a minute, with no
# downloads: it uses the tiny preset embedded in `keras_encdec`. Replace
# `"t5gemma_tiny_random"` with e.g. `"t5gemma_2b_2b_prefixlm_it"` for a real
# model; every call stays the same. If you know keras-hub's `Seq2SeqLM`, you
# know this API: `from_preset`, `compile(sampler=...)`, `generate`, `fit`.
# In Colab or Kaggle, the first cell installs the package
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
import shutil
import tempfile

import keras_encdec  # noqa: F401  (before keras: loads Triton before TF)
import keras
import matplotlib.pyplot as plt
import numpy as np

from keras_encdec.models import T5GemmaSeq2SeqLM
from keras_encdec.training import AtomicBackupAndRestore

keras.utils.set_random_seed(0)
PRESET, LENGTH = "t5gemma_tiny_random", 16


def load(preset=PRESET, **kwargs):
    """Loads a model with short packed sequences (fast on CPU)."""
    lm = T5GemmaSeq2SeqLM.from_preset(preset, **kwargs)
    lm.preprocessor.encoder_sequence_length = LENGTH
    lm.preprocessor.decoder_sequence_length = LENGTH
    return lm


# %% [markdown]
# ## 1. Load a preset and generate
#
# `remat=True` turns on gradient checkpointing for training (step 3); it
# changes nothing for inference. `"greedy"` makes generation deterministic,
# which the checks below rely on.

# %%
lm = load(remat=True)
lm.compile(sampler="greedy")
print(lm.generate("the quick brown fox", max_length=LENGTH))

# %% [markdown]
# ## 2. A tiny task: reverse three words
#
# The encoder reads a phrase, the decoder must write its words in reverse
# order. The preprocessor turns `{"encoder_text", "decoder_text"}` into token
# ids, the targets `y` (the decoder input shifted by one, ending in `<eos>`)
# and a `sample_weight` that masks padding; `fit` applies it for you.

# %%
words = "the fox dog cat sun tree river boat bird king wind stone".split()
rng = np.random.default_rng(0)
phrases = [rng.choice(words, size=3, replace=False) for _ in range(32)]
data = {
    "encoder_text": [" ".join(p) for p in phrases],
    "decoder_text": [" ".join(p[::-1]) for p in phrases],
}
x, y, sample_weight = lm.preprocessor({k: v[:2] for k, v in data.items()})
print({k: tuple(v.shape) for k, v in x.items()}, "y:", tuple(y.shape))

# %% [markdown]
# ## 3. LoRA, fused loss, remat
#
# `enable_lora` freezes the whole backbone and adds rank-4 adapters to every
# attention and MLP projection; only those train. `compile()` keeps
# `loss="auto"`: a chunked cross-entropy computed from the decoder hidden
# states and the embedding, so the `[batch, length, vocabulary]` logits are
# never built (they dominate memory for 256k-token vocabularies). With remat,
# each block keeps only its input for the backward pass and recomputes the
# rest, trading one extra forward pass for activation memory. Gradient
# accumulation averages two batches per optimizer update.

# %%
trainable = lm.backbone.enable_lora(4, target="attention+mlp")
print(f"trainable: {trainable:,} of {lm.backbone.count_params():,}")
lm.compile(
    optimizer=keras.optimizers.Adam(2e-2, gradient_accumulation_steps=2),
    sampler="greedy",
)

# %% [markdown]
# ## 4. Fit, resumably
#
# `AtomicBackupAndRestore` commits a checkpoint (weights, LoRA factors and
# optimizer state) atomically at each epoch end. If the process is killed,
# running the same `fit` again resumes after the last committed epoch, with
# the same weights and losses as an uninterrupted run. Six epochs on 32
# pairs only start to learn the task: the point here is the workflow.
# (On a 2-core CPU with the torch backend, torch's threads compete with the
# tf.data text preprocessing; if steps are slow, set `OMP_NUM_THREADS=1`.)

# %%
workdir = tempfile.mkdtemp()
backup = AtomicBackupAndRestore(os.path.join(workdir, "backup"))
history = lm.fit(data, batch_size=4, epochs=6, shuffle=False,
                 callbacks=[backup], verbose=0)
losses = history.history["loss"]
print("loss per epoch:", [round(v, 3) for v in losses])
assert losses[-1] < losses[0], losses
figure, axis = plt.subplots(figsize=(5, 3))
axis.plot(range(1, len(losses) + 1), losses, marker="o")
axis.set_xlabel("epoch")
axis.set_ylabel("cross-entropy (nats/token)")
axis.set_title("LoRA fine-tuning loss")
figure.tight_layout()
plt.show()

# %% [markdown]
# ## 5. Adapter files, merging, and export to transformers
#
# The adapter file holds only the LoRA factors and their settings. Loaded
# into a fresh base model, it must give exactly the fine-tuned model.

# %%
prompts = data["encoder_text"][:4]
tuned = lm.generate(prompts, max_length=LENGTH)
print(dict(zip(prompts, tuned)))
adapter = os.path.join(workdir, "reverse.lora.h5")
lm.backbone.save_lora_weights(adapter)
print(f"adapter: {os.path.getsize(adapter):,} bytes")

restored = load()
restored.backbone.load_lora_weights(adapter)
restored.compile(sampler="greedy")
assert restored.generate(prompts, max_length=LENGTH) == tuned

# %% [markdown]
# `merge_lora()` folds the adapters into the base kernels: a plain model
# that any T5Gemma runtime can load (`compile()` it again before more `fit`:
# its optimizer was built for the adapters). `export_to_transformers` writes
# a transformers `T5GemmaForConditionalGeneration` folder (config,
# safetensors, `tokenizer.model`); `from_preset` reads it back with
# bit-identical logits and the fine-tuned model's greedy generations.

# %%
restored.backbone.merge_lora()
export = os.path.join(workdir, "transformers")
restored.export_to_transformers(export)
print(sorted(os.listdir(export)))
reloaded = load(export)
batch = restored.preprocessor.generate_preprocess(prompts)
np.testing.assert_array_equal(keras.ops.convert_to_numpy(restored(batch)),
                              keras.ops.convert_to_numpy(reloaded(batch)))
reloaded.compile(sampler="greedy")
assert reloaded.generate(prompts, max_length=LENGTH) == tuned

# %% [markdown]
# ## 6. Where to go next
#
# - Start from a decoder-only Gemma 2 checkpoint: `keras_encdec.adapt`
#   (`adapt_decoder_only`, then `CrossAttentionWarmup` to train the new
#   cross-attention first).
# - Shard across devices with `T5GemmaBackbone.get_layout_map(mesh)` and
#   `keras.distribution.ModelParallel`: see `docs/distributed.md`.
# - Memory of LoRA steps at long sequence lengths (chunked loss, blockwise
#   attention, remat): `BENCHMARKS.md`.

# %%
shutil.rmtree(workdir)
print("guide finished")
