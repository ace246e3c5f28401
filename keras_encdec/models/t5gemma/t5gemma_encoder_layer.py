"""One T5Gemma encoder block: sandwich-normed self-attention and MLP."""

import keras

from keras_encdec.api import register
from keras_encdec.models.t5gemma.t5gemma_attention import T5GemmaAttention
from keras_encdec.models.t5gemma.t5gemma_layers import T5GemmaMLP
from keras_encdec.models.t5gemma.t5gemma_layers import T5GemmaRMSNormalization

SLIDING_ATTENTION = "sliding_attention"
FULL_ATTENTION = "full_attention"
LAYER_TYPES = (SLIDING_ATTENTION, FULL_ATTENTION)


def check_layer_type(layer_type, sliding_window):
    """Validates a layer type and returns the window this layer uses."""
    if layer_type not in LAYER_TYPES:
        raise ValueError(
            f"Unknown layer type. Received: layer_type={layer_type!r}. "
            f"Expected one of {LAYER_TYPES}."
        )
    if layer_type == SLIDING_ATTENTION:
        if sliding_window is None or sliding_window < 1:
            raise ValueError(
                "A 'sliding_attention' layer needs a positive "
                f"sliding_window. Received: sliding_window={sliding_window}."
            )
        return sliding_window
    return None


def sandwich_norms(owner, prefix, epsilon):
    """Creates the pre/post RMS norms around one sublayer."""
    make = lambda name: T5GemmaRMSNormalization(  # noqa: E731
        epsilon=epsilon, dtype=owner.dtype_policy, name=name
    )
    return make(f"pre_{prefix}_norm"), make(f"post_{prefix}_norm")


@register
class T5GemmaEncoderLayer(keras.layers.Layer):
    """Encoder block: `x + post(attn(pre(x)))`, then `x + post(mlp(pre(x)))`.

    The self-attention is bidirectional; on sliding layers it keeps keys
    with `|q - k| <= sliding_window`.

    Args:
        hidden_dim: int. Model width.
        intermediate_dim: int. MLP width.
        num_heads: int. Query heads.
        num_kv_heads: int. Key/value heads.
        head_dim: int. Head width.
        layer_type: str. `"sliding_attention"` or `"full_attention"`.
        sliding_window: int or None. Window of sliding layers.
        query_pre_attn_scalar: float. Attention scale is its `-0.5` power.
        attention_logit_soft_cap: float or None. Attention soft-cap.
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
    >>> layer = T5GemmaEncoderLayer(16, 32, 4, 2, 8, "full_attention")
    >>> tuple(layer(np.ones((1, 5, 16), "float32")).shape)
    (1, 5, 16)
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
        self.self_attention = T5GemmaAttention(
            hidden_dim,
            num_heads,
            num_kv_heads,
            head_dim,
            "self",
            causal=False,
            sliding_window=window,
            query_pre_attn_scalar=query_pre_attn_scalar,
            logit_soft_cap=attention_logit_soft_cap,
            rope_max_wavelength=rope_max_wavelength,
            dropout_rate=attention_dropout,
            initializer_range=initializer_range,
            attention_impl=attention_impl,
            dtype=self.dtype_policy,
            name="self_attention",
        )
        self.pre_self_attention_norm, self.post_self_attention_norm = (
            sandwich_norms(self, "self_attention", rms_norm_eps)
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

    def build(self, input_shape):
        for layer in (
            self.pre_self_attention_norm,
            self.self_attention,
            self.post_self_attention_norm,
            self.pre_ffw_norm,
            self.mlp,
            self.post_ffw_norm,
        ):
            layer.build(input_shape)

    def call(self, hidden_states, padding_mask=None, training=None):
        residual = hidden_states
        x = self.pre_self_attention_norm(hidden_states)
        x, _ = self.self_attention(
            x, key_padding_mask=padding_mask, training=training
        )
        x = self.post_self_attention_norm(x)
        hidden_states = residual + self.residual_dropout(x, training=training)

        residual = hidden_states
        x = self.pre_ffw_norm(hidden_states)
        x = self.mlp(x, training=training)
        x = self.post_ffw_norm(x)
        return residual + self.residual_dropout(x, training=training)

    def compute_output_spec(self, hidden_states, **kwargs):
        """Same shape as the input, in the compute dtype (no tracing)."""
        return keras.KerasTensor(hidden_states.shape, self.compute_dtype)

    def get_config(self):
        config = super().get_config()
        config.update(self.config_values)
        return config
