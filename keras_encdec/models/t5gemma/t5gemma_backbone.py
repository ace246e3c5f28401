"""The T5Gemma encoder-decoder backbone."""

import inspect

import keras
from keras import ops
from keras_hub.models import Backbone
from keras_hub.src.utils.python_utils import classproperty

from keras_encdec.api import register
from keras_encdec.convert import preset_loader
from keras_encdec.models.encdec_inputs import INPUT_NAMES
from keras_encdec.models.encdec_inputs import check_inputs
from keras_encdec.models.finetuning_mixin import FineTuningMixin
from keras_encdec.stack_config import StackConfig
from keras_encdec.stack_config import alternating_layer_types  # noqa: F401
from keras_encdec.stack_config import check_model_settings
from keras_encdec.models.t5gemma.t5gemma_decoder_layer import T5GemmaDecoderLayer
from keras_encdec.models.t5gemma.t5gemma_encoder_layer import T5GemmaEncoderLayer
from keras_encdec.models.t5gemma.t5gemma_layers import T5GemmaRMSNormalization
from keras_encdec.models.t5gemma.t5gemma_layers import kernel_initializer
from keras_encdec.models.t5gemma.t5gemma_presets import T5GEMMA_PRESETS
from keras_encdec.models.t5gemma.t5gemma_stacks import PackedCallMixin
from keras_encdec.models.t5gemma.t5gemma_stacks import decoder_stack
from keras_encdec.models.t5gemma.t5gemma_stacks import encoder_stack
from keras_encdec.models.t5gemma.t5gemma_stacks import segment_kwargs
from keras_encdec.utils.validation import check_known_kwargs


def scale_embeddings(embeddings, hidden_dim):
    """Multiplies embeddings by `sqrt(hidden_dim)`, rounded to their dtype
    first (as Gemma and transformers do)."""
    return embeddings * ops.cast(hidden_dim**0.5, embeddings.dtype)


