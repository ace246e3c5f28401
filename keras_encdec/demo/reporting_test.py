import collections
import os

import keras
import numpy as np
import pytest

from keras_encdec.demo import reporting

pytestmark = pytest.mark.skipif(
    keras.backend.backend() != "jax", reason="no backend compute: one backend"
)


def _reference_chrf(hypotheses, references, order=6, beta=2.0):
    """chrF from its definition (Popovic 2015) in sacrebleu's corpus form."""
    def grams(text, n):
        text = text.replace(" ", "")
        return collections.Counter(text[i:i + n]
                                   for i in range(len(text) - n + 1))

    stats = np.zeros((order, 3))  # matches, hypothesis, reference counts.
    for hypothesis, reference in zip(hypotheses, references):
        for n in range(1, order + 1):
            h, r = grams(hypothesis, n), grams(reference, n)
            stats[n - 1] += (sum((h & r).values()), sum(h.values()),
                             sum(r.values()))
    # Precision and recall averaged over the orders both sides have,
    # then one F-beta (sacrebleu's default, `eps_smoothing=False`).
    kept = [(m / h, m / r) for m, h, r in stats if h > 0 and r > 0]
    precision = sum(p for p, _ in kept) / len(kept)
    recall = sum(r for _, r in kept) / len(kept)
    return (100.0 * (1 + beta**2) * precision * recall
            / (beta**2 * precision + recall))


def test_chrf_matches_definition_and_sacrebleu():
    import sacrebleu

    hypotheses = ["Return the sum of a and b.", "Split the path.", "xyz"]
    references = ["Return a plus b.", "Split a path into parts.",
                  "Close the file."]
    ours = reporting.chrf(hypotheses, references)
    assert abs(ours - _reference_chrf(hypotheses, references)) < 1e-9
    assert ours == sacrebleu.corpus_chrf(hypotheses, [references]).score
    assert reporting.chrf(references, references) == 100.0
    with pytest.raises(ValueError, match="one reference per hypothesis"):
        reporting.chrf(["a"], ["a", "b"])


def test_plot_loss_curve_writes_png(tmp_path):
    path = reporting.plot_loss_curve([3.0, 2.0, 2.5, 1.0],
                                     str(tmp_path / "loss.png"))
    with open(path, "rb") as file:
        assert file.read(8) == b"\x89PNG\r\n\x1a\n"
    assert os.path.getsize(path) > 1000
    with pytest.raises(ValueError, match="non-empty"):
        reporting.plot_loss_curve([], str(tmp_path / "empty.png"))


def test_tokens_per_second_recovers_step_losses():
    bar = reporting.TokensPerSecond([5, 7, 9, 11])
    step_losses = [4.0, 3.0, 2.5, 1.5]
    bar.on_train_begin()
    for epoch in range(2):  # Keras logs the running mean of each epoch.
        bar.on_epoch_begin(epoch)
        for k in range(2):
            own = step_losses[2 * epoch:2 * epoch + k + 1]
            bar.on_train_batch_end(k, {"loss": sum(own) / len(own)})
    bar.on_train_end()
    np.testing.assert_allclose(bar.losses, step_losses, atol=1e-12)
    assert len(bar.seconds) == 4 and bar._tokens == 32


def test_peak_memory_sees_an_allocation():
    before = reporting.peak_memory_bytes()
    block = np.ones(64 * 2**20 // 8 + before // 8)  # Past any earlier peak.
    assert reporting.peak_memory_bytes() >= block.nbytes
