"""The T5Gemma 2 encoder-decoder backbone (Gemma 3 blocks)."""

import keras
from keras_hub.models import Backbone
from keras_hub.src.utils.python_utils import classproperty

from keras_encdec.api import register
from keras_encdec.convert import preset_loader
from keras_encdec.models.t5gemma.t5gemma_backbone import INPUT_NAMES
from keras_encdec.models.t5gemma.t5gemma_backbone import T5GemmaBackbone
from keras_encdec.models.t5gemma.t5gemma_layers import T5GemmaRMSNormalization
from keras_encdec.models.t5gemma2.t5gemma2_blocks import T5Gemma2DecoderLayer
from keras_encdec.models.t5gemma2.t5gemma2_blocks import T5Gemma2EncoderLayer
from keras_encdec.models.t5gemma2.t5gemma2_config import PIXEL_VALUES
from keras_encdec.models.t5gemma2.t5gemma2_config import STACK_ARGS
from keras_encdec.models.t5gemma2.t5gemma2_config import check_positive_int
from keras_encdec.models.t5gemma2.t5gemma2_config import check_stack
from keras_encdec.models.t5gemma2.t5gemma2_config import check_t5gemma2_inputs
from keras_encdec.models.t5gemma2.t5gemma2_config import make_layer
from keras_encdec.models.t5gemma2.t5gemma2_layers import T5Gemma2Embedding
from keras_encdec.models.t5gemma2.t5gemma2_presets import T5GEMMA2_PRESETS
from keras_encdec.models.t5gemma2.t5gemma2_vision import T5Gemma2VisionEncoder
from keras_encdec.models.t5gemma2.t5gemma2_vision import check_vision_config
from keras_encdec.models.t5gemma2.t5gemma2_vision import merge_image_features

