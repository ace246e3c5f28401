"""Ours vs HF transformers T5Gemma / T5Gemma 2 (torch, eager), per backend.

Both models hold the same weights: ours is built, exported with
`export_to_transformers`, and loaded by `T5GemmaForConditionalGeneration`
(`--family t5gemma`) or `T5Gemma2ForConditionalGeneration` (`--family
t5gemma2`, text only: transformers gets a tiny, unused vision tower
instead of its default SigLIP, which the text-only export does not write).
In each backend's process (KERAS_BACKEND is per process) the A/B
repetitions are interleaved (ours, theirs, theirs, ours, ...), so load from
other jobs hits both alike; the table gives medians and ours/theirs ratios
(> 1 means ours is faster). Measured:

- train step (forward, backward, Adam) on `--batch` x `--length` tokens:
  ours is `train_on_batch` after `compile()` (the default chunked loss),
  theirs is `loss.backward(); adam.step()` with `labels`;
- greedy decode of each `--new-tokens` from a `--source-length` source,
  batch `--decode-batch`, fixed length (no stop token), in new tokens/s;
- import time of `keras_encdec.models` per backend (fresh interpreter).

`--warm` runs each side once, untimed, right before each of its timed runs:
steady-state figures. Without it, each timed run follows the other side's
run, and on this project's CI VM (a Firecracker guest with nested paging)
memory left untouched for 20 ms or more is slow to touch again: a chain of
jitted matmuls over 26 MiB of weights takes 1.8-2.1 ms back to back,
3.8-6.7 ms after 20 ms asleep and 17-47 ms after 0.5 s
(`tools/probe_cold_memory.py`, BENCHMARKS.md). Both sides pay that
(30-40 ms per generate call here), which weighs most on the faster one.

Each train step's minor page faults are counted too (medians). XLA's CPU
runtime takes all of a step's intermediates from malloc as one block on
every call (about 0.5 GiB for T5Gemma 2 here); glibc maps a block that
large afresh and unmaps it on free, so our step faults in about 133,000
fresh 4 KiB pages, where transformers' tensors mostly reuse the heap glibc
keeps. The header prints `GLIBC_TUNABLES` and the kernel's transparent huge
page mode, which change that count; BENCHMARKS.md (eighth session) has
what they did to the times. `--malloc tcmalloc` runs each backend's
processes (both sides, and the import timing) with gperftools' tcmalloc
preloaded (`LD_PRELOAD`; Debian/Ubuntu: `apt-get install
libtcmalloc-minimal4`, or `libtcmalloc-minimal4t64`), which keeps freed
memory for reuse: hundreds of page faults per step on either side instead
of tens of thousands (BENCHMARKS.md, ninth session). The worker checks
that `malloc` is the preloaded library's.

Usage:
    python tools/benchmark_vs_transformers.py
    python tools/benchmark_vs_transformers.py --backends torch --repeats 3
    python tools/benchmark_vs_transformers.py --torch-threads 1  # loaded CPU
    python tools/benchmark_vs_transformers.py --family t5gemma2 --no-train
    python tools/benchmark_vs_transformers.py --warm  # steady state
    python tools/benchmark_vs_transformers.py --malloc tcmalloc
    python tools/benchmark_vs_transformers.py --dtype bfloat16 --no-train

Config (ANCHORS section 9): V=8192, width 256, FFN 1024, 4+4 layers,
4 heads / 2 kv heads x 64, float32, CPU (`--dtype bfloat16`: both built
in float32, then loaded in bfloat16, ours through Keras' `dtype`,
transformers' through `from_pretrained(dtype=...)`; greedy tokens then
differ between the two where bfloat16 rounding flips a near-tie). T5Gemma 2
adds the published 270m/1b attention settings: sliding window 512, RoPE
bases 1e4 / 1e6 and Gemma 3's layer pattern (5 sliding : 1 full, so 4
sliding blocks here).
"""

import argparse
import atexit
import ctypes.util
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

CONFIG = dict(
    vocabulary_size=8192,
    hidden_dim=256,
    intermediate_dim=1024,
    num_layers=4,
    num_heads=4,
    num_kv_heads=2,
    head_dim=64,
)


