"""A real seq2seq task that ships with Python: function source -> summary.

Every function in the standard library that has a docstring gives one pair:
its source with the docstring removed (the input) and the first sentence of
the docstring (the target). `ast` does the parsing; nothing is downloaded.
The test split is held out by module, so no test function shares a file
with a training function.
"""

import ast
import logging
import os
import random
import re
import sysconfig
import textwrap

logger = logging.getLogger(__name__)

# Folders of the standard library that hold tests, demos or vendored code.
SKIPPED_DIRS = frozenset(
    ("test", "tests", "idle_test", "site-packages", "dist-packages",
     "__pycache__", "lib2to3", "idlelib", "turtledemo", "ensurepip",
     "pydoc_data", "config-3.11-x86_64-linux-gnu")
)
_SENTENCE_END = re.compile(r"(?<=[.!?])\s")


def first_sentence(docstring):
    """The first sentence of a docstring's first paragraph, on one line.

    Args:
        docstring: str. A cleaned docstring (`ast.get_docstring`).

    Returns:
        str: whitespace-collapsed text up to and including the first `.`,
        `!` or `?` followed by a space, or the whole first paragraph.

    Examples:

    >>> first_sentence("Return the sum.  Ignores NaN.\\n\\nMore text.")
    'Return the sum.'
    >>> first_sentence("Split a path\\ninto parts")
    'Split a path into parts'
    """
    paragraph = docstring.strip().split("\n\n")[0]
    paragraph = " ".join(paragraph.split())
    return _SENTENCE_END.split(paragraph, maxsplit=1)[0]


def extract_pairs(source, module, *, min_words=3, max_words=40,
                  max_source_chars=2000):
    """Pairs `(function source without docstring, first sentence)`.

    Functions and methods at any depth count; the docstring's lines are
    cut out of the source, so the target never appears in the input.

    Args:
        source: str. The text of one Python module.
        module: str. Its dotted name, stored with each pair.
        min_words, max_words: int. Summaries outside this word count are
            skipped (one-word stubs, multi-line rambles).
        max_source_chars: int. Longer functions are skipped.

    Returns:
        A list of dicts `{"module", "name", "source", "summary"}`, in
        source order.

    Examples:

    >>> code = 'def add(a, b):\\n    "Add two numbers. Fast."\\n    return a + b\\n'
    >>> extract_pairs(code, "m")[0]["summary"]
    'Add two numbers.'
    >>> extract_pairs(code, "m")[0]["source"]
    'def add(a, b):\\n    return a + b'
    """
    tree = ast.parse(source)
    lines = source.splitlines()
    pairs = []
    for node in ast.walk(tree):
        if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        docstring = ast.get_docstring(node)
        if not docstring:
            continue
        summary = first_sentence(docstring)
        if not min_words <= len(summary.split()) <= max_words:
            continue
        doc = node.body[0]
        start = min([d.lineno for d in node.decorator_list] + [node.lineno])
        kept = (lines[start - 1:doc.lineno - 1]
                + lines[doc.end_lineno:node.end_lineno])
        if len(node.body) == 1:  # Docstring-only body: keep it valid.
            indent = " " * doc.col_offset
            kept.append(indent + "...")
        code = textwrap.dedent("\n".join(kept))
        if len(code) > max_source_chars:
            continue
        pairs.append({"module": module, "name": node.name,
                      "source": code, "summary": summary,
                      "line": node.lineno})
    pairs.sort(key=lambda pair: pair["line"])
    for pair in pairs:
        del pair["line"]
    return pairs


def stdlib_modules(root=None, include=None):
    """`(dotted name, path)` of the standard library's own `.py` files.

    Args:
        root: str or None. The library folder; default this interpreter's
            (`sysconfig.get_paths()["stdlib"]`).
        include: iterable of str or None. Keep only modules whose top-level
            name is listed (e.g. `["json", "email"]`); None keeps all.

    Returns:
        A sorted list of `(module, path)`, tests and vendored folders
        (`SKIPPED_DIRS`) left out.
    """
    root = root or sysconfig.get_paths()["stdlib"]
    if not os.path.isdir(root):
        raise FileNotFoundError(
            f"standard library folder not found: {root!r}; pass `root=` "
            "with the folder that holds the `.py` modules"
        )
    modules = []
    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if d not in SKIPPED_DIRS
                         and not d.startswith("."))
        for name in files:
            if not name.endswith(".py") or name.startswith("test_"):
                continue
            path = os.path.join(folder, name)
            relative = os.path.relpath(path, root)[:-3]
            parts = relative.split(os.sep)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            modules.append((".".join(parts), path))
    if include is not None:
        include = set(include)
        modules = [m for m in modules if m[0].split(".")[0] in include]
        if not modules:
            raise ValueError(
                f"no standard library module matches include={sorted(include)}"
                f" under {root!r}"
            )
    return sorted(modules)


def stdlib_pairs(root=None, include=None, **kwargs):
    """All pairs of the standard library (`extract_pairs` on each module).

    Args:
        root, include: as for `stdlib_modules`.
        **kwargs: passed to `extract_pairs`.

    Returns:
        A list of pair dicts, sorted by module then source order. Files
        that do not parse with this Python are skipped with a log line.
    """
    pairs = []
    for module, path in stdlib_modules(root, include):
        with open(path, encoding="utf-8", errors="replace") as file:
            text = file.read()
        try:
            pairs.extend(extract_pairs(text, module, **kwargs))
        except SyntaxError as error:
            logger.debug("skipping %s: %s", path, error)
    return pairs


def split_by_module(pairs, *, test_fraction=0.1, seed=0):
    """Splits pairs into train and test so no module is in both.

    Modules are shuffled with `seed` and given to the test split until it
    holds at least `test_fraction` of the pairs.

    Args:
        pairs: list of pair dicts with a `"module"` key.
        test_fraction: float in (0, 1).
        seed: int. The same seed gives the same split.

    Returns:
        `(train, test)`: two lists of pairs, each in the input order.

    Examples:

    >>> pairs = [{"module": m} for m in "aabbbcd"]
    >>> train, test = split_by_module(pairs, test_fraction=0.3, seed=0)
    >>> sorted({p["module"] for p in train} & {p["module"] for p in test})
    []
    """
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(
            f"test_fraction must be in (0, 1); received {test_fraction!r}"
        )
    counts = {}
    for pair in pairs:
        counts[pair["module"]] = counts.get(pair["module"], 0) + 1
    modules = sorted(counts)
    random.Random(seed).shuffle(modules)
    test_modules, held = set(), 0
    for module in modules:
        if held >= test_fraction * len(pairs):
            break
        test_modules.add(module)
        held += counts[module]
    train = [p for p in pairs if p["module"] not in test_modules]
    test = [p for p in pairs if p["module"] in test_modules]
    return train, test
