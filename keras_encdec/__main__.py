"""Command line: `python -m keras_encdec <command> ...`.

Commands:
    demo    Adapt Gemma 3 270M into T5Gemma 2, fine-tune it with LoRA on
            standard-library docstrings, report chrF (offline).
    adapt   Turn decoder-only Gemma 2 checkpoints into a T5Gemma preset.
    pretrain  Pretrain on text files (PrefixLM / UL2, packing, resumable).

Each command lives in its own module exposing `add_parser(subparsers)`,
which registers the sub-command and sets `func` to run it.
"""

import argparse
import importlib
import logging
import sys

COMMANDS = {
    "demo": "keras_encdec.demo.cli",
    "adapt": "keras_encdec.adapt.cli",
    "pretrain": "keras_encdec.training.pretrain_cli",
}


def configure_logging():
    """Routes keras-encdec's own log records for the command line.

    Results (INFO) go to stdout and diagnostics (WARNING and above) to
    stderr, one plain line each. Other libraries' loggers are left at their
    defaults, so their informational chatter (e.g. jax's backend probing)
    stays hidden.
    """
    logger = logging.getLogger("keras_encdec")
    logger.handlers.clear()
    logger.setLevel(logging.INFO)
    logger.propagate = False
    results = logging.StreamHandler(sys.stdout)
    results.addFilter(lambda record: record.levelno < logging.WARNING)
    diagnostics = logging.StreamHandler(sys.stderr)
    diagnostics.setLevel(logging.WARNING)
    for handler in (results, diagnostics):
        handler.setFormatter(logging.Formatter("%(message)s"))
        logger.addHandler(handler)


def main(argv=None):
    """Parses `argv` and runs the chosen command; returns its exit code."""
    configure_logging()
    parser = argparse.ArgumentParser(
        prog="python -m keras_encdec",
        description="keras-encdec: encoder-decoder Gemma (T5Gemma) tools.",
    )
    subparsers = parser.add_subparsers(dest="command", required=True)
    for module_name in COMMANDS.values():
        importlib.import_module(module_name).add_parser(subparsers)
    args = parser.parse_args(argv)
    return args.func(args) or 0


if __name__ == "__main__":
    sys.exit(main())
