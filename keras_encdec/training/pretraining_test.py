"""The pretraining recipe: resume after a forced stop, objectives, LoRA,
distillation, the preset it writes, its errors and the command line.

Backend-independent orchestration (the training steps themselves are tested
per backend elsewhere): torch only (no XLA compiles; the fastest here).
"""

import os
import subprocess
import sys

import keras
import numpy as np
import pytest

from keras_encdec.models import T5GemmaSeq2SeqLM
from keras_encdec.models import T5GemmaSeq2SeqLMPreprocessor
from keras_encdec.models import T5GemmaTokenizer
from keras_encdec.testing import TINY_TEXT
from keras_encdec.testing import tiny_seq2seq_lm
from keras_encdec.testing import train_sentencepiece
from keras_encdec.training.pretraining import BACKUP_SUFFIX
from keras_encdec.training.pretraining import pretrain
from keras_encdec.training.pretraining import read_documents

pytestmark = pytest.mark.skipif(
    keras.backend.backend() != "torch",
    reason="backend-independent recipe (checked on torch: no XLA compiles)",
)
# Token ids 3..9 only: UL2's sentinels (Gemma ids >= 10 kept inside the
# tiny vocabulary) never occur in the data.
DOCUMENTS = [
    list(np.random.default_rng(n).integers(3, 10, n)) for n in (30, 17, 44, 9)
]
SMALL = dict(batch_size=2, encoder_length=12, decoder_length=10, verbose=0)


class Killed(Exception):
    pass


class StopAfter(keras.callbacks.Callback):
    """Raises `Killed` after `steps` train steps (a forced stop)."""

    def __init__(self, steps):
        super().__init__()
        self.steps, self.seen = steps, 0

    def on_train_batch_end(self, batch, logs=None):
        self.seen += 1
        if self.seen == self.steps:
            raise Killed()


def weights_of(folder):
    lm = T5GemmaSeq2SeqLM.from_preset(folder)
    return [keras.ops.convert_to_numpy(w) for w in lm.weights]


@pytest.fixture(scope="module")
def start_preset(tmp_path_factory):
    keras.utils.set_random_seed(0)
    folder = str(tmp_path_factory.mktemp("start") / "preset")
    tiny_seq2seq_lm(initializer_range=0.3).save_to_preset(folder)
    return folder


def test_resumed_run_ends_with_the_weights_of_an_uninterrupted_run(
    start_preset, tmp_path
):
    run = dict(steps=4, checkpoint_every=1, pack=True, objective="mix",
               **SMALL)
    whole = str(tmp_path / "whole")
    pretrain(start_preset, DOCUMENTS, output=whole, **run)
    resumed = str(tmp_path / "resumed")
    with pytest.raises(Killed):
        pretrain(start_preset, DOCUMENTS, output=resumed,
                 callbacks=[StopAfter(3)], **run)
    assert not os.path.exists(resumed)
    assert os.path.exists(resumed + BACKUP_SUFFIX)  # epochs 1-2 committed
    counter = StopAfter(steps=0)  # counts, never stops
    pretrain(start_preset, DOCUMENTS, output=resumed, callbacks=[counter],
             **run)
    assert counter.seen == 2  # steps 3 and 4 only
    assert not os.path.exists(resumed + BACKUP_SUFFIX)
    start, a, b = (weights_of(f) for f in (start_preset, whole, resumed))
    assert max(np.abs(x - y).max() for x, y in zip(a, b)) == 0.0
    assert max(np.abs(x - y).max() for x, y in zip(start, a)) > 1e-4


