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
    # A `jax.custom_vjp` function (JAX's CPU path of dense attention).
    "keras_encdec.ops.attention_dense_jax.grouped_attention": ("jax",),
    "keras_encdec.ops.matmul_jax.matmul": ("jax",),
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
    tests = [test for test in doctest.DocTestFinder().find(module, name)
             if test.examples]
    assert tests, f"{name} has '>>> ' in its source but no docstring example."
    backend = keras.backend.backend()
    here = [test for test in tests
            if backend in ONLY_ON.get(test.name, (backend,))]
    if not here:
        pytest.skip(f"{name}'s examples need another backend (ONLY_ON)")
    runner = doctest.DocTestRunner(optionflags=OPTIONS)
    report = []
    for test in here:
        runner.run(test, out=report.append)
    assert runner.failures == 0, "".join(report)


def test_only_on_names_existing_examples():
    modules = set(_modules_with_examples())
    for qualified in ONLY_ON:
        owners = [m for m in modules if qualified.startswith(m + ".")]
        assert owners, f"{qualified} is in no module with examples"
        module_name = max(owners, key=len)
        module = importlib.import_module(module_name)
        names = {test.name for test in doctest.DocTestFinder().find(
            module, module_name) if test.examples}
        assert qualified in names, f"{qualified} has no docstring example"
