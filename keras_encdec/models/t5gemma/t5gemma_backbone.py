"""The T5Gemma encoder-decoder backbone."""

import keras
from keras import ops
from keras_hub.models import Backbone
from keras_hub.src.utils.python_utils import classproperty

from keras_encdec.api import register
from keras_encdec.convert import preset_loader
from keras_encdec.models.t5gemma.t5gemma_decoder_layer import T5GemmaDecoderLayer
from keras_encdec.models.t5gemma.t5gemma_block import LAYER_TYPES
from keras_encdec.models.t5gemma.t5gemma_block import check_remat
from keras_encdec.models.t5gemma.t5gemma_encoder_layer import T5GemmaEncoderLayer
from keras_encdec.models.t5gemma.t5gemma_layers import T5GemmaRMSNormalization
from keras_encdec.models.t5gemma.t5gemma_layers import kernel_initializer
from keras_encdec.models.t5gemma.t5gemma_presets import T5GEMMA_PRESETS
from keras_encdec.training import layout_map as layout_map_lib
from keras_encdec.training import lora as lora_lib

# Per-stack (encoder / decoder) settings, in `__init__` order.
STACK_ARGS = (
    "hidden_dim",
    "intermediate_dim",
    "num_layers",
    "num_heads",
    "num_kv_heads",
    "head_dim",
    "layer_types",
    "sliding_window",
    "attention_logit_soft_cap",
    "query_pre_attn_scalar",
    "rope_max_wavelength",
)


INPUT_NAMES = (
    "encoder_token_ids",
    "encoder_padding_mask",
    "decoder_token_ids",
    "decoder_padding_mask",
)


def check_inputs(inputs):
    """Raises a clear error unless `inputs` is a backbone input dict.

    Keys must be exactly `INPUT_NAMES`; token ids must be integers and
    padding masks integers or booleans, each of rank 2.
    """
    if not isinstance(inputs, dict):
        raise TypeError(
            "T5Gemma models take a dict of tensors. Received: "
            f"{type(inputs).__name__}. Expected keys {list(INPUT_NAMES)}."
        )
    if set(inputs) != set(INPUT_NAMES):
        raise ValueError(
            f"Wrong input keys. Received: {sorted(inputs)}. Expected exactly "
            f"{sorted(INPUT_NAMES)}."
        )
    for name in INPUT_NAMES:
        value = inputs[name]
        dtype = str(getattr(value, "dtype", type(value).__name__))
        allowed = ("int", "uint") + (("bool",) if "mask" in name else ())
        if not any(part in dtype for part in allowed):
            raise TypeError(
                f"`{name}` must be an integer tensor"
                + (" or a boolean mask" if "mask" in name else "")
                + f". Received: dtype={dtype}."
            )
        rank = len(getattr(value, "shape", ()))
        if rank != 2:
            raise ValueError(
                f"`{name}` must have shape [batch, length]. Received: shape="
                f"{tuple(getattr(value, 'shape', ()))}."
            )


def alternating_layer_types(num_layers):
    """Gemma 2's pattern: sliding first, then full, alternating."""
    return [LAYER_TYPES[i % 2] for i in range(num_layers)]


def scale_embeddings(embeddings, hidden_dim):
    """Multiplies embeddings by `sqrt(hidden_dim)`, rounded to their dtype
    first (as Gemma and transformers do)."""
    return embeddings * ops.cast(hidden_dim**0.5, embeddings.dtype)


