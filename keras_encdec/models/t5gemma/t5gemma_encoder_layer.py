"""One T5Gemma encoder block: sandwich-normed self-attention and MLP."""

import keras

from keras_encdec.api import register
from keras_encdec.models.t5gemma.t5gemma_block import T5GemmaBlock
from keras_encdec.utils.sublayer import call_sublayer


@register
class T5GemmaEncoderLayer(T5GemmaBlock):
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
        remat: bool. Recompute the block's activations in the backward pass
            instead of keeping them (training only). Defaults to `False`.
        **kwargs: passed to `keras.layers.Layer`.

    Examples:

    >>> import numpy as np
    >>> layer = T5GemmaEncoderLayer(16, 32, 4, 2, 8, "full_attention")
    >>> tuple(layer(np.ones((1, 5, 16), "float32")).shape)
    (1, 5, 16)
    """

    causal = False

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

    def call(self, hidden_states, padding_mask=None, training=None,
             segment_ids=None):
        """Runs the block; `segment_ids` (int `[batch, length]` or None)
        keeps attention inside each packed segment."""
        return self.rematerialized(
            self.forward,
            training,
            hidden_states=hidden_states,
            padding_mask=padding_mask,
            segment_ids=segment_ids,
        )

    def forward(self, hidden_states, padding_mask=None, training=None,
                segment_ids=None):
        """The block's computation (`call` adds the optional remat)."""
        x = call_sublayer(self.pre_self_attention_norm, hidden_states)
        x, _ = call_sublayer(self.self_attention,
            x, key_padding_mask=padding_mask, training=training,
            query_segment_ids=segment_ids,
            key_segment_ids=segment_ids,
        )
        x = call_sublayer(self.post_self_attention_norm, x)
        hidden_states = self.residual(hidden_states, x, training)
        return self.feed_forward(hidden_states, training)

    def compute_output_spec(self, hidden_states, **kwargs):
        """Same shape as the input, in the compute dtype (no tracing)."""
        return keras.KerasTensor(hidden_states.shape, self.compute_dtype)
