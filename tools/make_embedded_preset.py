"""Builds the embedded preset `keras_encdec/presets/t5gemma_tiny_random`.

A tiny T5Gemma (widths 64, 2+2 blocks, grouped-query attention, sliding
window 16 with alternating layer types, both soft-caps on) with a tiny
SentencePiece vocabulary trained on the text below. It is trained briefly to
continue the lines of that text from their first words (PrefixLM), so that
greedy generations are non-trivial. Everything is
seeded: on the same backend (jax by default) and versions, two runs write
identical weights. Runs in about a minute on CPU.

Usage:

    python tools/make_embedded_preset.py [--output keras_encdec/presets/t5gemma_tiny_random]
"""

import argparse
import io
import json
import os
import shutil
import time

os.environ.setdefault("KERAS_BACKEND", "jax")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import sentencepiece  # noqa: E402

from keras_encdec.models import T5GemmaBackbone  # noqa: E402
from keras_encdec.models import T5GemmaSeq2SeqLM  # noqa: E402
from keras_encdec.models import T5GemmaSeq2SeqLMPreprocessor  # noqa: E402
from keras_encdec.models import T5GemmaTokenizer  # noqa: E402

SEED = 0
VOCABULARY_SIZE = 384
SEQUENCE_LENGTH = 64
TRAIN_STEPS = 200
TRAIN_SEQUENCE_LENGTH = 32
BATCH_SIZE = 32
LEARNING_RATE = 5e-3
DEFAULT_OUTPUT = os.path.join(
    os.path.dirname(__file__), "..", "keras_encdec", "presets",
    "t5gemma_tiny_random",
)

# Written for this preset; plain English in the style of old fables.
TEXT = """\
the quick brown fox jumps over the lazy dog
a small boat sailed across the quiet lake at dawn
the old man planted a tree that he would never sit under
the crow dropped stones into the jar until the water rose
the tortoise walked slowly and still won the race
the hare slept under a tree while the tortoise kept walking
the ant worked all summer and the grasshopper sang
when winter came the ant had food and the grasshopper had none
the wind and the sun argued about who was stronger
the sun shone warmly and the traveller took off his coat
the mouse freed the lion by chewing through the net
a kind word is worth more than a heavy purse
the farmer told his sons that treasure lay in the field
the sons dug the whole field and the harvest was rich
the boy who cried wolf was not believed the third time
the fox could not reach the grapes and called them sour
the dog saw his reflection and dropped his bone
the goose laid one golden egg every morning
the miller and his son tried to please everyone and pleased no one
slow and steady wins the race
look before you leap
a friend in need is a friend indeed
the river runs to the sea and the sea does not fill
the cat sat by the window and watched the rain fall
the baker made bread before the sun came up
the children sang songs on the long road home
the lamp burned all night in the small stone house
the shepherd counted his sheep as they passed the gate
the bell rang twelve times and the town fell silent
the scholar read by candle light until the morning
a green hill stood beside the village by the river
the horse drank from the cold stream in the valley
the queen sent a letter across the mountains
the king asked three questions and the girl answered them all
the bridge was built of wood and it stood for a hundred years
the bird sang on the branch and the wind carried the song
she opened the door and the garden was full of flowers
he counted the stars and lost count at one thousand
translate english to french: the house is blue
summarize: the fox and the crow shared a piece of cheese
"""


def train_tokenizer(lines):
    """Trains the SentencePiece model (Gemma special ids); returns bytes."""
    buffer = io.BytesIO()
    sentencepiece.SentencePieceTrainer.train(
        sentence_iterator=iter(lines),
        model_writer=buffer,
        vocab_size=VOCABULARY_SIZE,
        model_type="BPE",
        character_coverage=1.0,
        pad_id=0,
        eos_id=1,
        bos_id=2,
        unk_id=3,
        pad_piece="<pad>",
        eos_piece="<eos>",
        bos_piece="<bos>",
        unk_piece="<unk>",
        num_threads=1,
        normalization_rule_name="identity",
        minloglevel=2,
    )
    return buffer.getvalue()