@register
class T5GemmaBackbone(Backbone):
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

    Args:
        vocabulary_size: int. Shared vocabulary size.
        encoder_hidden_dim, decoder_hidden_dim: int. Model widths.
        encoder_intermediate_dim, decoder_intermediate_dim: int. MLP widths.
        encoder_num_layers, decoder_num_layers: int. Block counts.
        encoder_num_heads, decoder_num_heads: int. Query heads.
        encoder_num_kv_heads, decoder_num_kv_heads: int. Key/value heads.
        encoder_head_dim, decoder_head_dim: int. Head widths.
        encoder_layer_types, decoder_layer_types: list of str or None. Per
            block `"sliding_attention"` or `"full_attention"`. Defaults to
            Gemma 2's alternation, sliding first.
        encoder_sliding_window, decoder_sliding_window: int or None. Window
            of sliding blocks. Defaults to `4096`.
        encoder_attention_logit_soft_cap, decoder_attention_logit_soft_cap:
            float or None. Attention soft-caps. Defaults to `50.0`.
        encoder_query_pre_attn_scalar, decoder_query_pre_attn_scalar: float
            or None. Attention scales are their `-0.5` power. Defaults to the
            head width.
        encoder_rope_max_wavelength, decoder_rope_max_wavelength: float.
            RoPE bases. Defaults to `10000.0`.
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
        stacks = {}
        for side, values in (
            (
                "encoder",
                (
                    encoder_hidden_dim,
                    encoder_intermediate_dim,
                    encoder_num_layers,
                    encoder_num_heads,
                    encoder_num_kv_heads,
                    encoder_head_dim,
                    encoder_layer_types,
                    encoder_sliding_window,
                    encoder_attention_logit_soft_cap,
                    encoder_query_pre_attn_scalar,
                    encoder_rope_max_wavelength,
                ),
            ),
            (
                "decoder",
                (
                    decoder_hidden_dim,
                    decoder_intermediate_dim,
                    decoder_num_layers,
                    decoder_num_heads,
                    decoder_num_kv_heads,
                    decoder_head_dim,
                    decoder_layer_types,
                    decoder_sliding_window,
                    decoder_attention_logit_soft_cap,
                    decoder_query_pre_attn_scalar,
                    decoder_rope_max_wavelength,
                ),
            ),
        ):
            stacks[side] = _check_stack(side, dict(zip(STACK_ARGS, values)))
        enc, dec = stacks["encoder"], stacks["decoder"]
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
            enc["hidden_dim"],
            embeddings_initializer=kernel_initializer(initializer_range),
            dtype=dtype,
            name="encoder_token_embedding",
        )
        self.decoder_token_embedding = keras.layers.ReversibleEmbedding(
            vocabulary_size,
            dec["hidden_dim"],
            tie_weights=tie_word_embeddings,
            embeddings_initializer=kernel_initializer(initializer_range),
            dtype=dtype,
            name="decoder_token_embedding",
        )
        self.encoder_layers = [
            _make_layer(T5GemmaEncoderLayer, enc, i, shared, "encoder")
            for i in range(enc["num_layers"])
        ]
        self.decoder_layers = [
            _make_layer(T5GemmaDecoderLayer, dec, i, shared, "decoder")
            for i in range(dec["num_layers"])
        ]
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
        for side, stack in stacks.items():
            for name, value in stack.items():
                setattr(self, f"{side}_{name}", value)
        self.final_logit_soft_cap = final_logit_soft_cap
        self.tie_word_embeddings = tie_word_embeddings
        self.rms_norm_eps = rms_norm_eps
        self.hidden_activation = hidden_activation
        self.dropout_rate = dropout_rate
        self.attention_dropout = attention_dropout
        self.initializer_range = initializer_range
        self.attention_impl = attention_impl
        self._remat = remat  # the blocks got and validated it above

    @property
    def remat(self):
        """Whether training recomputes each block's activations.

        With `True`, every encoder and decoder block keeps only its input for
        the backward pass and recomputes the rest there (`keras.remat`), so
        activation memory no longer grows with the number of blocks, for
        about one more forward pass of compute. Inference and generation are
        unchanged. Set it before `compile()` (a compiled train function keeps
        the setting it was traced with).
        """
        return self._remat

    @remat.setter
    def remat(self, value):
        # Every block has the same dropout rates, so the first one raises
        # (dropout with remat) before any block has changed.
        for layer in self.encoder_layers + self.decoder_layers:
            layer.remat = value
        self._remat = check_remat(value)

    def __call__(self, inputs, *args, **kwargs):
        check_inputs(inputs)
        return super().__call__(inputs, *args, **kwargs)

    # The encoder and decoder passes are methods so that generation can run
    # them separately (encoder once, decoder step by step with caches).
    def _encode(self, token_ids, padding_mask, training=None):
        x = self.token_embedding(token_ids)
        x = scale_embeddings(x, self.token_embedding.output_dim)
        x = self.embedding_dropout(x, training=training)
        for layer in self.encoder_layers:
            x = layer(x, padding_mask=padding_mask, training=training)
        x = self.encoder_norm(x)
        return self.output_dropout(x, training=training)

    def _decode(
        self,
        token_ids,
        padding_mask,
        encoder_output,
        encoder_padding_mask,
        caches=None,
        cache_update_index=None,
        training=None,
    ):
        x = self.decoder_token_embedding(token_ids)
        x = scale_embeddings(x, self.decoder_token_embedding.output_dim)
        x = self.embedding_dropout(x, training=training)
        new_caches = []
        for i, layer in enumerate(self.decoder_layers):
            self_cache, cross_cache = (None, None) if caches is None else caches[i]
            x, layer_caches = layer(
                x,
                encoder_output if cross_cache is None else None,
                padding_mask=padding_mask,
                encoder_padding_mask=encoder_padding_mask,
                self_attention_cache=self_cache,
                cross_attention_cache=cross_cache,
                cache_update_index=cache_update_index,
                training=training,
            )
            new_caches.append(layer_caches)
        x = self.decoder_norm(x)
        return self.output_dropout(x, training=training), new_caches

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
        fmt, folder = preset_loader.resolve(preset, T5GEMMA_PRESETS)
        if fmt == preset_loader.KERAS_ENCDEC:
            return super().from_preset(folder, load_weights=load_weights, **kwargs)
        return preset_loader.load_foreign_backbone(
            cls, fmt, folder, load_weights=load_weights, **kwargs
        )

    def get_config(self):
        config = super().get_config()
        config["vocabulary_size"] = self.vocabulary_size
        for side in ("encoder", "decoder"):
            for name in STACK_ARGS:
                config[f"{side}_{name}"] = getattr(self, f"{side}_{name}")
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

    # === Fine-tuning (implementations in `keras_encdec.training`) ===

    def enable_lora(
        self, rank, target_layer_names=None, *, alpha=None, target="attention"
    ):
        """Freezes every weight and adds LoRA adapters to the targets.

        `target="attention"` covers query, key, value and attention_output
        of every self- and cross-attention in the encoder and decoder.
        Embeddings and norms always stay frozen. The adapters are float32
        (`lora_kernel_a`, `lora_kernel_b`); the output is
        `x @ (W + alpha / rank * A @ B)`, and `B` starts at zero, so the
        model is unchanged until trained.

        Args:
            rank: int. LoRA rank.
            target_layer_names: list of str or None. keras-hub's argument;
                when given it replaces `target`. Defaults to `None`.
            alpha: float or None. LoRA scale numerator. Defaults to `rank`
                (scale 1).
            target: str or list of str. `"attention"`, `"attention+mlp"`,
                `"all"`, or a list of aliases
                (`"decoder.cross_attention"`, `"encoder.mlp.ffw_linear"`,
                `"decoder"`), bare layer names (`"query"`) or globs over
                paths (`"decoder_layer_*/self_attention/*"`). See
                `keras_encdec.training.resolve_lora_targets`. Defaults to
                `"attention"`.

        Returns:
            int. The number of trainable parameters (also logged).

        Examples:

        >>> import numpy as np
        >>> backbone = T5GemmaBackbone.from_preset("t5gemma_tiny_random")
        >>> count = backbone.enable_lora(4, target="decoder.cross_attention")
        >>> count == sum(int(np.prod(v.shape))
        ...              for v in backbone.trainable_weights)
        True
        """
        if target_layer_names is not None:
            target = list(target_layer_names)
        return lora_lib.enable_lora(self, rank, target=target, alpha=alpha)

    def save_lora_weights(self, filepath, overwrite=False):
        """Saves only the LoRA factors, with rank, alpha and targets.

        The file is written atomically; an existing adapter file is
        replaced, any other existing file refused unless `overwrite`.

        Args:
            filepath: str. A path ending in `.lora.h5`.
            overwrite: bool. Replace an existing file that is not an
                adapter. Defaults to `False`.

        Examples:

        >>> import os, tempfile
        >>> backbone = T5GemmaBackbone.from_preset("t5gemma_tiny_random")
        >>> _ = backbone.enable_lora(2)
        >>> path = os.path.join(tempfile.mkdtemp(), "adapter.lora.h5")
        >>> backbone.save_lora_weights(path)
        >>> fresh = T5GemmaBackbone.from_preset("t5gemma_tiny_random")
        >>> fresh.load_lora_weights(path)
        >>> len(fresh.trainable_weights) == len(backbone.trainable_weights)
        True
        """
        lora_lib.save_lora_weights(self, filepath, overwrite=overwrite)

    def load_lora_weights(self, filepath):
        """Loads an adapter file; enables LoRA with its settings if needed.

        Args:
            filepath: str. A file written by `save_lora_weights`.
        """
        lora_lib.load_lora_weights(self, filepath)

    def merge_lora(self):
        """Folds the adapters into the base kernels and removes them.

        Afterwards the backbone is a plain model (every weight trainable)
        that exports to transformers. Compiled functions of a task holding
        this backbone are reset by `keras_encdec.training.merge_lora(task)`;
        eager calls need nothing.

        Returns:
            int. The number of merged projections.

        Examples:

        >>> backbone = T5GemmaBackbone.from_preset("t5gemma_tiny_random")
        >>> _ = backbone.enable_lora(2)
        >>> backbone.merge_lora() > 0
        True
        """
        return lora_lib.merge_lora(self)

    @staticmethod
    def get_layout_map(
        device_mesh,
        model_parallel_dim_name="model",
        data_parallel_dim_name="batch",
    ):
        """The `keras.distribution.LayoutMap` for `ModelParallel`.

        Every weight of rank >= 2 is mapped: attention heads and the MLP
        width go over the model axis, the other matrix dimension over the
        data axis; embeddings shard vocabulary over the model axis and width
        over the data axis; LoRA factors follow their kernel. A sharded
        dimension must be divisible by its axis size (e.g. `num_kv_heads`
        by the model axis). See `keras_encdec.training.layout_map`.

        Args:
            device_mesh: `keras.distribution.DeviceMesh`. The mesh.
            model_parallel_dim_name: str. Mesh axis for model parallelism.
                Defaults to `"model"`.
            data_parallel_dim_name: str. Mesh axis for data parallelism.
                Defaults to `"batch"`.

        Returns:
            `keras.distribution.LayoutMap`.

        Examples:

        >>> import keras
        >>> mesh = keras.distribution.DeviceMesh(
        ...     (1, 1), ["batch", "model"], keras.distribution.list_devices()[:1])
        >>> layout_map = T5GemmaBackbone.get_layout_map(mesh)
        >>> layout_map["decoder_layer_0/mlp/ffw_linear/kernel"].axes
        ('model', 'batch')
        """
        return layout_map_lib.get_layout_map(
            device_mesh, model_parallel_dim_name, data_parallel_dim_name
        )


