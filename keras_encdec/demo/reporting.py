"""Evaluation, plots, progress bars and resource figures for the demo."""

import logging
import resource
import sys
import time

import keras
import numpy as np

logger = logging.getLogger(__name__)


def chrf(hypotheses, references):
    """Corpus chrF (sacrebleu's defaults: character 6-grams, beta 2).

    Args:
        hypotheses: list of str. Model outputs.
        references: list of str. One reference per hypothesis.

    Returns:
        float: the score, 0-100.

    Examples:

    >>> round(chrf(["the cat sat"], ["the cat sat"]), 1)
    100.0
    """
    import sacrebleu

    if len(hypotheses) != len(references):
        raise ValueError(
            f"chrf needs one reference per hypothesis; received "
            f"{len(hypotheses)} hypotheses and {len(references)} references"
        )
    return float(sacrebleu.corpus_chrf(list(hypotheses),
                                       [list(references)]).score)


def peak_memory_bytes():
    """Peak resident memory of this process so far (Linux `ru_maxrss`).

    Returns:
        int: bytes.

    Examples:

    >>> peak_memory_bytes() > 0
    True
    """
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    # Kilobytes on Linux, bytes on macOS.
    return int(peak if sys.platform == "darwin" else peak * 1024)


def cpu_seconds():
    """User + system CPU time of this process so far, in seconds.

    On a shared machine this tracks the work done better than wall time.

    Examples:

    >>> cpu_seconds() > 0
    True
    """
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return float(usage.ru_utime + usage.ru_stime)


def plot_loss_curve(losses, path, title="Fine-tuning loss"):
    """Writes a PNG of per-step losses (and their running mean).

    Args:
        losses: list of float. One loss per optimizer step.
        path: str. The PNG file to write.
        title: str. The figure title.

    Returns:
        str: `path`.

    Examples:

    >>> import os, tempfile
    >>> png = os.path.join(tempfile.mkdtemp(), "loss.png")
    >>> os.path.getsize(plot_loss_curve([3.0, 2.5, 2.0], png)) > 0
    True
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    losses = np.asarray(losses, dtype="float64")
    if losses.ndim != 1 or losses.size == 0:
        raise ValueError(
            f"losses must be a non-empty list of floats; received shape "
            f"{losses.shape}"
        )
    steps = np.arange(1, losses.size + 1)
    figure, axis = plt.subplots(figsize=(6, 3.5))
    axis.plot(steps, losses, marker="o", markersize=3, label="per step")
    window = max(1, losses.size // 5)
    running = np.convolve(losses, np.ones(window) / window, mode="valid")
    axis.plot(steps[window - 1:], running, label=f"mean of {window}")
    axis.set_xlabel("optimizer step")
    axis.set_ylabel("cross-entropy (nats/token)")
    axis.set_title(title)
    axis.grid(alpha=0.3)
    axis.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path


class TokensPerSecond(keras.callbacks.Callback):
    """A tqdm bar over training steps showing loss and tokens/s.

    Args:
        tokens_per_step: list of int. The real (unpadded) tokens of each
            step's batch, encoder and decoder together, in step order.
        description: str. The bar's label.

    After `fit`, `losses` holds each step's loss and `seconds` each step's
    wall time. Keras reports the running mean of the epoch's losses
    (weighted by batch size); with equal batches, step `k`'s own loss is
    `k * mean_k - (k - 1) * mean_(k-1)`, which is what `losses` stores.

    Examples:

    >>> bar = TokensPerSecond([10, 10])
    >>> bar.losses
    []
    """

    def __init__(self, tokens_per_step, description="fine-tune"):
        super().__init__()
        self.tokens_per_step = list(tokens_per_step)
        self.description = description
        self.losses, self.seconds = [], []

    def on_train_begin(self, logs=None):
        from tqdm.auto import tqdm

        self._bar = tqdm(total=len(self.tokens_per_step), unit="step",
                         desc=self.description, file=sys.stderr)
        self._tokens, self._mean, self._epoch_steps = 0, 0.0, 0
        self._start = time.perf_counter()
        self._last = self._start

    def on_train_batch_end(self, batch, logs=None):
        now = time.perf_counter()
        self.seconds.append(now - self._last)
        self._last = now
        step = len(self.losses)
        k = step - self._epoch_steps  # Steps already done in this epoch.
        mean = float((logs or {}).get("loss", float("nan")))
        self.losses.append((k + 1) * mean - k * self._mean)
        self._mean = mean
        self._tokens += self.tokens_per_step[step % len(self.tokens_per_step)]
        rate = self._tokens / max(now - self._start, 1e-9)
        self._bar.set_postfix(loss=f"{self.losses[-1]:.3f}",
                              tok_s=f"{rate:.0f}")
        self._bar.update(1)

    def on_epoch_begin(self, epoch, logs=None):
        self._mean = 0.0
        self._epoch_steps = len(self.losses)

    def on_train_end(self, logs=None):
        self._bar.close()


def generate_with_progress(lm, texts, *, batch_size, max_length,
                           description="generate"):
    """`lm.generate` in batches with a tqdm bar showing generated tokens/s.

    Args:
        lm: a compiled Seq2SeqLM (its sampler decides the decoding).
        texts: list of str. Encoder inputs.
        batch_size: int. Texts per `generate` call (the last may be short;
            it is padded with repeats so every call has the same shape and
            compiles once).
        max_length: int. Decoder length bound passed to `generate`.
        description: str. The bar's label.

    Returns:
        list of str, one output per text.
    """
    from tqdm.auto import tqdm

    outputs, produced = [], 0
    start = time.perf_counter()
    with tqdm(total=len(texts), unit="text", desc=description,
              file=sys.stderr) as bar:
        for begin in range(0, len(texts), batch_size):
            chunk = list(texts[begin:begin + batch_size])
            padded = chunk + [chunk[-1]] * (batch_size - len(chunk))
            result = lm.generate(padded, max_length=max_length)[:len(chunk)]
            outputs.extend(result)
            produced += sum(
                len(lm.preprocessor.tokenizer.tokenize(text))
                for text in result
            )
            rate = produced / max(time.perf_counter() - start, 1e-9)
            bar.set_postfix(tok_s=f"{rate:.1f}")
            bar.update(len(chunk))
    return outputs
