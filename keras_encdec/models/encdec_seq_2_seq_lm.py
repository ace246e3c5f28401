"""The family-independent part of the encoder-decoder LM tasks.

`EncDecSeq2SeqLM` holds what T5Gemma and T5Gemma 2 share: the functional
model (decoder hidden states -> soft-capped logits), `from_preset` for
keras-encdec, keras-hub and transformers folders, transformers export, the
training loss wiring, and (through `EncDecGenerationMixin`) the cached
generation loop. A family subclass sets `backbone_cls`,
`preprocessor_cls`, `transformers_converter`, `backbone_preset_kwargs` and
`presets`, and checks its own inputs in `__call__`.
"""

import logging

from keras import ops
from keras_hub.models import Seq2SeqLM

from keras_encdec.convert import preset_loader
from keras_encdec.convert import transformers_t5gemma
from keras_encdec.errors import log_missing_tokenizer
from keras_encdec.losses import linear_cross_entropy
from keras_encdec.losses.dense import soft_cap
from keras_encdec.models.encdec_generation import EncDecGenerationMixin
from keras_encdec.models.shuffled_fit import ShuffledFitMixin
from keras_encdec.models.task_guards import TaskGuardsMixin
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
        loss="auto",
        *,
        weighted_metrics="auto",
        sampler="top_k",
        loss_impl=None,
        **kwargs,
    ):
        """Configures training and generation.

        With `loss="auto"` (the default), `fit` trains with the chunked
        linear cross-entropy (`keras_encdec.losses.linear_cross_entropy`)
        computed from the decoder hidden states and the output embedding,
        with the final soft-cap fused in: no `[batch, length, vocab]` logits
        are built in a training step. The loss is the weighted mean over
        tokens, `sum(w * loss) / sum(w)`. Metrics that need logits are then
        unavailable, so `weighted_metrics="auto"` means none. Pass any Keras
        loss (e.g. `keras.losses.SparseCategoricalCrossentropy(
        from_logits=True)`) to train on materialized logits instead, as
        keras-hub does; `"auto"` metrics are then token accuracy.

        Args:
            optimizer: `"auto"` (Adam, 2e-5) or a Keras optimizer.
            loss: `"auto"` for the chunked loss, or a Keras loss.
            weighted_metrics: `"auto"` or a list of Keras metrics.
            sampler: a keras-hub sampler name or instance for `generate`.
                Defaults to `"top_k"`, as in keras-hub.
            loss_impl: str or None. `impl` of the chunked loss (`"xla"`,
                `"pallas"`, `"triton"`, `"dense"`). Defaults to `None` (the
                best that runs here).
            **kwargs: passed to `keras.Model.compile`.

        Examples:

        >>> from keras_encdec.models import T5GemmaSeq2SeqLM
        >>> lm = T5GemmaSeq2SeqLM.from_preset("t5gemma_tiny_random")
        >>> lm.compile(optimizer="adam")  # chunked loss
        >>> history = lm.fit({"encoder_text": ["a b"], "decoder_text": ["c"]},
        ...                  verbose=0)
        """
        self.fused_loss = loss == "auto"
        self.loss_impl = loss_impl
        if self.fused_loss:
            loss = None
            if weighted_metrics == "auto":
                weighted_metrics = None
        super().compile(
            optimizer=optimizer,
            loss=loss,
            weighted_metrics=weighted_metrics,
            sampler=sampler,
            **kwargs,
        )

    def call(self, inputs, training=None, mask=None):
        if training and getattr(self, "fused_loss", False):
            # Training step with the chunked loss: hidden states, no logits.
            return self.backbone(inputs, training=training)[
                "decoder_sequence_output"
            ]
        return super().call(inputs, training=training, mask=mask)

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
        if not getattr(self, "fused_loss", False):
            return super().compute_loss(
                x, y, y_pred, sample_weight, training=training
            )
        if y is None:
            raise ValueError(
                "fit/evaluate need targets `y`: token ids [batch, length]. "
                "Received y=None. Pass (x, y[, sample_weight]) or attach a "
                "preprocessor that builds them from text."
            )
        soft_cap = self.backbone.final_logit_soft_cap
        if training:
            loss = linear_cross_entropy(
                y_pred,
                self.output_embedding(),
                y,
                sample_weight=sample_weight,
                logit_soft_cap=soft_cap,
                impl=self.loss_impl,
            )
        else:
            # evaluate(): `call` returned logits; same loss, same reduction.
            loss = _token_mean_cross_entropy(y_pred, y, sample_weight)
        for extra in self.losses:
            loss = loss + self._aggregate_additional_loss(extra)
        return loss

    def compute_logits(self, hidden_states):
        """Maps decoder hidden states to soft-capped vocabulary logits."""
        logits = self.backbone.decoder_token_embedding(
            hidden_states, reverse=True
        )
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


def _token_mean_cross_entropy(logits, labels, sample_weight):
    """`sum(w * ce) / sum(w)` from logits (the chunked loss's reduction)."""
    logits = ops.cast(logits, "float32")
    log_probs = logits - ops.logsumexp(logits, axis=-1, keepdims=True)
    labels = ops.cast(labels, "int32")
    valid = ops.not_equal(labels, -100)
    picked = ops.take_along_axis(
        log_probs, ops.expand_dims(ops.where(valid, labels, 0), -1), axis=-1
    )[..., 0]
    weight = ops.cast(valid, "float32")
    if sample_weight is not None:
        weight = weight * ops.cast(sample_weight, "float32")
    total = ops.sum(weight)
    return ops.where(
        total > 0, -ops.sum(picked * weight) / ops.maximum(total, 1e-12), 0.0
    )
