"""The pretraining recipe: text files in, a trained preset out, resumable.

`pretrain(...)` loads a T5Gemma / T5Gemma 2 model, turns documents into
PrefixLM, UL2 or mixed examples (`keras_encdec.objectives`), optionally
packs several per row (segment ids), trains `steps` optimizer steps with
`fit` (progress bar with the loss and a `tok/s` metric) and writes a preset
that `from_preset` loads. `python -m keras_encdec pretrain` is its command
line (`keras_encdec.training.pretrain_cli`).

Resuming. Training runs as `steps / checkpoint_every` Keras epochs of
`checkpoint_every` steps; `AtomicBackupAndRestore` commits weights and
optimizer state after each. The example stream is deterministic for a seed
(documents are cycled in order), and a resumed run skips the batches of
the committed epochs, so a run killed at any point and started again with
the same arguments ends with the weights of an uninterrupted run.
"""

import collections
import logging
import os
import shutil
import time

import keras

from keras_encdec.objectives import PrefixLM
from keras_encdec.objectives import UL2
from keras_encdec.objectives import gemma_special_ids
from keras_encdec.objectives.base import Objective
from keras_encdec.training.backup_and_restore import AtomicBackupAndRestore

logger = logging.getLogger(__name__)

OBJECTIVES = ("prefixlm", "ul2", "mix")
DOCUMENT_UNITS = ("line", "file")
BACKUP_SUFFIX = ".pretrain-backup"


def read_documents(files, document_per="line"):
    """Documents of UTF-8 text files: one per non-empty line, or per file.

    Args:
        files: str or list of str. Text file paths.
        document_per: str. `"line"` or `"file"`. Defaults to `"line"`.

    Returns:
        A list of strings.

    Examples:

    >>> import os, tempfile
    >>> path = os.path.join(tempfile.mkdtemp(), "a.txt")
    >>> _ = open(path, "w").write("one doc\\n\\nanother doc\\n")
    >>> read_documents(path)
    ['one doc', 'another doc']
    """
    if document_per not in DOCUMENT_UNITS:
        raise ValueError(
            f"`document_per` must be one of {DOCUMENT_UNITS}. Received: "
            f"{document_per!r}."
        )
    files = [files] if isinstance(files, (str, os.PathLike)) else list(files)
    if not files:
        raise ValueError("No data files given. Expected one or more paths.")
    documents = []
    for path in files:
        if not os.path.isfile(path):
            raise FileNotFoundError(
                f"Data file '{path}' does not exist (or is not a file)."
            )
        with open(path, encoding="utf-8") as f:
            text = f.read()
        if document_per == "file":
            documents += [text] if text.strip() else []
        else:
            documents += [line for line in text.splitlines() if line.strip()]
    if not documents:
        raise ValueError(f"The data files {files} hold no text.")
    return documents


class Mixture(Objective):
    """PrefixLM and UL2 in turn: document `i` is cut by `objectives[i % n]`.

    Args:
        objectives: list of `Objective` with the same lengths and ids.
    """

    def __init__(self, objectives):
        first = objectives[0]
        super().__init__(first.encoder_sequence_length,
                         first.decoder_sequence_length,
                         tokenizer=first.tokenizer, bos_id=first.bos_id,
                         eos_id=first.eos_id, pad_id=first.pad_id,
                         seed=first.seed)
        self.objectives = list(objectives)
        self._document = -1

    def _tokens(self, document):
        self._document += 1  # called once per document, in order
        return super()._tokens(document)

    def _next_example(self, tokens, rng):
        turn = self.objectives[self._document % len(self.objectives)]
        return turn._next_example(tokens, rng)


def make_objective(name, lm, encoder_length, decoder_length, *, seed=0,
                   teacher_inputs=False):
    """The data objective `name` (`"prefixlm"`, `"ul2"`, `"mix"`) for `lm`.

    UL2's mode and sentinel ids are the Gemma vocabulary's unused tokens
    (`gemma_special_ids`, Gemma 3 for T5Gemma 2, Gemma 2 for T5Gemma),
    keeping those inside the model's vocabulary.
    """
    if name not in OBJECTIVES:
        raise ValueError(
            f"Unknown objective. Received: {name!r}. Expected one of "
            f"{OBJECTIVES}."
        )
    tokenizer = getattr(lm.preprocessor, "tokenizer", None)
    common = dict(tokenizer=tokenizer, seed=seed)
    lengths = (encoder_length, decoder_length)
    prefix = PrefixLM(*lengths, teacher_inputs=teacher_inputs, **common)
    if name == "prefixlm":
        return prefix
    vocab = lm.backbone.vocabulary_size
    family = "gemma3" if hasattr(lm.backbone, "eoi_token_index") else "gemma2"
    modes, sentinels = gemma_special_ids(family)
    ul2 = UL2(*lengths, vocabulary=family, mode_ids=modes,
              sentinel_ids=[i for i in sentinels if i < vocab], **common)
    return ul2 if name == "ul2" else Mixture([prefix, ul2])


