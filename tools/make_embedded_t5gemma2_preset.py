"""Builds the embedded preset `keras_encdec/presets/t5gemma2/t5gemma2_tiny_random`.

A tiny random T5Gemma 2 (width 64, 2+2 blocks, grouped-query attention,
sliding window 16 with one sliding and one full block, RoPE scaling 2 on the
full block, final soft-cap 30, no vision tower) with the SentencePiece
vocabulary of `tools/make_embedded_preset.py` (trained on its fable-like
text). Weights are random with real spread, as in
`keras_encdec.testing.make_transformers_t5gemma2`: the token table with std
0.05, norm scales 1.0, everything else 0.3, so greedy decoding does not
collapse to one token. Seeded: on the same backend and versions two runs
write identical files. For offline tests and demos, not a language model.

Usage:

    python tools/make_embedded_t5gemma2_preset.py [--output DIR]
"""

import argparse
import json
import os
import shutil
import sys

os.environ.setdefault("KERAS_BACKEND", "jax")
sys.path.insert(0, os.path.dirname(__file__))

import numpy as np  # noqa: E402
from make_embedded_preset import TEXT  # noqa: E402
from make_embedded_preset import train_tokenizer  # noqa: E402

from keras_encdec.models import T5Gemma2Backbone  # noqa: E402
from keras_encdec.models import T5Gemma2Seq2SeqLM  # noqa: E402
from keras_encdec.models import T5Gemma2Seq2SeqLMPreprocessor  # noqa: E402
from keras_encdec.models import T5Gemma2Tokenizer  # noqa: E402

SEED = 0
SEQUENCE_LENGTH = 64
STDS = {"embeddings": 0.05, "norm": 1.0, "other": 0.3}
DEFAULT_OUTPUT = os.path.join(
    os.path.dirname(__file__), "..", "keras_encdec", "presets", "t5gemma2",
    "t5gemma2_tiny_random",
)


def build_backbone(vocabulary_size):
    """The tiny config; every weight re-drawn with `STDS`."""
    stack = dict(intermediate_dim=128, num_layers=2, num_heads=4,
                 num_kv_heads=2, head_dim=16, sliding_window=16,
                 layer_types=["sliding_attention", "full_attention"])
    backbone = T5Gemma2Backbone(
        vocabulary_size=vocabulary_size,
        hidden_dim=64,
        **{f"{side}_{k}": v for side in ("encoder", "decoder")
           for k, v in stack.items()},
        rope_scaling_factor=2.0,
        final_logit_soft_cap=30.0,
        eoi_token_index=vocabulary_size - 1,
        image_token_index=vocabulary_size - 2,
    )
    rng = np.random.default_rng(SEED)
    for weight in backbone.weights:
        kind = "other"
        if weight.path.endswith("token_embedding/embeddings"):
            kind = "embeddings"
        elif weight.path.endswith("/scale"):
            kind = "norm"
        weight.assign(rng.normal(0.0, STDS[kind], weight.shape).astype("float32"))
    return backbone


def main(output):
    lines = [line for line in TEXT.splitlines() if line]
    tokenizer = T5Gemma2Tokenizer(proto=train_tokenizer(lines))
    preprocessor = T5Gemma2Seq2SeqLMPreprocessor(
        tokenizer,
        encoder_sequence_length=SEQUENCE_LENGTH,
        decoder_sequence_length=SEQUENCE_LENGTH,
    )
    backbone = build_backbone(tokenizer.vocabulary_size())
    lm = T5Gemma2Seq2SeqLM(backbone, preprocessor=preprocessor)
    if os.path.isdir(output):
        shutil.rmtree(output)
    lm.save_to_preset(output)
    metadata_path = os.path.join(output, "metadata.json")
    with open(metadata_path) as f:
        metadata = json.load(f)
    metadata.pop("date_saved", None)  # Keep the folder reproducible.
    metadata.pop("parameter_count", None)  # The registry computes it.
    metadata.update(
        {
            "description": (
                "Tiny random T5Gemma 2 for offline tests and demos: 2+2 "
                "blocks of width 64, "
                f"{tokenizer.vocabulary_size()}-piece SentencePiece "
                "vocabulary, sliding window 16, no vision tower. Random "
                "weights: not a language model. Made by "
                "tools/make_embedded_t5gemma2_preset.py."
            ),
            "official_name": "T5Gemma 2",
            "path": "t5gemma2",
        }
    )
    with open(metadata_path, "w") as f:
        json.dump(metadata, f, indent=4)
        f.write("\n")
    lm.compile(sampler="greedy")
    prompt = "the quick brown fox"
    print(f"Wrote {output}: {backbone.count_params()} parameters.")
    print(f"generate({prompt!r}) -> {lm.generate(prompt, max_length=16)!r}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", default=DEFAULT_OUTPUT)
    main(os.path.abspath(parser.parse_args().output))
