"""One T5Gemma decoder block: self-attention, cross-attention, MLP."""

import keras

from keras_encdec.api import register
from keras_encdec.models.t5gemma.t5gemma_attention import T5GemmaAttention
from keras_encdec.models.t5gemma.t5gemma_encoder_layer import check_layer_type
from keras_encdec.models.t5gemma.t5gemma_encoder_layer import sandwich_norms
from keras_encdec.models.t5gemma.t5gemma_layers import T5GemmaMLP


@register
class T5GemmaDecoderLayer(keras.layers.Layer):
    """Decoder block: causal self-attention, cross-attention, then MLP.

    Each sublayer is sandwich-normed: `x + post(sublayer(pre(x)))`. Sliding
    self-attention layers keep keys with `q - sliding_window < k <= q`.
    Cross-attention is always full; its key/value kernels take the encoder
    width, so the encoder may be wider than the decoder.

    Args:
        hidden_dim: int. Decoder width.
        intermediate_dim: int. MLP width.
        num_heads: int. Query heads.
        num_kv_heads: int. Key/value heads.
        head_dim: int. Head width.
        layer_type: str. `"sliding_attention"` or `"full_attention"`.
        sliding_window: int or None. Window of sliding layers.
        query_pre_attn_scalar: float. Attention scale is its `-0.5` power.
        attention_logit_soft_cap: float or None. Attention soft-cap (self
            and cross).
        rope_max_wavelength: float. RoPE base. Defaults to `10000.0`.
        rms_norm_eps: float. Norm epsilon. Defaults to `1e-6`.
        hidden_activation: str. MLP activation. Defaults to
            `"gelu_approximate"`.
        dropout_rate: float. Residual and MLP dropout. Defaults to `0.0`.
        attention_dropout: float. Attention-probability dropout. Defaults to
            `0.0`.
        initializer_range: float. Kernel init std. Defaults to `0.02`.
        attention_impl: str or None. Attention implementation. Defaults to
            `None`.
        **kwargs: passed to `keras.layers.Layer`.

    Examples:

    >>> import numpy as np
    >>> layer = T5GemmaDecoderLayer(16, 32, 4, 2, 8, "full_attention")
    >>> x, enc = np.ones((1, 3, 16), "float32"), np.ones((1, 5, 24), "float32")
    >>> out, cache = layer(x, enc)
    >>> tuple(out.shape)
    (1, 3, 16)
    """

    def __init__(
        self,
        hidden_dim,
        intermediate_dim,
        num_heads,
        num_kv_heads,
        head_dim,
        layer_type,
        sliding_window=None,
        query_pre_attn_scalar=None,
        attention_logit_soft_cap=None,
        rope_max_wavelength=10000.0,
        rms_norm_eps=1e-6,
        hidden_activation="gelu_approximate",
        dropout_rate=0.0,
        attention_dropout=0.0,
        initializer_range=0.02,
        attention_impl=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        window = check_layer_type(layer_type, sliding_window)
        self.config_values = dict(
            hidden_dim=hidden_dim,
            intermediate_dim=intermediate_dim,
            num_heads=num_heads,
            num_kv_heads=num_kv_heads,
            head_dim=head_dim,
            layer_type=layer_type,
            sliding_window=sliding_window,
            query_pre_attn_scalar=query_pre_attn_scalar,
            attention_logit_soft_cap=attention_logit_soft_cap,
            rope_max_wavelength=rope_max_wavelength,
            rms_norm_eps=rms_norm_eps,
            hidden_activation=hidden_activation,
            dropout_rate=dropout_rate,
            attention_dropout=attention_dropout,
            initializer_range=initializer_range,
            attention_impl=attention_impl,
        )
        common = dict(
            query_pre_attn_scalar=query_pre_attn_scalar,
            logit_soft_cap=attention_logit_soft_cap,
            dropout_rate=attention_dropout,
            initializer_range=initializer_range,
            attention_impl=attention_impl,
            dtype=self.dtype_policy,
        )
        self.self_attention = T5GemmaAttention(
            hidden_dim,
            num_heads,
            num_kv_heads,
            head_dim,
            "self",
            causal=True,
            sliding_window=window,
            rope_max_wavelength=rope_max_wavelength,
            name="self_attention",
            **common,
        )
        self.cross_attention = T5GemmaAttention(
            hidden_dim,
            num_heads,
            num_kv_heads,
            head_dim,
            "cross",
            name="cross_attention",
            **common,
        )
        self.pre_self_attention_norm, self.post_self_attention_norm = (
            sandwich_norms(self, "self_attention", rms_norm_eps)
        )
        self.pre_cross_attention_norm, self.post_cross_attention_norm = (
            sandwich_norms(self, "cross_attention", rms_norm_eps)
        )
        self.mlp = T5GemmaMLP(
            hidden_dim,
            intermediate_dim,
            hidden_activation=hidden_activation,
            dropout_rate=dropout_rate,
            initializer_range=initializer_range,
            dtype=self.dtype_policy,
            name="mlp",
        )
        self.pre_ffw_norm, self.post_ffw_norm = sandwich_norms(
            self, "ffw", rms_norm_eps
        )
        self.residual_dropout = keras.layers.Dropout(
            dropout_rate, dtype=self.dtype_policy, name="residual_dropout"
        )

    def build(self, hidden_states_shape, encoder_output_shape=None):
        for layer in (
            self.pre_self_attention_norm,
            self.self_attention,
            self.post_self_attention_norm,
            self.pre_cross_attention_norm,
            self.post_cross_attention_norm,
            self.pre_ffw_norm,
            self.mlp,
            self.post_ffw_norm,
        ):
            layer.build(hidden_states_shape)
        if encoder_output_shape is not None:
            self.cross_attention.build(hidden_states_shape, encoder_output_shape)

    def call(
        self,
        hidden_states,
        encoder_output=None,
        padding_mask=None,
        encoder_padding_mask=None,
        self_attention_cache=None,
        cross_attention_cache=None,
        cache_update_index=None,
        training=None,
    ):
        """Runs the block.

        Returns `(hidden_states, (self_cache, cross_cache))`, where each cache
        is the `(key, value)` tuple the attention used. `encoder_output` may
        be None when `cross_attention_cache` holds the encoder keys/values.
        """
        residual = hidden_states
        x = self.pre_self_attention_norm(hidden_states)
        x, self_cache = self.self_attention(
            x,
            key_padding_mask=padding_mask,
            cache=self_attention_cache,
            cache_update_index=cache_update_index,
            training=training,
        )
        x = self.post_self_attention_norm(x)
        hidden_states = residual + self.residual_dropout(x, training=training)

        residual = hidden_states
        x = self.pre_cross_attention_norm(hidden_states)
        x, cross_cache = self.cross_attention(
            x,
            kv_states=encoder_output,
            key_padding_mask=encoder_padding_mask,
            cache=cross_attention_cache,
            training=training,
        )
        x = self.post_cross_attention_norm(x)
        hidden_states = residual + self.residual_dropout(x, training=training)

        residual = hidden_states
        x = self.pre_ffw_norm(hidden_states)
        x = self.mlp(x, training=training)
        x = self.post_ffw_norm(x)
        hidden_states = residual + self.residual_dropout(x, training=training)
        return hidden_states, (self_cache, cross_cache)

    def compute_output_spec(self, hidden_states, encoder_output=None, **kwargs):
        """`(hidden, ((key, value), (cross_key, cross_value)))` specs.

        Given directly, so building a model does not trace every block.
        """
        batch, length = hidden_states.shape[:2]
        attention = self.self_attention

        def spec(shape):
            return keras.KerasTensor(shape, self.compute_dtype)

        def kv_spec(kv_length):
            shape = (batch, kv_length, attention.num_kv_heads, attention.head_dim)
            return spec(shape), spec(shape)

        cross_length = None if encoder_output is None else encoder_output.shape[1]
        return spec(hidden_states.shape), (kv_spec(length), kv_spec(cross_length))

    def get_config(self):
        config = super().get_config()
        config.update(self.config_values)
        return config