# T5Gemma 2 only: the window of the published 270m/1b presets.
T5GEMMA2_SLIDING_WINDOW = 512
# The tower transformers builds for the text-only T5Gemma 2 (never run).
TINY_VISION = dict(model_type="siglip_vision_model", hidden_size=16,
                   intermediate_size=32, num_hidden_layers=1,
                   num_attention_heads=2, image_size=28, patch_size=7,
                   vision_use_head=False)


def _build(config, family, dtype="float32"):
    """Our LM of `family` with random weights, and transformers' copy, both
    in `dtype` (`"float32"` or `"bfloat16"`: the float32 weights rounded)."""
    import torch
    import transformers

    import keras
    from keras_encdec import models

    keras.utils.set_random_seed(0)
    stacks = {
        f"{side}_{name}": value
        for side in ("encoder", "decoder")
        for name, value in config.items()
        if name != "vocabulary_size"
    }
    kwargs = {}
    if family == "t5gemma2":
        backbone_cls, lm_cls = models.T5Gemma2Backbone, models.T5Gemma2Seq2SeqLM
        stacks = {k.replace("encoder_hidden_dim", "hidden_dim"): v
                  for k, v in stacks.items() if k != "decoder_hidden_dim"}
        stacks.update(encoder_sliding_window=T5GEMMA2_SLIDING_WINDOW,
                      decoder_sliding_window=T5GEMMA2_SLIDING_WINDOW)
        hf_cls = transformers.T5Gemma2ForConditionalGeneration
    else:
        backbone_cls, lm_cls = models.T5GemmaBackbone, models.T5GemmaSeq2SeqLM
        hf_cls = transformers.T5GemmaForConditionalGeneration
    ours = lm_cls(backbone_cls(vocabulary_size=config["vocabulary_size"],
                               **stacks))
    folder = tempfile.mkdtemp(prefix="benchmark_vs_transformers_")
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    ours.export_to_transformers(folder)
    if family == "t5gemma2":
        hf_config = transformers.AutoConfig.from_pretrained(folder)
        hf_config.encoder.vision_config = (
            transformers.SiglipVisionConfig(**TINY_VISION)
        )
        kwargs["config"] = hf_config
        transformers.logging.set_verbosity_error()  # The unused tower's init.
    theirs = hf_cls.from_pretrained(folder, dtype=getattr(torch, dtype),
                                    **kwargs)
    theirs.generation_config.eos_token_id = None
    if dtype != "float32":  # Keras' `dtype` argument, as a user sets it.
        backbone = ours.backbone
        rounded = type(backbone).from_config(
            dict(backbone.get_config(), dtype=dtype))
        rounded.set_weights(backbone.get_weights())
        ours = lm_cls(rounded)
    return ours, theirs


def _minor_faults():
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def _timed(fn, faults=None):
    """Seconds `fn()` took; appends the minor page faults it caused to the
    list `faults` if given."""
    before = _minor_faults()
    start = time.perf_counter()
    fn()
    seconds = time.perf_counter() - start
    if faults is not None:
        faults.append(_minor_faults() - before)
    return seconds


def _interleaved(pairs, repeats, warm=False, faults=None):
    """`{name: [seconds, ...]}`, alternating which of the two runs first;
    with `warm`, each timed run right after an untimed one of its own.
    With a dict `faults`, also `faults[name]`: minor page faults per run."""
    times = {name: [] for name in pairs}
    names = list(pairs)
    for repeat in range(repeats):
        for name in names if repeat % 2 == 0 else names[::-1]:
            if warm:
                pairs[name]()
            times[name].append(_timed(
                pairs[name],
                None if faults is None else faults.setdefault(name, []),
            ))
    return times


def _start_backend():
    """Loads the LLVM-carrying libraries in an order that works: XLA (first
    compile), then transformers' T5Gemma (which imports triton), then
    keras-hub (which imports TensorFlow). triton after TensorFlow aborts the
    process ("Option 'bitcode-mdindex-threshold' registered more than
    once")."""
    if os.environ.get("KERAS_BACKEND") == "jax":
        import jax

        jax.jit(lambda v: v + 1)(1.0).block_until_ready()
    # Before `import keras`, which imports TensorFlow on that backend.
    from transformers import T5Gemma2ForConditionalGeneration  # noqa: F401
    from transformers import T5GemmaForConditionalGeneration  # noqa: F401

    import keras

    keras.ops.convert_to_numpy(keras.ops.ones(2) + 1)