@register
class T5Gemma2Backbone(T5GemmaBackbone):
    """T5Gemma 2: Gemma 3 blocks arranged as an encoder-decoder.

    One embedding table (`token_embedding`, also reachable as
    `decoder_token_embedding`) serves the encoder, the decoder and the tied
    LM head; tokens equal to `eoi_token_index` take a learned
    `eoi_embedding`. Blocks are Gemma 3's: QK-norm before RoPE, RoPE base
    per layer type (`rope_local_wavelength` on sliding blocks,
    `rope_global_wavelength` with linear `rope_scaling_factor` on full
    blocks), and sandwich norms. The encoder is bidirectional (sliding
    blocks see `q - (W+1)//2 < k < q + W//2 + 1`); each decoder block runs
    one merged attention over its causal self keys and the encoder output.
    Numerics follow transformers' `T5Gemma2Model`, which ignores
    `attn_logit_softcapping`: so does this model (the value is kept only to
    write it back on export).

    Inputs are T5Gemma's dict (`encoder_token_ids`, `encoder_padding_mask`,
    `decoder_token_ids`, `decoder_padding_mask`). Outputs are a dict with
    `encoder_sequence_output` and `decoder_sequence_output`.

    Args:
        vocabulary_size: int. Shared vocabulary size.
        hidden_dim: int. Width of both stacks (they share the embedding).
        encoder_intermediate_dim, decoder_intermediate_dim: int. MLP widths.
        encoder_num_layers, decoder_num_layers: int. Block counts.
        encoder_num_heads, decoder_num_heads: int. Query heads.
        encoder_num_kv_heads, decoder_num_kv_heads: int. Key/value heads.
        encoder_head_dim, decoder_head_dim: int. Head widths.
        encoder_layer_types, decoder_layer_types: list of str or None. Per
            block `"sliding_attention"` or `"full_attention"`. Defaults to
            Gemma 3's 5 sliding : 1 full pattern.
        encoder_sliding_window, decoder_sliding_window: int. Window `W` of
            sliding blocks. Defaults to `4096`.
        encoder_query_pre_attn_scalar, decoder_query_pre_attn_scalar: float
            or None. Attention scales are their `-0.5` power. Defaults to
            the head width.
        rope_local_wavelength: float. RoPE base of sliding blocks. Defaults
            to `10000.0`.
        rope_global_wavelength: float. RoPE base of full blocks. Defaults to
            `1000000.0`.
        rope_scaling_factor: float. Linear RoPE scaling of full blocks.
            Defaults to `1.0`.
        final_logit_soft_cap: float or None. Soft-cap of the LM logits.
            Defaults to `None`.
        attention_logit_soft_cap: float or None. Stored for export only:
            transformers ignores it, and so does this model. Defaults to
            `None`.
        eoi_token_index: int or None. End-of-image token. Defaults to
            `256000`.
        image_token_index: int. Image placeholder token. Defaults to
            `256001` (transformers' `T5Gemma2Config` default).
        rms_norm_eps: float. Norm epsilon. Defaults to `1e-6`.
        hidden_activation: str. MLP activation. Defaults to
            `"gelu_approximate"`.
        dropout_rate: float. Dropout on embeddings, residuals and MLP.
            Defaults to `0.0`.
        attention_dropout: float. Attention-probability dropout; must be
            0.0 (the merged attention kernels take none; every published
            T5Gemma 2 uses 0.0). Defaults to `0.0`.
        initializer_range: float. Init std. Defaults to `0.02`.
        vision_config: dict or None. The SigLIP tower (`image_size`,
            `patch_size`, `hidden_dim`, `num_layers`, `num_heads`,
            `intermediate_dim`, `layer_norm_epsilon`); with it, the encoder
            takes `pixel_values` float32 `[batch, num_images, H, W, 3]` and
            image features replace the `image_token_index` embeddings
            (without `pixel_values` the encoder sees text only). None keeps
            no vision weights. Defaults to `None`.
        mm_tokens_per_image: int. Tokens per image after pooling. Defaults
            to `256`.
        attention_impl: str or None. Attention implementation. Defaults to
            `None` (best available).
        remat: bool. Gradient checkpointing of every block. Defaults to
            `False`.
        dtype: str or `keras.DTypePolicy`. Weight/compute dtype policy.
        **kwargs: passed to `keras_hub.models.Backbone`.

    Examples:

    >>> import numpy as np
    >>> backbone = T5Gemma2Backbone(
    ...     vocabulary_size=64, hidden_dim=16,
    ...     encoder_intermediate_dim=32, encoder_num_layers=2,
    ...     encoder_num_heads=2, encoder_num_kv_heads=1, encoder_head_dim=8,
    ...     decoder_intermediate_dim=32, decoder_num_layers=2,
    ...     decoder_num_heads=2, decoder_num_kv_heads=1, decoder_head_dim=8,
    ...     encoder_sliding_window=4, decoder_sliding_window=4,
    ...     eoi_token_index=60, image_token_index=61,
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
        hidden_dim,
        encoder_intermediate_dim,
        encoder_num_layers,
        encoder_num_heads,
        encoder_num_kv_heads,
        encoder_head_dim,
        decoder_intermediate_dim,
        decoder_num_layers,
        decoder_num_heads,
        decoder_num_kv_heads,
        decoder_head_dim,
        encoder_layer_types=None,
        decoder_layer_types=None,
        encoder_sliding_window=4096,
        decoder_sliding_window=4096,
        encoder_query_pre_attn_scalar=None,
        decoder_query_pre_attn_scalar=None,
        rope_local_wavelength=10000.0,
        rope_global_wavelength=1000000.0,
        rope_scaling_factor=1.0,
        final_logit_soft_cap=None,
        attention_logit_soft_cap=None,
        eoi_token_index=256000,
        image_token_index=256001,
        rms_norm_eps=1e-6,
        hidden_activation="gelu_approximate",
        dropout_rate=0.0,
        attention_dropout=0.0,
        initializer_range=0.02,
        vision_config=None,
        mm_tokens_per_image=256,
        attention_impl=None,
        remat=False,
        dtype=None,
        **kwargs,
    ):
        if vision_config is not None:
            vision_config = check_vision_config(vision_config, mm_tokens_per_image)
        check_positive_int("hidden_dim", hidden_dim)
        check_positive_int("vocabulary_size", vocabulary_size)
        local_values = dict(locals())
        stacks = {
            side: check_stack(
                side, {name: local_values[f"{side}_{name}"] for name in STACK_ARGS}
            )
            for side in ("encoder", "decoder")
        }
        shared = dict(
            rms_norm_eps=rms_norm_eps,
            hidden_activation=hidden_activation,
            dropout_rate=dropout_rate,
            initializer_range=initializer_range,
            attention_impl=attention_impl,
            remat=remat,
            attention_dropout=attention_dropout,  # the decoder raises if > 0
            dtype=dtype,
        )
        rope = dict(
            local=rope_local_wavelength,
            full=rope_global_wavelength,
            scaling=rope_scaling_factor,
        )

        # === Layers ===
        self.token_embedding = T5Gemma2Embedding(
            vocabulary_size,
            hidden_dim,
            eoi_token_index=eoi_token_index,
            initializer_range=initializer_range,
            dtype=dtype,
            name="token_embedding",
        )
        # The decoder and the LM head share the table (T5Gemma's name).
        self.decoder_token_embedding = self.token_embedding
        self.encoder_layers = [
            make_layer(
                T5Gemma2EncoderLayer,
                stacks["encoder"],
                i,
                shared,
                rope,
                hidden_dim,
                "encoder",
            )
            for i in range(stacks["encoder"]["num_layers"])
        ]
        self.decoder_layers = [
            make_layer(
                T5Gemma2DecoderLayer,
                stacks["decoder"],
                i,
                shared,
                rope,
                hidden_dim,
                "decoder",
            )
            for i in range(stacks["decoder"]["num_layers"])
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
        self.vision_encoder = None
        if vision_config is not None:
            self.vision_encoder = T5Gemma2VisionEncoder(
                vision_config,
                mm_tokens_per_image,
                hidden_dim,
                dtype=dtype,
                name="vision_encoder",
            )

        # === Functional model ===
        self.image_token_index = image_token_index  # read by `_encode`
        inputs = {
            name: keras.Input(shape=(None,), dtype="int32", name=name)
            for name in INPUT_NAMES
        }
        if vision_config is not None:
            size = vision_config["image_size"]
            inputs[PIXEL_VALUES] = keras.Input(
                shape=(None, size, size, 3), dtype="float32", name=PIXEL_VALUES
            )
        encoder_output = self._encode(
            inputs["encoder_token_ids"],
            inputs["encoder_padding_mask"],
            inputs.get(PIXEL_VALUES),
        )
        decoder_output, _ = self._decode(
            inputs["decoder_token_ids"],
            inputs["decoder_padding_mask"],
            encoder_output,
            inputs["encoder_padding_mask"],
        )
        # T5GemmaBackbone.__init__ builds Gemma 2 blocks: skip it.
        Backbone.__init__(
            self,
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
        self.hidden_dim = hidden_dim
        for side, stack in stacks.items():
            for name, value in stack.items():
                setattr(self, f"{side}_{name}", value)
        self.rope_local_wavelength = rope_local_wavelength
        self.rope_global_wavelength = rope_global_wavelength
        self.rope_scaling_factor = rope_scaling_factor
        self.final_logit_soft_cap = final_logit_soft_cap
        self.attention_logit_soft_cap = attention_logit_soft_cap
        self.eoi_token_index = eoi_token_index
        self.image_token_index = image_token_index
        self.tie_word_embeddings = True
        self.rms_norm_eps = rms_norm_eps
        self.hidden_activation = hidden_activation
        self.dropout_rate = dropout_rate
        self.attention_dropout = attention_dropout
        self.initializer_range = initializer_range
        self.vision_config = vision_config
        self.mm_tokens_per_image = mm_tokens_per_image
        self.attention_impl = attention_impl
        self._remat = remat

    def __call__(self, inputs, *args, **kwargs):
        check_t5gemma2_inputs(inputs, self.vision_config)
        if self.vision_config is not None and PIXEL_VALUES not in inputs:
            return self.call_text_only(inputs, training=kwargs.get("training"))
        return Backbone.__call__(self, inputs, *args, **kwargs)

    def call_text_only(self, inputs, training=None):
        """Runs a vision backbone without images (the functional graph
        takes `pixel_values`); returns the same output dict."""
        encoder_output = self._encode(
            inputs["encoder_token_ids"],
            inputs["encoder_padding_mask"],
            training=training,
        )
        decoder_output, _ = self._decode(
            inputs["decoder_token_ids"],
            inputs["decoder_padding_mask"],
            encoder_output,
            inputs["encoder_padding_mask"],
            training=training,
        )
        return {
            "encoder_sequence_output": encoder_output,
            "decoder_sequence_output": decoder_output,
        }

    def _encode(self, token_ids, padding_mask, pixel_values=None, training=None):
        x = self.token_embedding(token_ids)
        if pixel_values is not None and pixel_values.shape[1] != 0:
            x = merge_image_features(
                x, token_ids, self.vision_encoder(pixel_values),
                self.image_token_index,
            )
        x = self.embedding_dropout(x, training=training)
        for layer in self.encoder_layers:
            x = layer(x, padding_mask=padding_mask, training=training)
        return self.output_dropout(self.encoder_norm(x), training=training)

    def encode(self, token_ids, padding_mask, pixel_values=None):
        """Runs the encoder alone (inference). Returns `[batch, S, width]`."""
        return self._encode(token_ids, padding_mask, pixel_values, training=False)

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
        x = self.embedding_dropout(self.token_embedding(token_ids), training=training)
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
        x = self.output_dropout(self.decoder_norm(x), training=training)
        return x, new_caches

    @classproperty
    def presets(cls):
        """Preset names -> metadata and hub handles."""
        return dict(T5GEMMA2_PRESETS)

    @classmethod
    def from_preset(cls, preset, load_weights=True, text_only=False, **kwargs):
        """Builds the backbone from a preset name, folder or hub handle.

        Accepts a keras-encdec preset name or folder, a local transformers
        T5Gemma 2 checkpoint folder (keys as transformers 5.23 writes them
        or with the `vision_model.` infix of published checkpoints), a
        keras-hub `T5Gemma2Backbone` / `T5Gemma2Seq2SeqLM` preset folder
        (see `keras_encdec.convert.keras_hub_t5gemma2`), or an `hf://` /
        `kaggle://` handle.

        Args:
            preset: str. The preset to load.
            load_weights: bool. Load the weights, or keep a random init.
                Defaults to `True`.
            text_only: bool. Skip a transformers or keras-hub checkpoint's
                vision tower (no vision weights are kept). Defaults to
                `False`.
            **kwargs: backbone config overrides, e.g. `dtype`.

        Examples:

        >>> backbone = T5Gemma2Backbone.from_preset("t5gemma2_tiny_random")
        >>> backbone.vocabulary_size > 0
        True
        """
        fmt, folder = preset_loader.resolve(preset, T5GEMMA2_PRESETS)
        if fmt == preset_loader.KERAS_ENCDEC:
            return Backbone.from_preset.__func__(
                cls, folder, load_weights=load_weights, **kwargs
            )
        if fmt == preset_loader.KERAS_HUB:
            from keras_encdec.convert import keras_hub_t5gemma2

            return keras_hub_t5gemma2.load_backbone(
                cls, folder, load_weights=load_weights, text_only=text_only,
                **kwargs
            )
        from keras_encdec.convert import transformers_t5gemma2 as hf

        return hf.load_backbone(
            cls, folder, load_weights=load_weights, text_only=text_only, **kwargs
        )

    def get_config(self):
        config = Backbone.get_config(self)
        config["vocabulary_size"] = self.vocabulary_size
        config["hidden_dim"] = self.hidden_dim
        for side in ("encoder", "decoder"):
            for name in STACK_ARGS:
                config[f"{side}_{name}"] = getattr(self, f"{side}_{name}")
        for name in (
            "rope_local_wavelength",
            "rope_global_wavelength",
            "rope_scaling_factor",
            "final_logit_soft_cap",
            "attention_logit_soft_cap",
            "eoi_token_index",
            "image_token_index",
            "rms_norm_eps",
            "hidden_activation",
            "dropout_rate",
            "attention_dropout",
            "initializer_range",
            "vision_config",
            "mm_tokens_per_image",
            "attention_impl",
            "remat",
        ):
            config[name] = getattr(self, name)
        return config
