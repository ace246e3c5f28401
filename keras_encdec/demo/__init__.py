"""The `make demo` job and its parts (data, model cache, evaluation).

- `docstrings`: function source -> docstring summary pairs from the
  standard library, split by module.
- `models`: Gemma 3 270M adapted into T5Gemma 2, cached on disk.
- `reporting`: chrF, loss-curve PNG, progress bars, peak memory.
- `run`: `DemoSettings` and `run_demo`, the job itself.
- `cli`: `python -m keras_encdec demo`.
"""

from keras_encdec.demo.cli import add_parser
from keras_encdec.demo.run import DemoSettings
from keras_encdec.demo.run import run_demo

__all__ = ["add_parser", "DemoSettings", "run_demo"]