# The library the parent preloaded into a worker (`--malloc`), or absent.
MALLOC_ENV = "BENCHMARK_VS_TRANSFORMERS_MALLOC"


class _DlInfo(ctypes.Structure):
    _fields_ = [("dli_fname", ctypes.c_char_p), ("dli_fbase", ctypes.c_void_p),
                ("dli_sname", ctypes.c_char_p), ("dli_saddr", ctypes.c_void_p)]


class _LinkMap(ctypes.Structure):
    _fields_ = [("l_addr", ctypes.c_void_p), ("l_name", ctypes.c_char_p)]


RTLD_DI_LINKMAP = 2


def _malloc_object():
    """The file of the shared object whose `malloc` this process calls."""
    process = ctypes.CDLL(None)
    info = _DlInfo()
    process.dladdr(ctypes.cast(process.malloc, ctypes.c_void_p),
                   ctypes.byref(info))
    return os.fsdecode(info.dli_fname)


def _check_preloaded(library):
    """Raises unless this process's `malloc` is defined by `library` (a
    `--malloc` choice; None: nothing to check). The dynamic linker only
    warns when it cannot preload a library, and a second allocator in
    `LD_PRELOAD` is loaded but unused."""
    if library is None:
        return
    try:
        handle = ctypes.CDLL(library, mode=os.RTLD_NOLOAD)._handle
    except OSError:
        raise SystemExit(f"--malloc: {library} is not loaded in the "
                         "benchmark process (see the dynamic linker's "
                         "message above).") from None
    link_map = ctypes.POINTER(_LinkMap)()
    ctypes.CDLL(None).dlinfo(ctypes.c_void_p(handle), RTLD_DI_LINKMAP,
                             ctypes.byref(link_map))
    path = os.fsdecode(link_map.contents.l_name)
    malloc_file = _malloc_object()
    if os.path.realpath(malloc_file) != os.path.realpath(path):
        raise SystemExit(f"--malloc: {library} is loaded, but the benchmark "
                         f"process's malloc is {malloc_file}'s (an earlier "
                         "LD_PRELOAD entry?).")


def run_backend(args):
    """Every measurement on this process's backend; prints one JSON line."""
    if MALLOC_ENV not in os.environ:
        raise SystemExit("--worker is internal: run the benchmark without it.")
    _check_preloaded(os.environ[MALLOC_ENV] or None)
    _start_backend()
    import numpy as np
    import torch

    if args.torch_threads:
        torch.set_num_threads(args.torch_threads)

    import keras

    from keras_encdec import testing

    ours, theirs = _build(CONFIG, args.family, args.dtype)
    vocab = CONFIG["vocabulary_size"]
    rng = np.random.default_rng(0)

    def ids(batch, length):
        return rng.integers(3, vocab, (batch, length)).astype("int32")

    batch, length = args.batch, args.length
    x = {
        "encoder_token_ids": ids(batch, length),
        "encoder_padding_mask": np.ones((batch, length), "int32"),
        "decoder_token_ids": ids(batch, length),
        "decoder_padding_mask": np.ones((batch, length), "int32"),
    }
    y = ids(batch, length)
    ours.compile(optimizer=keras.optimizers.Adam(1e-4), sampler="greedy")
    optimizer = torch.optim.Adam(theirs.parameters(), lr=1e-4)
    hf_train = dict(
        input_ids=torch.tensor(x["encoder_token_ids"], dtype=torch.long),
        attention_mask=torch.ones((batch, length), dtype=torch.long),
        decoder_input_ids=torch.tensor(x["decoder_token_ids"], dtype=torch.long),
        labels=torch.tensor(y, dtype=torch.long),
    )

    def hf_step():
        theirs.train()
        optimizer.zero_grad()
        theirs(**hf_train).loss.backward()
        optimizer.step()

    steps = {"ours": lambda: ours.train_on_batch(x, y), "transformers": hf_step}
    results = {}

    theirs.eval()
    source = ids(args.decode_batch, args.source_length)
    for new_tokens in args.new_tokens:
        inputs = testing.greedy_inputs(source, new_tokens)
        hf_source = torch.tensor(source, dtype=torch.long)
        outputs = {}

        def ours_generate():
            out = ours.generate(inputs, stop_token_ids=None)
            outputs["ours"] = np.asarray(out["decoder_token_ids"])[:, 1:]

        def hf_generate():
            with torch.inference_mode():
                out = theirs.generate(
                    input_ids=hf_source,
                    attention_mask=torch.ones_like(hf_source),
                    max_new_tokens=new_tokens,
                    do_sample=False,
                    decoder_start_token_id=2,
                )
            outputs["transformers"] = out[:, 1:].numpy()

        pairs = {"ours": ours_generate, "transformers": hf_generate}
        for fn in pairs.values():
            fn()  # Compile / warm up at this length.
        same = float(np.mean(outputs["ours"] == outputs["transformers"]))
        results[f"decode_{new_tokens}_tok_per_s"] = _interleaved(
            pairs, args.repeats, args.warm
        )
        results[f"decode_{new_tokens}_same_tokens"] = same
    # Training last: the two optimizers' updates differ in rounding, and
    # greedy tokens of the updated models would no longer be comparable.
    if not args.no_train:
        for fn in steps.values():
            fn()  # Compile / warm up.
        faults = {}
        results["train_step_ms"] = _interleaved(steps, args.repeats,
                                                args.warm, faults)
        results["train_step_page_faults"] = faults
    print("RESULTS " + json.dumps({"backend": keras.backend.backend(),
                                   "results": results}))


