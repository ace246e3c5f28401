"""T5Gemma sequence-to-sequence language model task."""

import logging

from keras import ops
from keras_hub.models import Seq2SeqLM
from keras_hub.src.utils.python_utils import classproperty
from keras_hub.src.utils.tensor_utils import any_equal

from keras_encdec.api import register
from keras_encdec.convert import preset_loader
from keras_encdec.convert import transformers_t5gemma
from keras_encdec.errors import log_missing_tokenizer
from keras_encdec.losses import linear_cross_entropy
from keras_encdec.models import fast_decode
from keras_encdec.models.encdec_inputs import has_segment_ids
from keras_encdec.models.shuffled_fit import ShuffledFitMixin
from keras_encdec.models.t5gemma.t5gemma_backbone import T5GemmaBackbone
from keras_encdec.models.t5gemma.t5gemma_backbone import check_inputs
from keras_encdec.models.t5gemma.t5gemma_presets import T5GEMMA_PRESETS
from keras_encdec.models.task_guards import TaskGuardsMixin
from keras_encdec.models.t5gemma.t5gemma_seq_2_seq_lm_preprocessor import (
    T5GemmaSeq2SeqLMPreprocessor,
)
from keras_encdec.utils.validation import check_known_kwargs

logger = logging.getLogger(__name__)

FROM_PRESET_KWARGS = ("preprocessor", "dtype", "remat", "name", "trainable")


def soft_cap(logits, cap):
    """`tanh(logits / cap) * cap`, or `logits` when `cap` is None."""
    if cap is None:
        return logits
    return ops.tanh(logits / cap) * cap


