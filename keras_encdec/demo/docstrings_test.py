import keras
import pytest

from keras_encdec.demo import docstrings

pytestmark = pytest.mark.skipif(
    keras.backend.backend() != "jax", reason="pure Python: one backend"
)

MODULE = '''
"""Module docstring: not a function."""
import functools


def no_docstring(x):
    return x


def add(a, b):
    """Add two numbers.  Then return them.

    Args: ...
    """
    return a + b


def short():
    """Stub."""
    pass


class Box:
    """A class docstring is not a pair."""

    @functools.lru_cache
    def size(self):
        """Return the number of items in
        the box, counted once.
        """

        def inner():
            """Count items one by one, slowly."""
            return 1
        return inner()

    def empty(self):
        """Do nothing at all, on purpose."""
'''


def test_extract_pairs_exact():
    pairs = docstrings.extract_pairs(MODULE, "box")
    assert pairs == [
        {"module": "box", "name": "add",
         "source": "def add(a, b):\n    return a + b",
         "summary": "Add two numbers."},
        {"module": "box", "name": "size",
         "source": "@functools.lru_cache\ndef size(self):\n\n"
                   "    def inner():\n"
                   '        """Count items one by one, slowly."""\n'
                   "        return 1\n    return inner()",
         "summary": "Return the number of items in the box, counted once."},
        {"module": "box", "name": "inner",
         "source": "def inner():\n    return 1",
         "summary": "Count items one by one, slowly."},
        {"module": "box", "name": "empty",
         "source": "def empty(self):\n    ...",
         "summary": "Do nothing at all, on purpose."},
    ]
    for pair in pairs:  # Every input still parses; no target leaks in.
        compile(pair["source"], "<pair>", "exec")


def test_extract_pairs_limits():
    assert [p["name"] for p in docstrings.extract_pairs(
        MODULE, "box", min_words=1)][:2] == ["add", "short"]
    assert [p["name"] for p in docstrings.extract_pairs(
        MODULE, "box", max_source_chars=40)] == ["add", "inner", "empty"]


def test_split_by_module_disjoint_and_deterministic():
    pairs = docstrings.stdlib_pairs(
        include=["json", "textwrap", "colorsys", "shlex", "glob", "heapq",
                 "calendar", "base64"])
    assert len({p["module"] for p in pairs}) >= 8
    train, test = docstrings.split_by_module(pairs, test_fraction=0.25,
                                             seed=3)
    train_modules = {p["module"] for p in train}
    test_modules = {p["module"] for p in test}
    assert not train_modules & test_modules
    assert len(train) + len(test) == len(pairs)
    assert len(test) >= 0.25 * len(pairs) and train
    again = docstrings.split_by_module(pairs, test_fraction=0.25, seed=3)
    assert again == (train, test)
    even = [{"module": f"m{i}"} for i in range(20)]
    tests = [{p["module"] for p in docstrings.split_by_module(
        even, test_fraction=0.2, seed=seed)[1]} for seed in (0, 1)]
    assert len(tests[0]) == len(tests[1]) == 4 and tests[0] != tests[1]


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match="test_fraction must be in"):
        docstrings.split_by_module([{"module": "a"}], test_fraction=1.0)
    with pytest.raises(ValueError, match="no standard library module"):
        docstrings.stdlib_modules(include=["no_such_module_xyz"])
    with pytest.raises(FileNotFoundError, match="not found"):
        docstrings.stdlib_modules(root="/no/such/folder")