def import_seconds(env):
    """Seconds to `import keras_encdec.models` in a fresh interpreter with
    the environment `env` (a worker's)."""
    code = (
        "import time; t = time.perf_counter(); import keras_encdec.models; "
        "print(time.perf_counter() - t)"
    )
    out = subprocess.run([sys.executable, "-c", code], env=env,
                         capture_output=True, text=True, check=True)
    return float(out.stdout.split()[-1])


def _load():
    return os.getloadavg()[0]


def _transparent_hugepages():
    """The kernel's THP mode (`always`, `madvise` or `never`), or `n/a`."""
    try:
        with open("/sys/kernel/mm/transparent_hugepage/enabled") as f:
            modes = f.read().split()
    except OSError:
        return "n/a"
    return next((m[1:-1] for m in modes if m.startswith("[")), "n/a")


# gperftools' allocator; the minimal build is the one Debian ships alone.
TCMALLOC_NAMES = ("tcmalloc_minimal", "tcmalloc")


def _malloc_library(choice):
    """The shared library to preload for `--malloc`, or None for glibc's.

    `choice` is `glibc`, `tcmalloc` (found like the dynamic linker finds
    libraries) or a path to an allocator's shared library (made absolute).
    """
    if choice == "glibc":
        return None
    if choice == "tcmalloc":
        for name in TCMALLOC_NAMES:
            found = ctypes.util.find_library(name)
            if found:
                return found
        raise SystemExit(
            "--malloc tcmalloc: no libtcmalloc_minimal or libtcmalloc "
            "found by the dynamic linker. Install it (Debian/Ubuntu: "
            "`apt-get install libtcmalloc-minimal4`, or "
            "`libtcmalloc-minimal4t64` on newer releases) or pass the "
            "library's path, e.g. --malloc /usr/lib/x86_64-linux-gnu/"
            "libtcmalloc_minimal.so.4."
        )
    if not os.path.isfile(choice):
        raise SystemExit(
            f"--malloc: expected `glibc`, `tcmalloc` or the path of a shared "
            f"library; received {choice!r}, which is not a file."
        )
    if any(c in choice for c in " :"):
        raise SystemExit(
            f"--malloc: LD_PRELOAD splits paths at spaces and colons; "
            f"received {choice!r}. Use a path without them (a symlink)."
        )
    return os.path.abspath(choice)