@register
class T5GemmaBackbone(FineTuningMixin, PackedCallMixin, Backbone):
    """T5Gemma: Gemma 2 blocks arranged as an encoder-decoder.

    The encoder and decoder are configured separately, so unbalanced pairs
    (an encoder wider than the decoder) work. Cross-attention key/value
    kernels take the encoder width. Numerics follow the pinned transformers
    `T5GemmaModel`, including two-sided encoder windows (`|q - k| <= W`) and
    causal decoder windows (`q - W < k <= q`).

    Inputs are a dict with `encoder_token_ids`, `encoder_padding_mask`,
    `decoder_token_ids` and `decoder_padding_mask` (int `[batch, len]`).
    Outputs are a dict with `encoder_sequence_output` and
    `decoder_sequence_output`.

    Packed rows (`keras_encdec.objectives.pack_examples`) add
    `encoder_segment_ids` and `decoder_segment_ids` (int `[batch, len]`,
    1, 2, ... per example, 0 on padding; both or neither): encoder and
    decoder self-attention and cross-attention then stay inside a segment
    (decoder segment `i` sees only encoder segment `i`). Positions do not
    restart per segment: RoPE and the sliding windows depend only on the
    distance `q - k` between a query and a key of the same segment (and
    cross-attention has no RoPE), so a packed example gets the logits it
    gets alone in a row (`tests/packing_parity_test.py`). Such calls run
    the layers outside the functional graph (`call_layers`); calls without
    segment ids use the graph, which has the four inputs above.

    Args:
        vocabulary_size: int. Shared vocabulary size.
        encoder_*, decoder_*: one set per stack of the fields of
            `keras_encdec.stack_config.StackConfig` (types,
            defaults and checks there): `hidden_dim`, `intermediate_dim`,
            `num_layers`, `num_heads`, `num_kv_heads`, `head_dim` (all
            required), `layer_types`, `sliding_window`,
            `attention_logit_soft_cap`, `query_pre_attn_scalar`,
            `rope_max_wavelength`. Every setting, these and the model-wide
            ones, is checked at construction
            (`keras_encdec.errors.ConfigError`).
        final_logit_soft_cap: float or None. Soft-cap of the LM logits
            (used by `T5GemmaSeq2SeqLM`). Defaults to `30.0`.
        tie_word_embeddings: bool. Whether the LM head reuses the decoder
            embedding. Defaults to `True`.
        rms_norm_eps: float. Norm epsilon. Defaults to `1e-6`.
        hidden_activation: str. MLP activation. Defaults to
            `"gelu_approximate"`.
        dropout_rate: float. Dropout on embeddings, residuals and MLP.
            Defaults to `0.0`.
        attention_dropout: float. Dropout on attention probabilities.
            Defaults to `0.0`.
        initializer_range: float. Std of the random-normal initializer.
            Defaults to `0.02`.
        attention_impl: str or None. Implementation of
            `keras_encdec.ops.dot_product_attention`. Defaults to `None`
            (best available).
        remat: bool. Gradient checkpointing: training recomputes each
            block's activations in the backward pass instead of keeping
            them. Defaults to `False`. Also settable later with
            `backbone.remat = True` (before `compile()`).
        dtype: str or `keras.DTypePolicy`. Weight/compute dtype policy.
        **kwargs: passed to `keras_hub.models.Backbone`.

    Examples:

    >>> import numpy as np
    >>> backbone = T5GemmaBackbone(
    ...     vocabulary_size=64,
    ...     encoder_hidden_dim=32, encoder_intermediate_dim=64,
    ...     encoder_num_layers=2, encoder_num_heads=4,
    ...     encoder_num_kv_heads=2, encoder_head_dim=8,
    ...     decoder_hidden_dim=16, decoder_intermediate_dim=32,
    ...     decoder_num_layers=2, decoder_num_heads=2,
    ...     decoder_num_kv_heads=1, decoder_head_dim=8,
    ...     encoder_sliding_window=4, decoder_sliding_window=4,
    ... )
    >>> out = backbone({
    ...     "encoder_token_ids": np.ones((1, 6), "int32"),
    ...     "encoder_padding_mask": np.ones((1, 6), "int32"),
    ...     "decoder_token_ids": np.ones((1, 3), "int32"),
    ...     "decoder_padding_mask": np.ones((1, 3), "int32"),
    ... })
    >>> tuple(out["decoder_sequence_output"].shape)
    (1, 3, 16)
    """

    def __init__(
        self,
        vocabulary_size,
        encoder_hidden_dim,
        encoder_intermediate_dim,
        encoder_num_layers,
        encoder_num_heads,
        encoder_num_kv_heads,
        encoder_head_dim,
        decoder_hidden_dim,
        decoder_intermediate_dim,
        decoder_num_layers,
        decoder_num_heads,
        decoder_num_kv_heads,
        decoder_head_dim,
        encoder_layer_types=None,
        decoder_layer_types=None,
        encoder_sliding_window=4096,
        decoder_sliding_window=4096,
        encoder_attention_logit_soft_cap=50.0,
        decoder_attention_logit_soft_cap=50.0,
        encoder_query_pre_attn_scalar=None,
        decoder_query_pre_attn_scalar=None,
        encoder_rope_max_wavelength=10000.0,
        decoder_rope_max_wavelength=10000.0,
        final_logit_soft_cap=30.0,
        tie_word_embeddings=True,
        rms_norm_eps=1e-6,
        hidden_activation="gelu_approximate",
        dropout_rate=0.0,
        attention_dropout=0.0,
        initializer_range=0.02,
        attention_impl=None,
        remat=False,
        dtype=None,
        **kwargs,
    ):
        arguments = locals()  # the flat `encoder_*` / `decoder_*` values
        check_known_kwargs("T5GemmaBackbone", kwargs, arguments)
        enc = StackConfig.from_prefixed(arguments, "encoder")
        dec = StackConfig.from_prefixed(arguments, "decoder")
        check_model_settings(
            vocabulary_size=vocabulary_size,
            final_logit_soft_cap=final_logit_soft_cap,
            tie_word_embeddings=tie_word_embeddings,
            rms_norm_eps=rms_norm_eps,
            dropout_rate=dropout_rate,
            attention_dropout=attention_dropout,
            initializer_range=initializer_range,
        )
        shared = dict(
            rms_norm_eps=rms_norm_eps,
            hidden_activation=hidden_activation,
            dropout_rate=dropout_rate,
            attention_dropout=attention_dropout,
            initializer_range=initializer_range,
            attention_impl=attention_impl,
            remat=remat,  # each block validates it
            dtype=dtype,
        )

        # === Layers ===
        self.token_embedding = keras.layers.Embedding(
            vocabulary_size,
            enc.hidden_dim,
            embeddings_initializer=kernel_initializer(initializer_range),
            dtype=dtype,
            name="encoder_token_embedding",
        )
        self.decoder_token_embedding = keras.layers.ReversibleEmbedding(
            vocabulary_size,
            dec.hidden_dim,
            tie_weights=tie_word_embeddings,
            embeddings_initializer=kernel_initializer(initializer_range),
            dtype=dtype,
            name="decoder_token_embedding",
        )
        self.encoder_layers = _make_layers(T5GemmaEncoderLayer, enc, shared)
        self.decoder_layers = _make_layers(T5GemmaDecoderLayer, dec, shared)
        self.encoder_norm = T5GemmaRMSNormalization(
            epsilon=rms_norm_eps, dtype=dtype, name="encoder_norm"
        )
        self.decoder_norm = T5GemmaRMSNormalization(
            epsilon=rms_norm_eps, dtype=dtype, name="decoder_norm"
        )
        self.embedding_dropout = keras.layers.Dropout(
            dropout_rate, dtype=dtype, name="embedding_dropout"
        )
        self.output_dropout = keras.layers.Dropout(
            dropout_rate, dtype=dtype, name="output_dropout"
        )

        # === Functional model ===
        inputs = {
            name: keras.Input(shape=(None,), dtype="int32", name=name)
            for name in INPUT_NAMES
        }
        encoder_output = self._encode(
            inputs["encoder_token_ids"], inputs["encoder_padding_mask"]
        )
        decoder_output, _ = self._decode(
            inputs["decoder_token_ids"],
            inputs["decoder_padding_mask"],
            encoder_output,
            inputs["encoder_padding_mask"],
        )
        super().__init__(
            inputs=inputs,
            outputs={
                "encoder_sequence_output": encoder_output,
                "decoder_sequence_output": decoder_output,
            },
            dtype=dtype,
            **kwargs,
        )

        # === Config ===
        self.vocabulary_size = vocabulary_size
        self.encoder_config, self.decoder_config = enc, dec
        # Flat aliases (`encoder_hidden_dim`, ...), as in keras-hub.
        for name, value in {**enc.prefixed(), **dec.prefixed()}.items():
            setattr(self, name, value)
        self.final_logit_soft_cap = final_logit_soft_cap
        self.tie_word_embeddings = tie_word_embeddings
        self.rms_norm_eps = rms_norm_eps
        self.hidden_activation = hidden_activation
        self.dropout_rate = dropout_rate
        self.attention_dropout = attention_dropout
        self.initializer_range = initializer_range
        self.attention_impl = attention_impl
        self._remat = remat  # the blocks got and validated it above

    def __call__(self, inputs, *args, **kwargs):
        check_inputs(inputs)
        return super().__call__(inputs, *args, **kwargs)

    # The encoder and decoder passes are methods so that generation can run
    # them separately (encoder once, decoder step by step with caches).
    def _encode(self, token_ids, padding_mask, training=None, segment_ids=None):
        x = self.token_embedding(token_ids)
        x = scale_embeddings(x, self.token_embedding.output_dim)
        x = self.embedding_dropout(x, training=training)
        return encoder_stack(self, x, padding_mask, training, segment_ids)

    def _decode(
        self,
        token_ids,
        padding_mask,
        encoder_output,
        encoder_padding_mask,
        caches=None,
        cache_update_index=None,
        training=None,
        segment_ids=None,
        encoder_segment_ids=None,
    ):
        x = self.decoder_token_embedding(token_ids)
        x = scale_embeddings(x, self.decoder_token_embedding.output_dim)
        x = self.embedding_dropout(x, training=training)
        return decoder_stack(
            self, x, padding_mask, encoder_output, encoder_padding_mask,
            caches, cache_update_index, training,
            segment_kwargs(segment_ids=segment_ids,
                           encoder_segment_ids=encoder_segment_ids),
        )

    def encode(self, token_ids, padding_mask):
        """Runs the encoder alone (inference). Returns `[batch, S, width]`."""
        return self._encode(token_ids, padding_mask, training=False)

    def decode(
        self,
        token_ids,
        padding_mask,
        encoder_output,
        encoder_padding_mask,
        caches=None,
        cache_update_index=None,
    ):
        """Runs the decoder alone (inference), optionally with KV caches.

        Args:
            token_ids: int tensor `[batch, T]`.
            padding_mask: tensor `[batch, T]` or None.
            encoder_output: tensor `[batch, S, encoder_width]` or None when
                every layer's cross-attention cache is given.
            encoder_padding_mask: tensor `[batch, S]`.
            caches: None, or one `((self_key, self_value), (cross_key,
                cross_value))` per decoder layer. Self caches are static,
                `[batch, max_len, kv_heads, head_dim]`.
            cache_update_index: int or int tensor: absolute position of
                `token_ids[:, 0]`.

        Returns:
            `(hidden_states, caches)` with the updated caches.
        """
        return self._decode(
            token_ids,
            padding_mask,
            encoder_output,
            encoder_padding_mask,
            caches=caches,
            cache_update_index=cache_update_index,
            training=False,
        )

    @classproperty
    def presets(cls):
        """Preset names -> metadata and hub handles."""
        return dict(T5GEMMA_PRESETS)

    @classmethod
    def from_preset(cls, preset, load_weights=True, **kwargs):
        """Builds the backbone from a preset name, folder or hub handle.

        Accepts a keras-encdec preset name or folder, a local transformers
        T5Gemma checkpoint folder, a keras-hub `T5GemmaBackbone` preset
        folder, or an `hf://` / `kaggle://` handle. See
        `keras_encdec.convert.preset_loader`.

        Args:
            preset: str. The preset to load.
            load_weights: bool. Load the weights, or keep a random init.
                Defaults to `True`.
            **kwargs: backbone config overrides, e.g. `dtype`.

        Examples:

        >>> backbone = T5GemmaBackbone.from_preset("t5gemma_tiny_random")
        >>> backbone.vocabulary_size > 0
        True
        """
        known = inspect.signature(cls.__init__).parameters
        check_known_kwargs(f"{cls.__name__}.from_preset", kwargs, known, known)
        fmt, folder = preset_loader.resolve(preset, T5GEMMA_PRESETS)
        if fmt == preset_loader.KERAS_ENCDEC:
            with preset_loader.naming_errors(folder):
                return super().from_preset(folder, load_weights, **kwargs)
        return preset_loader.load_foreign_backbone(
            cls, fmt, folder, load_weights=load_weights, **kwargs
        )

    def get_config(self):
        config = super().get_config()
        config["vocabulary_size"] = self.vocabulary_size
        config.update(self.encoder_config.prefixed())
        config.update(self.decoder_config.prefixed())
        config.update(
            {
                "final_logit_soft_cap": self.final_logit_soft_cap,
                "tie_word_embeddings": self.tie_word_embeddings,
                "rms_norm_eps": self.rms_norm_eps,
                "hidden_activation": self.hidden_activation,
                "dropout_rate": self.dropout_rate,
                "attention_dropout": self.attention_dropout,
                "initializer_range": self.initializer_range,
                "attention_impl": self.attention_impl,
                "remat": self.remat,
            }
        )
        return config


def _make_layers(layer_cls, stack, shared):
    return [
        layer_cls(
            hidden_dim=stack.hidden_dim,
            intermediate_dim=stack.intermediate_dim,
            num_heads=stack.num_heads,
            num_kv_heads=stack.num_kv_heads,
            head_dim=stack.head_dim,
            layer_type=layer_type,
            sliding_window=stack.sliding_window,
            query_pre_attn_scalar=stack.query_pre_attn_scalar,
            attention_logit_soft_cap=stack.attention_logit_soft_cap,
            rope_max_wavelength=stack.rope_max_wavelength,
            name=f"{stack.side}_layer_{index}",
            **shared,
        )
        for index, layer_type in enumerate(stack.layer_types)
    ]
