"""The family-independent part of the encoder-decoder LM tasks.

`EncDecSeq2SeqLM` holds what T5Gemma and T5Gemma 2 share: the functional
model (decoder hidden states -> soft-capped logits), `from_preset` for
keras-encdec, keras-hub and transformers folders, transformers export, the
training loss wiring, and (through `EncDecGenerationMixin`) the cached
generation loop. A family subclass sets `backbone_cls`,
`preprocessor_cls`, `transformers_converter`, `backbone_preset_kwargs` and
`presets`, and checks its own inputs in `__call__`.
"""

import contextlib
import logging

from keras import ops
from keras_hub.models import Seq2SeqLM

from keras_encdec.convert import preset_loader
from keras_encdec.convert import transformers_t5gemma
from keras_encdec.errors import log_missing_tokenizer
from keras_encdec.losses.dense import soft_cap
from keras_encdec.models.encdec_inputs import has_segment_ids
from keras_encdec.models.encdec_generation import EncDecGenerationMixin
from keras_encdec.models.shuffled_fit import ShuffledFitMixin
from keras_encdec.models.task_guards import TaskGuardsMixin
from keras_encdec.models import vocab_major_head
from keras_encdec.models.torch_adam import use_fast_adam_update
from keras_encdec.objectives import training as training_objective
from keras_encdec.utils.validation import check_known_kwargs

logger = logging.getLogger(__name__)

FROM_PRESET_KWARGS = ("preprocessor", "dtype", "remat", "name", "trainable")