def _worker_env(backend, preload):
    """The environment of a worker on `backend`, with `preload` (a library
    or None) first in `LD_PRELOAD` and named in `MALLOC_ENV`."""
    env = dict(os.environ, KERAS_BACKEND=backend, TF_CPP_MIN_LOG_LEVEL="3")
    env[MALLOC_ENV] = preload or ""
    if preload:
        env["LD_PRELOAD"] = " ".join(
            filter(None, [preload, os.environ.get("LD_PRELOAD")]))
    return env


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--family", choices=["t5gemma", "t5gemma2"],
                        default="t5gemma")
    parser.add_argument("--backends", nargs="+",
                        default=["torch", "jax", "tensorflow"])
    parser.add_argument("--dtype", choices=["float32", "bfloat16"],
                        default="float32",
                        help="both models' weights and compute dtype "
                        "(bfloat16: decoding only, with --no-train)")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--length", type=int, default=256)
    parser.add_argument("--decode-batch", type=int, default=4)
    parser.add_argument("--source-length", type=int, default=64)
    parser.add_argument("--new-tokens", type=int, nargs="+", default=[64, 256])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--import-repeats", type=int, default=2)
    parser.add_argument("--warm", action="store_true",
                        help="an untimed run of the same side right before "
                        "each timed run (steady state)")
    parser.add_argument("--no-train", action="store_true",
                        help="decode and import time only")
    parser.add_argument("--torch-threads", type=int, default=0,
                        help="torch intra-op threads in each process (both "
                        "sides on torch; transformers' side elsewhere); 0 "
                        "keeps torch's default")
    parser.add_argument("--malloc", default="glibc",
                        help="the allocator of each backend's process (both "
                        "sides): `glibc` (default), `tcmalloc` (preloaded), "
                        "or the path of an allocator's shared library")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.dtype != "float32" and not args.no_train:
        parser.error(
            f"--dtype {args.dtype} measures decoding only: with {args.dtype} "
            "variables, Adam's 1e-4 steps round away and the train step "
            "updates no weight. Add --no-train."
        )
    if args.worker:
        return run_backend(args)
    preload = _malloc_library(args.malloc)
    print(f"family={args.family} dtype={args.dtype} config={CONFIG} "
          f"train batch={args.batch}x{args.length} "
          f"decode batch={args.decode_batch} source={args.source_length} "
          f"torch threads={args.torch_threads or 'default'} "
          f"warm={args.warm} "
          f"malloc={preload or 'glibc'} "
          f"LD_PRELOAD={os.environ.get('LD_PRELOAD', '')!r} "
          f"GLIBC_TUNABLES={os.environ.get('GLIBC_TUNABLES', '')!r} "
          f"THP={_transparent_hugepages()}")
    print("| backend | metric | transformers | ours | ours / transformers "
          "| load (1 min) |")
    print("|---|---|---|---|---|---|")
    for backend in args.backends:
        command = [sys.executable, __file__, "--worker"] + sys.argv[1:]
        env = _worker_env(backend, preload)
        load_before = _load()
        out = subprocess.run(command, env=env, capture_output=True, text=True)
        load = (load_before + _load()) / 2
        line = [l for l in out.stdout.splitlines() if l.startswith("RESULTS ")]
        if not line:
            print(out.stdout[-2000:], out.stderr[-4000:])
            raise SystemExit(f"{backend} run failed")
        results = json.loads(line[0][len("RESULTS "):])["results"]
        for metric, times in results.items():
            if not isinstance(times, dict):
                print(f"| {backend} | {metric} | | {times:.2f} | | {load:.1f} |")
                continue
            ours, theirs = (statistics.median(times[k])
                            for k in ("ours", "transformers"))
            if metric.endswith("_page_faults"):
                print(f"| {backend} | {metric} | {theirs:.0f} | {ours:.0f} "
                      f"| | {load:.1f} |", flush=True)
                continue
            if metric.startswith("decode_"):
                new = int(metric.split("_")[1]) * args.decode_batch
                ours, theirs = new / ours, new / theirs
                ratio = ours / theirs
            else:
                ours, theirs = 1000 * ours, 1000 * theirs
                ratio = theirs / ours
            print(f"| {backend} | {metric} | {theirs:.1f} | {ours:.1f} "
                  f"| {ratio:.2f}x | {load:.1f} |", flush=True)
        seconds = [import_seconds(env) for _ in range(args.import_repeats)]
        print(f"| {backend} | import keras_encdec.models (s) | | "
              f"{statistics.median(seconds):.2f} | | {_load():.1f} |", flush=True)


if __name__ == "__main__":
    main()