def build_backbone(vocabulary_size):
    """The tiny config: GQA, two-sided/causal windows shorter than the
    sequence, soft-caps on."""
    stack = dict(
        hidden_dim=64,
        intermediate_dim=128,
        num_layers=2,
        num_heads=4,
        num_kv_heads=2,
        head_dim=16,
        layer_types=["sliding_attention", "full_attention"],
        sliding_window=16,
        attention_logit_soft_cap=50.0,
        query_pre_attn_scalar=16,
    )
    kwargs = {"vocabulary_size": vocabulary_size}
    for side in ("encoder", "decoder"):
        kwargs.update({f"{side}_{k}": v for k, v in stack.items()})
    return T5GemmaBackbone(
        final_logit_soft_cap=30.0, dtype="float32", **kwargs
    )


def prefix_task(lines, rng, count):
    """PrefixLM pairs: the encoder reads the first words of a line, the
    decoder continues it. Returns `(prefixes, continuations)`."""
    prefixes, continuations = [], []
    for _ in range(count):
        words = lines[rng.integers(len(lines))].split()
        split = int(rng.integers(1, len(words)))
        prefixes.append(" ".join(words[:split]))
        continuations.append(" ".join(words[split:]))
    return prefixes, continuations


def main(output):
    start = time.time()
    keras.utils.set_random_seed(SEED)
    lines = [line for line in TEXT.splitlines() if line]
    tokenizer = T5GemmaTokenizer(proto=train_tokenizer(lines))
    preprocessor = T5GemmaSeq2SeqLMPreprocessor(
        tokenizer,
        encoder_sequence_length=SEQUENCE_LENGTH,
        decoder_sequence_length=SEQUENCE_LENGTH,
    )
    backbone = build_backbone(tokenizer.vocabulary_size())

    # Train on pre-tokenized arrays (the training LM has no preprocessor).
    rng = np.random.default_rng(SEED)
    prefixes, continuations = prefix_task(lines, rng, TRAIN_STEPS * BATCH_SIZE)
    x, y, sample_weight = preprocessor(
        {"encoder_text": prefixes, "decoder_text": continuations},
        sequence_length=TRAIN_SEQUENCE_LENGTH,
        encoder_sequence_length=TRAIN_SEQUENCE_LENGTH,
    )
    x = {k: np.asarray(v) for k, v in x.items()}
    trainer = T5GemmaSeq2SeqLM(backbone, preprocessor=None)
    trainer.compile(
        optimizer=keras.optimizers.AdamW(LEARNING_RATE, weight_decay=0.0),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        weighted_metrics=["accuracy"],
    )
    history = trainer.fit(
        x,
        np.asarray(y),
        sample_weight=np.asarray(sample_weight),
        batch_size=BATCH_SIZE,
        epochs=1,
        shuffle=False,
        verbose=2,
    )

    lm = T5GemmaSeq2SeqLM(backbone, preprocessor=preprocessor)
    if os.path.isdir(output):
        shutil.rmtree(output)
    lm.save_to_preset(output)
    metadata_path = os.path.join(output, "metadata.json")
    with open(metadata_path) as f:
        metadata = json.load(f)
    metadata.pop("date_saved", None)  # Keep the folder reproducible.
    # The registry computes "params" from config.json when it loads.
    metadata.pop("parameter_count", None)
    metadata.update(
        {
            "description": (
                "Tiny T5Gemma for tests and demos: 2+2 blocks of width 64, "
                f"{tokenizer.vocabulary_size()}-piece SentencePiece "
                "vocabulary, sliding window 16, trained for "
                f"{TRAIN_STEPS} steps to continue a few dozen fable-like "
                "lines from their first words. Not a language model; made "
                "by tools/make_embedded_preset.py."
            ),
            "official_name": "T5Gemma",
            "path": "t5gemma",
            "train_accuracy": round(float(history.history["accuracy"][-1]), 4),
        }
    )
    with open(metadata_path, "w") as f:
        json.dump(metadata, f, indent=4)
        f.write("\n")

    size = sum(
        os.path.getsize(os.path.join(root, name))
        for root, _, names in os.walk(output)
        for name in names
    )
    prompt = "the quick brown fox"
    print(f"Wrote {output}: {size / 1e6:.2f} MB, {backbone.count_params()} "
          f"parameters, {time.time() - start:.0f} s.")
    print(f"generate({prompt!r}) -> {lm.generate(prompt, max_length=32)!r}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", default=DEFAULT_OUTPUT)
    main(os.path.abspath(parser.parse_args().output))