def load_lm(model):
    """A `T5GemmaSeq2SeqLM` or `T5Gemma2Seq2SeqLM` from a task, a preset
    name or a preset / transformers folder."""
    from keras_encdec.models import T5Gemma2Seq2SeqLM
    from keras_encdec.models import T5GemmaSeq2SeqLM
    from keras_encdec.models.encdec_seq_2_seq_lm import EncDecSeq2SeqLM
    from keras_encdec.models.preset_registry import read_json

    if isinstance(model, EncDecSeq2SeqLM):
        return model
    if not isinstance(model, (str, os.PathLike)):
        raise TypeError(
            "`model` must be a T5Gemma / T5Gemma 2 Seq2SeqLM, a preset name "
            f"or a folder. Received: {type(model).__name__}."
        )
    cls = T5GemmaSeq2SeqLM
    config_path = os.path.join(str(model), "config.json")
    if model in T5Gemma2Seq2SeqLM.presets:
        cls = T5Gemma2Seq2SeqLM
    elif os.path.isfile(config_path):
        # keras-encdec presets name the backbone class, transformers
        # folders the model type ("t5gemma2").
        config = read_json(config_path)
        kind = str(config.get("class_name") or config.get("model_type"))
        if kind.lower().startswith("t5gemma2"):
            cls = T5Gemma2Seq2SeqLM
    return cls.from_preset(model)


def default_checkpoint_every(steps, at_most=100):
    """The largest divisor of `steps` that is at most `at_most`."""
    return max(d for d in range(1, min(steps, at_most) + 1) if steps % d == 0)


class TokensPerSecond(keras.callbacks.Callback):
    """Adds `tok/s` (real encoder + decoder tokens per second) to the batch
    logs, so the progress bar shows it next to the loss.

    Args:
        counts: `collections.deque` the data stream appends each batch's
            token count to, in step order.
    """

    def __init__(self, counts):
        super().__init__()
        self.counts = counts

    def on_train_batch_begin(self, batch, logs=None):
        self._start = time.perf_counter()

    def on_train_batch_end(self, batch, logs=None):
        tokens = self.counts.popleft() if self.counts else 0
        seconds = max(time.perf_counter() - self._start, 1e-9)
        if logs is not None:
            logs["tok/s"] = tokens / seconds


def batch_stream(objective, documents, batch_size, packed, skip, counts):
    """Endless `(x, y, sample_weight)` batches over the cycled documents,
    after skipping `skip` batches (those of committed epochs)."""

    def cycled():
        while True:
            yield from documents

    for index, (x, y, w) in enumerate(
        objective(cycled(), batch_size=batch_size, packed=packed)
    ):
        if index < skip:
            continue
        counts.append(int(x["encoder_padding_mask"].sum()
                          + x["decoder_padding_mask"].sum()))
        yield x, y, w