def test_ul2_with_lora_writes_a_merged_preset(start_preset, tmp_path):
    output = str(tmp_path / "lora")
    lm = pretrain(start_preset, DOCUMENTS, output=output, steps=2,
                  objective="ul2", lora_rank=2, learning_rate=1e-2, **SMALL)
    assert not any("lora" in w.path for w in lm.weights)
    loaded = weights_of(output)
    ours = [keras.ops.convert_to_numpy(w) for w in lm.weights]
    assert max(np.abs(x - y).max() for x, y in zip(ours, loaded)) == 0.0
    start = weights_of(start_preset)
    assert max(np.abs(x - y).max() for x, y in zip(start, loaded)) > 1e-4


def test_distillation_from_a_keras_hub_preset_teacher(tmp_path):
    from keras_encdec.adapt import adapt_decoder_only
    from keras_encdec.testing import tiny_gemma3_teacher

    keras.utils.set_random_seed(0)
    teacher = tiny_gemma3_teacher()
    before = [keras.ops.convert_to_numpy(w) for w in teacher.weights]
    folder = str(tmp_path / "teacher")
    teacher.save_to_preset(folder)
    student = adapt_decoder_only(teacher)
    student.preprocessor = None
    history = []

    class Losses(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            history.append(logs["loss"])

    pretrain(student, DOCUMENTS, output=str(tmp_path / "out"), steps=2,
             teacher=folder, callbacks=[Losses()], **SMALL)
    assert len(history) == 2 and all(np.isfinite(history))
    after = [keras.ops.convert_to_numpy(w) for w in teacher.weights]
    assert all(np.array_equal(x, y) for x, y in zip(before, after))


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(steps=5, checkpoint_every=2), "must divide"),
        (dict(steps=2, objective="ul2", teacher="gemma3_270m"), "PrefixLM"),
        (dict(steps=2, objective="t5"), "Unknown objective"),
        (dict(steps=0), "steps"),
    ],
)
def test_bad_arguments_are_refused(start_preset, tmp_path, kwargs, match):
    with pytest.raises(ValueError, match=match):
        pretrain(start_preset, DOCUMENTS, output=str(tmp_path / "x"),
                 **{**SMALL, **kwargs})


def test_read_documents(tmp_path):
    path = tmp_path / "a.txt"
    path.write_text("first doc\n\n  \nsecond doc\n")
    assert read_documents(str(path)) == ["first doc", "second doc"]
    assert read_documents([str(path)], "file") == [path.read_text()]
    with pytest.raises(FileNotFoundError, match="missing.txt"):
        read_documents(str(tmp_path / "missing.txt"))


def test_command_line_trains_and_writes_a_loadable_preset(tmp_path):
    keras.utils.set_random_seed(0)
    tokenizer = T5GemmaTokenizer(proto=train_sentencepiece(vocab_size=64))
    lm = tiny_seq2seq_lm(
        preprocessor=T5GemmaSeq2SeqLMPreprocessor(tokenizer))
    start = str(tmp_path / "start")
    lm.save_to_preset(start)
    data = tmp_path / "corpus.txt"
    data.write_text("\n".join(TINY_TEXT))
    output = str(tmp_path / "out")
    env = dict(os.environ, KERAS_BACKEND="torch")
    result = subprocess.run(
        [sys.executable, "-m", "keras_encdec", "pretrain", "--model", start,
         "--data", str(data), "--steps", "2", "--batch-size", "2",
         "--encoder-length", "16", "--decoder-length", "12", "--pack",
         "--output", output],
        capture_output=True, text=True, env=env, timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"Wrote preset folder '{output}'." in result.stdout
    assert "tok/s" in result.stdout and "loss" in result.stdout
    trained = T5GemmaSeq2SeqLM.from_preset(output)
    assert isinstance(trained.generate("the quick", max_length=8), str)
    bad = subprocess.run(
        [sys.executable, "-m", "keras_encdec", "pretrain", "--model", start,
         "--data", str(tmp_path / "none.txt"), "--steps", "2", "--output",
         output + "2"],
        capture_output=True, text=True, env=env, timeout=600,
    )
    assert bad.returncode == 2
    assert bad.stderr.strip().splitlines()[-1].startswith("error: Data file")
