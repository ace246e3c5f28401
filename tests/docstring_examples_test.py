"""Every docstring example of `keras_encdec` runs, on every backend.

The examples are doctests (`>>>` lines and their printed results): this
runs them with the standard `doctest` module, one test per module that has
any, so an API change or a backend difference (a torch tensor where numpy
was expected, a shape printed as `torch.Size`) fails the suite instead of
a reader's first try. `ONLY_ON` names the few examples that need one
backend's feature, and why.
"""

import doctest
import importlib
import pathlib

import pytest

import keras

PACKAGE = pathlib.Path(__file__).parent.parent / "keras_encdec"
ONLY_ON = {
    # torch's `flex_attention` (the "flex" attention impl).
    "keras_encdec.ops.attention_flex.flex_attention": ("torch",),
    # `keras.distribution`, which Keras has on JAX and TensorFlow.
    "keras_encdec.models.finetuning_mixin.FineTuningMixin.get_layout_map": (
        "jax", "tensorflow"),
}
OPTIONS = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE


def _modules_with_examples():
    for path in sorted(PACKAGE.rglob("*.py")):
        if path.name.endswith("_test.py") or ">>> " not in path.read_text():
            continue
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        yield ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


@pytest.mark.parametrize("name", list(_modules_with_examples()))
def test_docstring_examples_run(name):
    module = importlib.import_module(name)
    runner = doctest.DocTestRunner(optionflags=OPTIONS)
    report, ran = [], 0
    for test in doctest.DocTestFinder(exclude_empty=True).find(module, name):
        backends = ONLY_ON.get(test.name)
        if backends and keras.backend.backend() not in backends:
            continue
        result = runner.run(test, out=report.append)
        ran += result.attempted
    if not ran:
        assert all(
            keras.backend.backend() not in ONLY_ON[test.name]
            for test in doctest.DocTestFinder().find(module, name)
            if test.examples
        ), f"{name} has '>>> ' in its source but no example ran."
        pytest.skip(f"{name}'s examples need another backend (ONLY_ON)")
    assert runner.failures == 0, "".join(report)


def test_only_on_names_existing_examples():
    for qualified in ONLY_ON:
        module_name, _, _ = qualified.rpartition(".")
        while module_name not in {m for m in _modules_with_examples()}:
            module_name = module_name.rpartition(".")[0]
            assert module_name, f"{qualified} is in no module with examples"
        module = importlib.import_module(module_name)
        names = {test.name for test in doctest.DocTestFinder().find(
            module, module_name) if test.examples}
        assert qualified in names, f"{qualified} has no docstring example"
