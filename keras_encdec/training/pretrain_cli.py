"""`python -m keras_encdec pretrain`: the pretraining recipe from a shell.

Examples:

    python -m keras_encdec pretrain --model ./t5gemma2-270m-270m \\
        --objective mix --data corpus/*.txt --steps 2000 --batch-size 16 \\
        --encoder-length 512 --decoder-length 256 --pack --output ./pretrained

Runs `keras_encdec.training.pretrain`: Keras' progress bar shows
the loss and `tok/s`; the result (the preset folder) is reported on stdout,
errors as one line on stderr (`error: ...`) with exit code 2. Killed
mid-run, the same command continues from the last committed checkpoint
(`OUTPUT.pretrain-backup`) and ends with the weights of an uninterrupted
run.
"""

import logging

from keras_encdec.adapt.cli import CLI_ERRORS
from keras_encdec.adapt.cli import fail
from keras_encdec.training.pretraining import DOCUMENT_UNITS
from keras_encdec.training.pretraining import OBJECTIVES

logger = logging.getLogger(__name__)


def add_parser(subparsers):
    """Registers the `pretrain` sub-command on an argparse `subparsers`."""
    parser = subparsers.add_parser(
        "pretrain",
        help="Pretrain a T5Gemma / T5Gemma 2 model on text files (PrefixLM, "
        "UL2 or both), resumably, and save a preset.",
        description=(
            "Trains a keras-encdec model on text files with PrefixLM, UL2 or "
            "a mix of both (optionally packed), checkpointing so that a "
            "killed run continues when started again, and writes a preset "
            "folder at the end."
        ),
    )
    arg = parser.add_argument
    arg("--model", required=True, metavar="PRESET_OR_DIR",
        help="keras-encdec preset name or folder, or transformers folder.")
    arg("--objective", default="prefixlm", choices=OBJECTIVES,
        help="Data objective; 'mix' alternates PrefixLM and UL2 by "
        "document. Defaults to 'prefixlm'.")
    arg("--data", required=True, nargs="+", metavar="FILE",
        help="UTF-8 text files.")
    arg("--document-per", default="line", choices=DOCUMENT_UNITS,
        help="One document per line or per file. Defaults to 'line'.")
    arg("--steps", required=True, type=int, help="Optimizer steps.")
    arg("--batch-size", type=int, default=8, help="Rows per step (8).")
    arg("--encoder-length", type=int, default=512, help="Encoder row (512).")
    arg("--decoder-length", type=int, default=512, help="Decoder row (512).")
    arg("--lr", type=float, default=1e-4, help="AdamW learning rate (1e-4).")
    arg("--lora-rank", type=int, default=None,
        help="Train LoRA adapters of this rank (merged before saving).")
    arg("--pack", action="store_true",
        help="Pack several examples per row (segment ids).")
    arg("--seed", type=int, default=0, help="Seed of weights and data (0).")
    arg("--checkpoint-every", type=int, default=None,
        help="Steps per checkpoint; must divide --steps. Defaults to the "
        "largest divisor of --steps up to 100.")
    arg("--teacher", default=None, metavar="SOURCE",
        help="Distil from this decoder-only Gemma (keras-hub preset name or "
        "folder, transformers folder, or Gemma 3 .gguf file); PrefixLM "
        "only, not packed.")
    arg("--output", required=True, metavar="DIR", help="Preset folder.")
    arg("--overwrite", action="store_true",
        help="Replace an --output folder keras-encdec did not write.")
    parser.set_defaults(func=run)
    return parser


def run(args):
    """Runs `pretrain`; returns the exit code (0, or 2 on an error)."""
    from keras_encdec.training.pretraining import pretrain

    try:
        pretrain(
            args.model, args.data, output=args.output, steps=args.steps,
            objective=args.objective, batch_size=args.batch_size,
            encoder_length=args.encoder_length,
            decoder_length=args.decoder_length, learning_rate=args.lr,
            lora_rank=args.lora_rank, pack=args.pack, seed=args.seed,
            teacher=args.teacher, document_per=args.document_per,
            checkpoint_every=args.checkpoint_every, overwrite=args.overwrite,
        )
    except CLI_ERRORS as e:
        return fail(e)
    return 0
