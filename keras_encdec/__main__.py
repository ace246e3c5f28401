"""Command line: `python -m keras_encdec <command> ...`.

Commands:
    demo    Convert the embedded preset to transformers and back, then
            generate from text (no network, no downloaded weights).
    adapt   Turn decoder-only Gemma 2 checkpoints into a T5Gemma preset.

Each command lives in its own module exposing `add_parser(subparsers)`,
which registers the sub-command and sets `func` to run it.
"""

import argparse
import importlib
import logging
import sys

COMMANDS = {
    "demo": "keras_encdec.demo",
    "adapt": "keras_encdec.adapt.cli",
}


def main(argv=None):
    """Parses `argv` and runs the chosen command; returns its exit code."""
    logging.basicConfig(level=logging.INFO, format="%(message)s")
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
