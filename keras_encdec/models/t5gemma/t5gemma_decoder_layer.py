"""One T5Gemma decoder block: self-attention, cross-attention, MLP."""

import keras

from keras_encdec.api import register
from keras_encdec.models.t5gemma.t5gemma_attention import T5GemmaAttention
from keras_encdec.models.t5gemma.t5gemma_block import T5GemmaBlock
from keras_encdec.weight_roles import CROSS_ATTENTION
from keras_encdec.weight_roles import sandwich_roles
from keras_encdec.weight_roles import sublayer_roles
from keras_encdec.utils.sublayer import call_sublayer


@register
class T5GemmaDecoderLayer(T5GemmaBlock):
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
        remat: bool. Recompute the block's activations in the backward pass
            instead of keeping them (training without caches only). Defaults
            to `False`.
        **kwargs: passed to `keras.layers.Layer`.

    Examples:

    >>> import numpy as np
    >>> layer = T5GemmaDecoderLayer(16, 32, 4, 2, 8, "full_attention")
    >>> x, enc = np.ones((1, 3, 16), "float32"), np.ones((1, 5, 24), "float32")
    >>> out, cache = layer(x, enc)
    >>> tuple(out.shape)
    (1, 3, 16)
    """

    causal = True

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.cross_attention = T5GemmaAttention(
            attention_type="cross",
            name="cross_attention",
            **self.attention_options,
        )
        self.pre_cross_attention_norm, self.post_cross_attention_norm = (
            self.sandwich_norms("cross_attention")
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

    def weight_roles(self):
        """The block roles plus `cross_attention.*` (projections and
        sandwich norms)."""
        roles = super().weight_roles()
        cross = self.cross_attention.weight_roles()
        roles.update(sublayer_roles(CROSS_ATTENTION, cross))
        roles.update(
            sandwich_roles(
                CROSS_ATTENTION,
                self.pre_cross_attention_norm,
                self.post_cross_attention_norm,
            )
        )
        return roles

    def compute_cross_key_value(self, encoder_output):
        """The cross-attention keys/values of `encoder_output` (generation
        computes them once)."""
        return self.cross_attention.compute_key_value(encoder_output)

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
        segment_ids=None,
        encoder_segment_ids=None,
    ):
        """Runs the block.

        Returns `(hidden_states, (self_cache, cross_cache))`, where each cache
        is the `(key, value)` tuple the attention used. `encoder_output` may
        be None when `cross_attention_cache` holds the encoder keys/values.
        `segment_ids` / `encoder_segment_ids` (int `[batch, T]` / `[batch,
        S]`, given together) keep self- and cross-attention inside each
        packed segment.
        """
        if self_attention_cache is None and cross_attention_cache is None:
            return self.rematerialized(
                self.forward,
                training,
                hidden_states=hidden_states,
                encoder_output=encoder_output,
                padding_mask=padding_mask,
                encoder_padding_mask=encoder_padding_mask,
                segment_ids=segment_ids,
                encoder_segment_ids=encoder_segment_ids,
            )
        return self.forward(
            hidden_states,
            encoder_output,
            padding_mask=padding_mask,
            encoder_padding_mask=encoder_padding_mask,
            self_attention_cache=self_attention_cache,
            cross_attention_cache=cross_attention_cache,
            cache_update_index=cache_update_index,
            training=training,
            segment_ids=segment_ids,
            encoder_segment_ids=encoder_segment_ids,
        )

    def forward(
        self,
        hidden_states,
        encoder_output=None,
        padding_mask=None,
        encoder_padding_mask=None,
        self_attention_cache=None,
        cross_attention_cache=None,
        cache_update_index=None,
        training=None,
        segment_ids=None,
        encoder_segment_ids=None,
    ):
        """The block's computation (`call` adds the optional remat)."""
        x = call_sublayer(self.pre_self_attention_norm, hidden_states)
        x, self_cache = call_sublayer(self.self_attention,
            x,
            key_padding_mask=padding_mask,
            cache=self_attention_cache,
            cache_update_index=cache_update_index,
            training=training,
            query_segment_ids=segment_ids,
            key_segment_ids=segment_ids,
        )
        x = call_sublayer(self.post_self_attention_norm, x)
        hidden_states = self.residual(hidden_states, x, training)

        x = call_sublayer(self.pre_cross_attention_norm, hidden_states)
        x, cross_cache = call_sublayer(self.cross_attention,
            x,
            kv_states=encoder_output,
            key_padding_mask=encoder_padding_mask,
            cache=cross_attention_cache,
            training=training,
            query_segment_ids=segment_ids,
            key_segment_ids=encoder_segment_ids,
        )
        x = call_sublayer(self.post_cross_attention_norm, x)
        hidden_states = self.residual(hidden_states, x, training)
        hidden_states = self.feed_forward(hidden_states, training)
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