def _check_stack(side, stack):
    for name in ("hidden_dim", "intermediate_dim", "num_layers", "num_heads",
                 "num_kv_heads", "head_dim"):
        value = stack[name]
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(
                f"`{side}_{name}` must be a positive int. Received: "
                f"{side}_{name}={value!r}."
            )
    if stack["num_heads"] % stack["num_kv_heads"]:
        raise ValueError(
            f"`{side}_num_heads` must be a multiple of `{side}_num_kv_heads`. "
            f"Received: {stack['num_heads']} and {stack['num_kv_heads']}."
        )
    if stack["layer_types"] is None:
        stack["layer_types"] = alternating_layer_types(stack["num_layers"])
    stack["layer_types"] = list(stack["layer_types"])
    if len(stack["layer_types"]) != stack["num_layers"]:
        raise ValueError(
            f"`{side}_layer_types` needs one entry per layer. Received: "
            f"{len(stack['layer_types'])} entries for "
            f"{side}_num_layers={stack['num_layers']}."
        )
    bad = sorted(set(stack["layer_types"]) - set(LAYER_TYPES))
    if bad:
        raise ValueError(
            f"Unknown `{side}_layer_types` {bad}. Expected each to be one of "
            f"{LAYER_TYPES}."
        )
    return stack


def _make_layer(layer_cls, stack, index, shared, side):
    return layer_cls(
        hidden_dim=stack["hidden_dim"],
        intermediate_dim=stack["intermediate_dim"],
        num_heads=stack["num_heads"],
        num_kv_heads=stack["num_kv_heads"],
        head_dim=stack["head_dim"],
        layer_type=stack["layer_types"][index],
        sliding_window=stack["sliding_window"],
        query_pre_attn_scalar=stack["query_pre_attn_scalar"],
        attention_logit_soft_cap=stack["attention_logit_soft_cap"],
        rope_max_wavelength=stack["rope_max_wavelength"],
        name=f"{side}_layer_{index}",
        **shared,
    )