def pretrain(model, data, *, output, steps, objective="prefixlm",
             batch_size=8, encoder_length=512, decoder_length=512,
             learning_rate=1e-4, lora_rank=None, pack=False, seed=0,
             teacher=None, document_per="line", checkpoint_every=None,
             callbacks=(), overwrite=False, verbose="auto"):
    """Pretrains an encoder-decoder on text and writes a preset.

    Args:
        model: a `T5GemmaSeq2SeqLM` / `T5Gemma2Seq2SeqLM`, or a preset
            name or folder (transformers folders too).
        data: str or list of str: text file paths (`read_documents`); or
            a list of documents as token-id sequences.
        output: str. Preset folder to write at the end.
        steps: int. Optimizer steps.
        objective: str. `"prefixlm"`, `"ul2"` or `"mix"` (PrefixLM and UL2
            on alternate documents). Defaults to `"prefixlm"`.
        batch_size: int. Rows per step. Defaults to 8.
        encoder_length, decoder_length: int. Row lengths. Default to 512.
        learning_rate: float. AdamW learning rate. Defaults to `1e-4`.
        lora_rank: int or None. Train LoRA adapters of this rank (merged
            into the weights before saving). Defaults to None (all weights).
        pack: bool. Pack several examples per row (segment ids). Defaults
            to False.
        seed: int. Seed of the weights' randomness and the data. Defaults
            to 0.
        teacher: None, or the decoder-only model to distil from with
            `PrefixLMDistillation` (PrefixLM only, unpacked): a keras-hub
            causal LM / backbone, a Gemma 3 GGUF file, a keras-hub preset
            or a transformers folder (see `load_teacher`).
        document_per: str. `"line"` or `"file"` for text files. Defaults
            to `"line"`.
        checkpoint_every: int or None. Steps per committed checkpoint; must
            divide `steps`. Defaults to the largest divisor of `steps` up
            to 100.
        callbacks: list of Keras callbacks added to `fit`.
        overwrite: bool. Replace an `output` folder keras-encdec did not
            write. Defaults to False.
        verbose: `fit` verbosity. Defaults to `"auto"` (progress bar).

    Returns:
        The trained task (its preprocessor attached again).

    Examples:

    >>> import os, tempfile
    >>> from keras_encdec.testing import tiny_seq2seq_lm
    >>> folder = tempfile.mkdtemp()
    >>> lm = pretrain(tiny_seq2seq_lm(), [list(range(5, 40))] * 4,
    ...               output=os.path.join(folder, "preset"), steps=2,
    ...               batch_size=2, encoder_length=8, decoder_length=8,
    ...               verbose=0)
    >>> "config.json" in os.listdir(os.path.join(folder, "preset"))
    True
    """
    for name, value in (("steps", steps), ("batch_size", batch_size)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"`{name}` must be an int >= 1. Received: "
                             f"{name}={value!r}.")
    every = checkpoint_every or default_checkpoint_every(steps)
    if steps % every:
        raise ValueError(
            f"`checkpoint_every` must divide `steps`. Received: "
            f"checkpoint_every={every}, steps={steps}."
        )
    if teacher is not None and (objective != "prefixlm" or pack):
        raise ValueError(
            "Distillation (`teacher`) trains on PrefixLM rows one example "
            f"each. Received: objective={objective!r}, pack={pack}. Expected "
            "objective='prefixlm' and pack=False."
        )
    documents = data
    if isinstance(data, (str, os.PathLike)) or (
        isinstance(data, (list, tuple))
        and all(isinstance(d, (str, os.PathLike)) for d in data)
    ):
        documents = read_documents(data, document_per)
    keras.utils.set_random_seed(seed)
    lm = load_lm(model)
    examples = make_objective(objective, lm, encoder_length, decoder_length,
                              seed=seed, teacher_inputs=teacher is not None)
    if lora_rank:
        lm.backbone.enable_lora(lora_rank)
    compile_kwargs = {}
    if teacher is not None:
        from keras_encdec.objectives import PrefixLMDistillation

        compile_kwargs["objective"] = PrefixLMDistillation(
            load_teacher(teacher))
    # A fixed name: checkpoints match variables by path, also in-process.
    lm.compile(optimizer=keras.optimizers.AdamW(learning_rate,
                                                name="pretrain_adamw"),
               **compile_kwargs)
    backup_dir = os.path.abspath(output).rstrip(os.sep) + BACKUP_SUFFIX
    backup = AtomicBackupAndRestore(backup_dir, delete_checkpoint=False)
    pointer = backup.read_pointer()
    done = 0 if pointer is None else pointer["epoch"]
    if done:
        logger.info("Resuming from step %d (checkpoint in '%s').",
                    done * every, backup_dir)
    counts = collections.deque()
    stream = batch_stream(examples, documents, batch_size, pack,
                          done * every, counts)
    import tensorflow as tf  # keras-hub tasks take datasets, not generators

    spec = examples.as_dataset([], batch_size, pack).element_spec
    dataset = tf.data.Dataset.from_generator(lambda: stream,
                                             output_signature=spec)
    preprocessor, lm.preprocessor = lm.preprocessor, None  # token ids in
    try:
        lm.fit(dataset, steps_per_epoch=every, epochs=steps // every,
               callbacks=[backup, TokensPerSecond(counts), *callbacks],
               verbose=verbose)
    finally:
        lm.preprocessor = preprocessor
    if lora_rank:
        lm.backbone.merge_lora()
    lm.save_to_preset(output, overwrite=overwrite)
    shutil.rmtree(backup_dir, ignore_errors=True)
    logger.info("Wrote preset folder '%s'.", output)
    return lm


def load_teacher(teacher):
    """A keras-hub decoder-only teacher for `PrefixLMDistillation`.

    Args:
        teacher: a keras-hub causal LM or backbone (used as is); a Gemma 3
            `.gguf` file (built by `keras_encdec.adapt.keras_hub_gemma3.
            to_keras_hub_gemma3`); or a keras-hub preset name / folder or
            transformers `Gemma2ForCausalLM` / `Gemma3ForCausalLM` folder,
            loaded by keras-hub's `Backbone.from_preset`. Only JSON,
            safetensors, `.weights.h5` and GGUF are read.

    Returns:
        A keras-hub causal LM or backbone.
    """
    import keras_hub

    from keras_encdec.adapt.gguf_source import is_gguf_file
    from keras_encdec.adapt.keras_hub_gemma3 import to_keras_hub_gemma3

    if isinstance(teacher, (keras_hub.models.CausalLM,
                            keras_hub.models.Backbone)):
        return teacher
    if not isinstance(teacher, (str, os.PathLike)):
        raise TypeError(
            "`teacher` must be a keras-hub causal LM or backbone, or a path "
            f"or preset name. Received: {type(teacher).__name__}."
        )
    teacher = os.fspath(teacher)
    if is_gguf_file(teacher):
        return to_keras_hub_gemma3(teacher)
    return keras_hub.models.Backbone.from_preset(teacher)
