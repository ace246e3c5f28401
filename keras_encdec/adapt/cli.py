"""`python -m keras_encdec adapt`: decoder-only Gemma 2 -> T5Gemma preset.

Example:

    python -m keras_encdec adapt --encoder ./gemma2-9b --decoder ./gemma2-2b \\
        --cross-attention-init auto --output ./t5gemma-9b-2b

Prints the parameter count and memory estimate of the result before any
weight is loaded, then writes a preset folder that
`T5GemmaSeq2SeqLM.from_preset(DIR)` loads.
"""

import logging

from keras_encdec.adapt.adapt import build_adapted
from keras_encdec.adapt.adapt import plan_adaptation
from keras_encdec.adapt.mapping import CROSS_ATTENTION_INITS
from keras_encdec.adapt.source_types import AdaptationError
from keras_encdec.convert.safetensors_io import CheckpointError

logger = logging.getLogger(__name__)


def add_parser(subparsers):
    """Registers the `adapt` sub-command on an argparse `subparsers`."""
    parser = subparsers.add_parser(
        "adapt",
        help="Turn decoder-only Gemma 2 checkpoints into a T5Gemma preset.",
        description=(
            "Builds a T5Gemma encoder-decoder from decoder-only Gemma 2 "
            "checkpoints (keras-hub preset names or folders, or transformers "
            "Gemma2ForCausalLM folders) and saves it as a keras-encdec preset."
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
        help="How cross-attention starts. Defaults to 'auto'.",
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
    print(
        f"Encoder: {plan['encoder'].description} "
        f"({kwargs['encoder_num_layers']} layers, width "
        f"{kwargs['encoder_hidden_dim']})\n"
        f"Decoder: {plan['decoder'].description} "
        f"({kwargs['decoder_num_layers']} layers, width "
        f"{kwargs['decoder_hidden_dim']})\n"
        f"Cross-attention init: {plan['cross_attention_init']}\n"
        f"Result: {plan['num_params']:,} parameters, about "
        f"{format_bytes(plan['memory_bytes'])} of weights in "
        f"{kwargs['dtype']}",
        flush=True,
    )
    lm = build_adapted(plan)
    lm.save_to_preset(args.output)
    print(f"Wrote preset folder '{args.output}'.")
    return 0
