"""`python -m keras_encdec adapt`: decoder-only Gemma 2 -> T5Gemma preset,
Gemma 3 -> T5Gemma 2 preset.

Examples:

    python -m keras_encdec adapt --encoder ./gemma2-9b --decoder ./gemma2-2b \\
        --cross-attention-init auto --output ./t5gemma-9b-2b
    python -m keras_encdec adapt --encoder gemma-3-270m-q4_k_m.gguf \\
        --output ./t5gemma2-270m-270m

Prints the parameter count and memory estimate of the result before any
weight is loaded, shows progress bars while it loads them, then writes a
preset folder that `T5GemmaSeq2SeqLM.from_preset(DIR)` (Gemma 2) or
`T5Gemma2Seq2SeqLM.from_preset(DIR)` (Gemma 3) loads.
"""

import logging

from keras_encdec.adapt.adapt import build_adapted
from keras_encdec.adapt.adapt import plan_adaptation
from keras_encdec.adapt.mapping import CROSS_ATTENTION_INITS
from keras_encdec.adapt.source_types import GEMMA3
from keras_encdec.adapt.source_types import AdaptationError
from keras_encdec.convert.safetensors_io import CheckpointError

logger = logging.getLogger(__name__)


def add_parser(subparsers):
    """Registers the `adapt` sub-command on an argparse `subparsers`."""
    parser = subparsers.add_parser(
        "adapt",
        help="Turn decoder-only Gemma 2 / Gemma 3 checkpoints into a "
        "T5Gemma / T5Gemma 2 preset.",
        description=(
            "Builds a T5Gemma (from Gemma 2) or T5Gemma 2 (from Gemma 3) "
            "encoder-decoder from decoder-only checkpoints (keras-hub preset "
            "names or folders, transformers Gemma2ForCausalLM / "
            "Gemma3ForCausalLM folders, or Gemma 3 .gguf files) and saves it "
            "as a keras-encdec preset."
        ),
    )
    parser.add_argument(
        "--encoder", required=True, metavar="SRC",
        help="Source of the encoder (and of the decoder when --decoder is "
        "not given).",
    )
    parser.add_argument(
        "--decoder", default=None, metavar="SRC",
        help="Source of the decoder. Defaults to --encoder.",
    )
    parser.add_argument(
        "--cross-attention-init", default="auto", choices=CROSS_ATTENTION_INITS,
        help="How cross-attention starts (T5Gemma; T5Gemma 2's merged "
        "attention takes 'auto' or 'self_attention'). Defaults to 'auto'.",
    )
    parser.add_argument(
        "--dtype", default=None,
        help="Weight dtype of the result. Defaults to the encoder source's.",
    )
    parser.add_argument(
        "--output", required=True, metavar="DIR", help="Preset folder to write."
    )
    parser.set_defaults(func=run)
    return parser


def format_bytes(count):
    """`1536` -> `'1.5 KiB'`."""
    value = float(count)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{value:.1f} {unit}" if unit != "B" else f"{int(value)} B"
        value /= 1024


def run(args):
    """Runs `adapt`; returns the exit code (0 on success, 2 on bad input)."""
    try:
        plan = plan_adaptation(
            args.encoder,
            args.decoder,
            cross_attention_init=args.cross_attention_init,
            dtype=args.dtype,
        )
    except (AdaptationError, CheckpointError, ValueError, TypeError) as e:
        print(f"error: {e}")
        return 2
    kwargs = plan["backbone_kwargs"]
    widths = {side: kwargs.get(f"{side}_hidden_dim", kwargs.get("hidden_dim"))
              for side in ("encoder", "decoder")}
    cross = plan["cross_attention_init"]
    if plan["family"] == GEMMA3:
        cross = "merged with the decoder's self-attention (T5Gemma 2)"
    print(
        f"Encoder: {plan['encoder'].description} "
        f"({kwargs['encoder_num_layers']} layers, width "
        f"{widths['encoder']})\n"
        f"Decoder: {plan['decoder'].description} "
        f"({kwargs['decoder_num_layers']} layers, width "
        f"{widths['decoder']})\n"
        f"Cross-attention init: {cross}\n"
        f"Result: {plan['num_params']:,} parameters, about "
        f"{format_bytes(plan['memory_bytes'])} of weights in "
        f"{kwargs['dtype']}",
        flush=True,
    )
    lm = build_adapted(plan)
    lm.save_to_preset(args.output)
    print(f"Wrote preset folder '{args.output}'.")
    return 0