@register
class T5GemmaSeq2SeqLM(TaskGuardsMixin, ShuffledFitMixin, Seq2SeqLM):
    """T5Gemma encoder-decoder language model for generation and fine-tuning.

    Calling the model on a backbone input dict returns logits
    `[batch, decoder_len, vocab]` from the tied (or untied) decoder embedding,
    with the final soft-cap applied. `generate()` encodes once, computes the
    cross-attention keys/values once, and decodes with a static KV cache; the
    sampler is chosen with `compile(sampler=...)` (keras-hub samplers:
    `"greedy"`, `"top_k"`, `"top_p"`, `"beam"`, ...).

    Args:
        backbone: `keras_encdec.models.T5GemmaBackbone`.
        preprocessor: `keras_encdec.models.T5GemmaSeq2SeqLMPreprocessor` or
            None. With None, inputs must be token dicts. Defaults to `None`.
        **kwargs: passed to `keras_hub.models.Seq2SeqLM`.

    Examples:

    >>> import numpy as np
    >>> from keras_encdec.models import T5GemmaBackbone, T5GemmaSeq2SeqLM
    >>> backbone = T5GemmaBackbone(
    ...     vocabulary_size=32,
    ...     encoder_hidden_dim=16, encoder_intermediate_dim=32,
    ...     encoder_num_layers=2, encoder_num_heads=2,
    ...     encoder_num_kv_heads=1, encoder_head_dim=8,
    ...     decoder_hidden_dim=16, decoder_intermediate_dim=32,
    ...     decoder_num_layers=2, decoder_num_heads=2,
    ...     decoder_num_kv_heads=1, decoder_head_dim=8,
    ... )
    >>> lm = T5GemmaSeq2SeqLM(backbone)
    >>> out = lm.generate({
    ...     "encoder_token_ids": np.array([[2, 5, 6, 1]]),
    ...     "encoder_padding_mask": np.array([[1, 1, 1, 1]]),
    ...     "decoder_token_ids": np.array([[2, 0, 0, 0, 0]]),
    ...     "decoder_padding_mask": np.array([[1, 0, 0, 0, 0]]),
    ... }, stop_token_ids=None)
    >>> out["decoder_token_ids"].shape
    (1, 5)
    """

    backbone_cls = T5GemmaBackbone
    preprocessor_cls = T5GemmaSeq2SeqLMPreprocessor
    # Config and weight mapping of `export_to_transformers`.
    transformers_converter = transformers_t5gemma
    # `from_preset` kwargs that go to the backbone for foreign checkpoints.
    backbone_preset_kwargs = ("dtype",)

    def __init__(self, backbone, preprocessor=None, **kwargs):
        check_known_kwargs(
            "T5GemmaSeq2SeqLM", kwargs, ("backbone", "preprocessor", "remat"),
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
        check_inputs(inputs)
        self._check_call_inputs(inputs)
        return super().__call__(inputs, *args, **kwargs)

    @classproperty
    def presets(cls):
        """Preset names -> metadata and hub handles."""
        return dict(T5GEMMA_PRESETS)

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
        fused = training and getattr(self, "fused_loss", False)
        if fused or has_segment_ids(inputs):
            # The chunked loss takes hidden states (no logits); packed
            # inputs run outside the functional graph (the backbone's).
            hidden_states = self.backbone(inputs, training=training)[
                "decoder_sequence_output"
            ]
            return hidden_states if fused else self.compute_logits(hidden_states)
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

    def call_encoder(self, token_ids, padding_mask):
        """Runs the encoder; returns `(encoder_output, padding_mask)`."""
        return self.backbone.encode(token_ids, padding_mask), padding_mask

    def encode_prompt(self, inputs):
        """Runs the encoder on a `generate_step` input dict; returns
        `(encoder_output, padding_mask)`."""
        return self.call_encoder(
            inputs["encoder_token_ids"], inputs["encoder_padding_mask"]
        )

    def build_cache(self, encoder_output, encoder_padding_mask, max_length):
        """Builds generation caches: empty static self-attention caches of
        `max_length` positions, and cross-attention keys/values computed once
        from `encoder_output`.

        Returns `(layer_caches, encoder_padding_mask)`, the structure
        `call_decoder_with_cache` takes. It is a flat nest of batch-major
        tensors, so beam search can repeat and gather it.
        """
        batch_size = ops.shape(encoder_output)[0]
        backbone = self.backbone
        shape = (
            batch_size,
            max_length,
            backbone.decoder_num_kv_heads,
            backbone.decoder_head_dim,
        )
        layer_caches = []
        for layer in backbone.decoder_layers:
            self_cache = (
                ops.zeros(shape, dtype=self.compute_dtype),
                ops.zeros(shape, dtype=self.compute_dtype),
            )
            cross_cache = layer.compute_cross_key_value(encoder_output)
            layer_caches.append((self_cache, cross_cache))
        return tuple(layer_caches), encoder_padding_mask

    def call_decoder_with_cache(
        self, token_ids, padding_mask, cache, cache_update_index
    ):
        """One cached decoder pass.

        Args:
            token_ids: int tensor `[batch, T]`, starting at absolute position
                `cache_update_index`.
            padding_mask: tensor `[batch, T]` or None (decode steps).
            cache: the structure returned by `build_cache`.
            cache_update_index: int or int tensor.

        Returns:
            `(logits, hidden_states, cache)`.
        """
        layer_caches, encoder_padding_mask = cache
        if padding_mask is not None:
            # Keys beyond the prompt are padding during the prefill pass.
            max_length = ops.shape(layer_caches[0][0][0])[1]
            padding_mask = ops.pad(
                ops.cast(padding_mask, "bool"),
                [[0, 0], [0, max_length - ops.shape(padding_mask)[1]]],
                constant_values=False,
            )
        hidden_states, layer_caches = self.backbone.decode(
            token_ids,
            padding_mask,
            None,
            encoder_padding_mask,
            caches=layer_caches,
            cache_update_index=cache_update_index,
        )
        logits = self.compute_logits(hidden_states)
        return logits, hidden_states, (tuple(layer_caches), encoder_padding_mask)

    def generate_step(self, inputs, stop_token_ids=None):
        """Generates one batch: a compilable function of token tensors.

        Args:
            inputs: dict with `encoder_token_ids`, `encoder_padding_mask`,
                `decoder_token_ids` and `decoder_padding_mask`. The decoder
                tensors hold the (right-padded) prompt and set the output
                length.
            stop_token_ids: tuple of ints or None. Generation stops once every
                sequence produced one of them.

        Returns:
            dict with `decoder_token_ids` and `decoder_padding_mask`.
        """
        decoder_token_ids = inputs["decoder_token_ids"]
        decoder_padding_mask = ops.cast(inputs["decoder_padding_mask"], "bool")
        encoder_output, encoder_padding_mask = self.encode_prompt(inputs)
        max_length = ops.shape(decoder_token_ids)[1]
        cache = self.build_cache(encoder_output, encoder_padding_mask, max_length)
        row_lengths = ops.sum(ops.cast(decoder_padding_mask, "int32"), axis=-1)
        index = ops.min(row_lengths)
        # On torch, one-token steps run as plain torch code (same numbers),
        # and the eager prefill covers only the shortest prompt: the steps
        # recompute every later position anyway.
        fast_step = fast_decode.decode_step_for(self)
        prefill_length = max_length
        if fast_step is not None:
            prefill_length = max(1, int(index))
        _, hidden_states, cache = self.call_decoder_with_cache(
            decoder_token_ids[:, :prefill_length],
            decoder_padding_mask[:, :prefill_length],
            cache,
            0,
        )
        if fast_step is not None:
            cache = fast_step.prepare(cache)
            hidden_states = ops.pad(
                hidden_states,
                [[0, 0], [0, max_length - prefill_length], [0, 0]],
            )

        def next(prompt, cache, index):
            # The cache index is the position of the previous token.
            cache_update_index = index - 1
            batch_size = ops.shape(prompt)[0]
            token = ops.slice(prompt, [0, cache_update_index], [batch_size, 1])
            if fast_step is not None:
                logits, cache = fast_step(token, cache, cache_update_index)
            else:
                logits, _, cache = self.call_decoder_with_cache(
                    token, None, cache, cache_update_index
                )
            return ops.squeeze(logits, axis=1), None, cache

        decoder_token_ids = self.sampler(
            next=next,
            prompt=decoder_token_ids,
            cache=cache,
            index=index,
            mask=decoder_padding_mask,
            stop_token_ids=stop_token_ids,
            hidden_states=hidden_states,
            model=self,
        )

        if stop_token_ids is not None:
            # Keep everything up to and including the first new stop token.
            end_locations = any_equal(
                decoder_token_ids,
                stop_token_ids,
                ops.logical_not(decoder_padding_mask),
            )
            end_locations = ops.cast(end_locations, "int32")
            cumsum = ops.cast(ops.cumsum(end_locations, axis=-1), "int32")
            overflow = cumsum - end_locations
            decoder_padding_mask = ops.logical_not(ops.cast(overflow, "bool"))
        else:
            decoder_padding_mask = ops.ones_like(decoder_token_ids, dtype="bool")
        return {
            "decoder_token_ids": decoder_token_ids,
            "decoder_padding_mask": decoder_padding_mask,
        }


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