class EncDecSeq2SeqLM(
    EncDecGenerationMixin, TaskGuardsMixin, ShuffledFitMixin, Seq2SeqLM
):
    """Base of the encoder-decoder LM tasks (see the module docstring).

    Not used directly: build a `T5GemmaSeq2SeqLM` or a `T5Gemma2Seq2SeqLM`.

    Args:
        backbone: the family's backbone (`backbone_cls`).
        preprocessor: the family's preprocessor (`preprocessor_cls`) or
            None. With None, inputs must be token dicts. Defaults to `None`.
        **kwargs: passed to `keras_hub.models.Seq2SeqLM`.
    """

    backbone_cls = None
    preprocessor_cls = None
    transformers_converter = None
    backbone_preset_kwargs = ("dtype",)

    def __init__(self, backbone, preprocessor=None, **kwargs):
        check_known_kwargs(
            type(self).__name__, kwargs, ("backbone", "preprocessor", "remat"),
            allowed=("name", "trainable", "dtype"),
        )
        _check_vocabulary(backbone, preprocessor)
        # === Layers ===
        self.backbone = backbone
        self.preprocessor = preprocessor

        # === Functional model ===
        inputs = backbone.input
        hidden_states = backbone(inputs)["decoder_sequence_output"]
        logits = self.compute_logits(hidden_states)
        super().__init__(inputs=inputs, outputs=logits, **kwargs)

    def __call__(self, inputs, *args, **kwargs):
        self._check_call_inputs(inputs)
        return super().__call__(inputs, *args, **kwargs)

    def model_inputs(self, inputs):
        """`inputs` without the keys only the objective reads (e.g. the
        teacher's `teacher_token_ids`); the loss still gets all of them."""
        keys = () if self.objective is None else self.objective.input_keys
        if isinstance(inputs, dict) and any(k in inputs for k in keys):
            inputs = {k: v for k, v in inputs.items() if k not in keys}
        return inputs

    @classmethod
    def from_preset(cls, preset, load_weights=True, **kwargs):
        """Builds the LM from a preset name, folder or hub handle.

        Accepts everything `T5GemmaBackbone.from_preset` accepts. For
        transformers and keras-hub folders, the preprocessor is built from
        the folder's SentencePiece model when there is one; otherwise the LM
        has `preprocessor=None` (a message is logged) and takes token dicts.

        Args:
            preset: str. The preset to load.
            load_weights: bool. Load the weights. Defaults to `True`.
            **kwargs: `preprocessor=` to override it, `dtype=` and
                `remat=` for the backbone, and task arguments.

        Examples:

        >>> from keras_encdec.models import T5GemmaSeq2SeqLM
        >>> lm = T5GemmaSeq2SeqLM.from_preset("t5gemma_tiny_random")
        >>> isinstance(lm.generate("hello", max_length=8), str)
        True
        >>> T5GemmaSeq2SeqLM.from_preset("t5gemma_tiny_random",
        ...                              remat=True).backbone.remat
        True
        """
        known = FROM_PRESET_KWARGS + tuple(cls.backbone_preset_kwargs)
        check_known_kwargs(
            f"{cls.__name__}.from_preset", kwargs, known, allowed=known
        )
        remat = kwargs.pop("remat", None)
        lm = cls._from_preset(preset, load_weights, **kwargs)
        if remat is not None:
            lm.backbone.remat = remat
        return lm

    @classmethod
    def _from_preset(cls, preset, load_weights, **kwargs):
        fmt, folder = preset_loader.resolve(preset, cls.presets)
        if fmt == preset_loader.KERAS_ENCDEC:
            with preset_loader.naming_errors(folder):
                lm = super().from_preset(folder, load_weights, **kwargs)
            _check_vocabulary(lm.backbone, lm.preprocessor)
            return lm
        backbone_kwargs = {
            name: kwargs.pop(name)
            for name in cls.backbone_preset_kwargs
            if name in kwargs
        }
        backbone = cls.backbone_cls.from_preset(
            folder, load_weights=load_weights, **backbone_kwargs
        )
        preprocessor = kwargs.pop("preprocessor", "auto")
        if preprocessor == "auto":
            preprocessor = None
            if preset_loader.foreign_tokenizer_file(fmt, folder):
                preprocessor = cls.preprocessor_cls.from_preset(folder)
            else:
                log_missing_tokenizer(folder)
        return cls(backbone=backbone, preprocessor=preprocessor, **kwargs)

    def export_to_transformers(
        self, path, max_shard_bytes=2 * 1024**3, overwrite=False
    ):
        """Writes a transformers `T5GemmaForConditionalGeneration` folder.

        The folder holds `config.json`, safetensors weights (streamed in
        shards of at most `max_shard_bytes`) and, with a preprocessor,
        `tokenizer.model`. Weights keep their dtype, so a transformers ->
        keras-encdec -> transformers round trip is bit-identical.

        The folder is written atomically (into a temporary sibling, then
        moved into place): an interrupted export leaves the old folder or
        the new one, and files of an earlier export (old shards) are gone.
        Free disk space is checked first.

        Args:
            path: str. Output folder (created if needed).
            max_shard_bytes: int. Largest safetensors shard. Defaults to
                2 GiB.
            overwrite: bool. Replace a folder holding files keras-encdec
                did not write. Defaults to `False` (such a folder raises
                `keras_encdec.errors.TargetExistsError`).

        Examples:

        >>> import os, tempfile
        >>> from keras_encdec.models import T5GemmaSeq2SeqLM
        >>> lm = T5GemmaSeq2SeqLM.from_preset("t5gemma_tiny_random")
        >>> folder = tempfile.mkdtemp()
        >>> lm.export_to_transformers(folder)
        >>> sorted(os.listdir(folder))[1:3]  # [0] is the save manifest
        ['config.json', 'model.safetensors']
        """
        transformers_t5gemma.export_task(
            self, path, max_shard_bytes=max_shard_bytes, overwrite=overwrite
        )

    def compile(
        self,
        optimizer="auto",
        *,
        objective=None,
        loss=None,
        weighted_metrics="auto",
        sampler="top_k",
        **kwargs,
    ):
        """Configures training and generation.

        With neither `objective` nor `loss` (the default), `fit` trains with
        `keras_encdec.objectives.TokenCrossEntropy()`: the chunked linear
        cross-entropy (`keras_encdec.losses.linear_cross_entropy`) computed
        from the decoder hidden states and the output embedding, with the
        final soft-cap fused in, so no `[batch, length, vocab]` logits are
        built in a training step. The loss is the weighted mean over tokens,
        `sum(w * loss) / sum(w)`, labels -100 ignored. `objective=` picks
        another training objective (e.g. `PrefixLMDistillation`); `evaluate`
        reports the objective's loss, computed by the same code. Metrics that
        need logits are unavailable with an objective, so
        `weighted_metrics="auto"` means none.

        `loss=` any Keras loss (e.g. `keras.losses.
        SparseCategoricalCrossentropy(from_logits=True)`) trains on
        materialized logits instead, as keras-hub does; `"auto"` metrics
        are then token accuracy.

        On torch, a Keras `Adam` (including `"auto"`) updates CPU variables
        through `keras_encdec.models.torch_adam.fast_adam_update`: Keras'
        own update, bit for bit, in place in cache-sized slices.

        Args:
            optimizer: `"auto"` (Adam, 2e-5) or a Keras optimizer.
            objective: a `keras_encdec.objectives.TrainingObjective` or None.
                Defaults to None (`TokenCrossEntropy()` unless `loss` is
                given).
            loss: a Keras loss, or None (or `"auto"`) for the objective.
                Defaults to None.
            weighted_metrics: `"auto"` or a list of Keras metrics.
            sampler: a keras-hub sampler name or instance for `generate`.
                Defaults to `"top_k"`, as in keras-hub.
            **kwargs: passed to `keras.Model.compile`.

        Examples:

        >>> from keras_encdec.models import T5GemmaSeq2SeqLM
        >>> lm = T5GemmaSeq2SeqLM.from_preset("t5gemma_tiny_random")
        >>> lm.compile(optimizer="adam")  # chunked cross-entropy
        >>> history = lm.fit({"encoder_text": ["a b"], "decoder_text": ["c"]},
        ...                  verbose=0)
        >>> lm.objective
        TokenCrossEntropy(impl=None)
        """
        objective = training_objective.resolve(objective, loss)
        if objective is not None:
            objective.bind(self)
            loss = None
            if weighted_metrics == "auto":
                weighted_metrics = None
        self._objective = objective
        super().compile(
            optimizer=optimizer,
            loss=loss,
            weighted_metrics=weighted_metrics,
            sampler=sampler,
            **kwargs,
        )
        use_fast_adam_update(self.optimizer)

    @property
    def objective(self):
        """The `TrainingObjective` of `compile`, or None (a Keras loss)."""
        return getattr(self, "_objective", None)

    @property
    def non_trainable_variables(self):
        # An objective's frozen state (a teacher) reaches compiled steps as
        # state arguments; it is never saved (not an attribute of the task).
        variables = super().non_trainable_variables
        if self.objective is None:
            return variables
        seen = {id(v) for v in variables}
        extra = [v for v in self.objective.state_variables()
                 if id(v) not in seen]
        return variables + extra

    def fit(self, *args, **kwargs):
        with self._objective_state_kept():
            return super().fit(*args, **kwargs)

    def train_on_batch(self, *args, **kwargs):
        with self._objective_state_kept():
            return super().train_on_batch(*args, **kwargs)

    def evaluate(self, *args, **kwargs):
        with self._objective_outputs(), self._objective_state_kept():
            return super().evaluate(*args, **kwargs)

    def test_on_batch(self, *args, **kwargs):
        with self._objective_outputs(), self._objective_state_kept():
            return super().test_on_batch(*args, **kwargs)

    @contextlib.contextmanager
    def _objective_outputs(self):
        # `evaluate` scores with the objective, so its forward pass returns
        # hidden states as in training (`predict` keeps logits).
        self._evaluating = True
        try:
            yield
        finally:
            self._evaluating = False

    @contextlib.contextmanager
    def _objective_state_kept(self):
        # On jax, Keras detaches state values during a step; a step that
        # raises (e.g. missing teacher inputs) must not leave the teacher
        # empty. References, not copies.
        objective = self.objective
        variables = [] if objective is None else objective.state_variables()
        values = [(v, v._value) for v in variables]
        try:
            yield
        except BaseException:
            for variable, value in values:
                if variable._value is None:
                    variable._value = value
            raise

    def call(self, inputs, training=None, mask=None):
        inputs = self.model_inputs(inputs)  # jax steps call `call` directly
        hidden = self._returns_hidden_states(training)
        if hidden or has_segment_ids(inputs):
            # Packed inputs run outside the functional graph (the backbone's).
            hidden_states = self.backbone(inputs, training=training)[
                "decoder_sequence_output"
            ]
            return hidden_states if hidden else self.compute_logits(hidden_states)
        return super().call(inputs, training=training, mask=mask)

    def _returns_hidden_states(self, training):
        """Whether this forward pass feeds the objective (no logits)."""
        return self.objective is not None and bool(
            training or getattr(self, "_evaluating", False)
        )

    def output_embedding(self):
        """The `[vocab, width]` output embedding (tied or untied head)."""
        embedding = self.backbone.decoder_token_embedding
        matrix = (
            embedding.embeddings
            if embedding.tie_weights
            else ops.transpose(embedding.reverse_embeddings)
        )
        if "int" in str(matrix.dtype):
            raise TypeError(
                "The chunked loss needs a floating-point output embedding. "
                f"Received: a quantized embedding (dtype={matrix.dtype}). "
                "Quantize only the projections (e.g. `layer.quantize('int8')` "
                "on attention/MLP layers), or compile with a Keras loss to "
                "train on logits."
            )
        return matrix

    def compute_loss(
        self, x=None, y=None, y_pred=None, sample_weight=None, training=True
    ):
        if self.objective is None:
            return super().compute_loss(
                x, y, y_pred, sample_weight, training=training
            )
        if y is None:
            raise ValueError(
                "fit/evaluate need targets `y`: token ids [batch, length]. "
                "Received y=None. Pass (x, y[, sample_weight]) or attach a "
                "preprocessor that builds them from text."
            )
        loss = self.objective.compute_loss(self, x, y, y_pred, sample_weight)
        for extra in self.losses:
            loss = loss + self._aggregate_additional_loss(extra)
        return loss

    def compute_logits(self, hidden_states, cached=False):
        """Maps decoder hidden states to soft-capped vocabulary logits.

        `cached=True` marks a cached decoder pass (`call_decoder_with_cache`): for
        one position per row (`hidden_states [batch, 1, D]`, a decode step)
        on JAX's CPU backend, a plain tied table then multiplies in
        vocabulary order (`keras_encdec/models/vocab_major_head.py`).
        """
        embedding = self.backbone.decoder_token_embedding
        one_position = len(hidden_states.shape) == 3 and hidden_states.shape[1] == 1
        if cached and one_position and vocab_major_head.applies(embedding):
            logits = vocab_major_head.logits(embedding, hidden_states)
        else:
            logits = embedding(hidden_states, reverse=True)
        return soft_cap(logits, self.backbone.final_logit_soft_cap)


def _check_vocabulary(backbone, preprocessor):
    tokenizer = getattr(preprocessor, "tokenizer", None)
    if tokenizer is None or getattr(tokenizer, "proto", None) is None:
        return  # No vocabulary yet (assets load after config); checked later.
    tokenizer_size = preprocessor.tokenizer.vocabulary_size()
    if tokenizer_size is not None and tokenizer_size > backbone.vocabulary_size:
        raise ValueError(
            "The tokenizer produces ids the model has no embedding for. "
            f"Received: tokenizer vocabulary_size={tokenizer_size}, backbone "
            f"vocabulary_size={backbone.vocabulary_size}. Expected the "
            "tokenizer vocabulary to fit in the backbone vocabulary."
        )

