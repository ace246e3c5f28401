"""T5Gemma 2 attention: QK-normed self-attention (encoder) and the merged
self + cross attention of the decoder."""

from keras import ops

from keras_encdec.api import register
from keras_encdec.models.t5gemma.t5gemma_attention import SELF_ATTENTION
from keras_encdec.models.t5gemma.t5gemma_attention import T5GemmaAttention
from keras_encdec.models.t5gemma.t5gemma_layers import T5GemmaRMSNormalization
from keras_encdec.ops import apply_rotary_embedding
from keras_encdec.ops import dot_product_attention
from keras_encdec.ops import merged_dot_product_attention
from keras_encdec.ops import t5gemma2_encoder_window
from keras_encdec.ops.rotary import segment_positions
from keras_encdec.utils.sublayer import call_sublayer


@register
class T5Gemma2Attention(T5GemmaAttention):
    """Gemma 3 attention as T5Gemma 2 uses it.

    Queries and keys go through an RMS norm over `head_dim` (`query_norm`,
    `key_norm`, `x * (1 + w)` in float32) before RoPE. Logits are scaled by
    `query_pre_attn_scalar ** -0.5`; there is no attention soft-cap (the
    transformers reference stores `attn_logit_softcapping` but ignores it).

    - Encoder (`merged=False, causal=False`): bidirectional; a sliding layer
      with window `W` keeps keys with `-(W+1)//2 < k - q < W//2 + 1`
      (`keras_encdec.ops.t5gemma2_encoder_window`).
    - Decoder (`merged=True`, always causal): one set of projections serves
      self- and cross-attention. Cross keys/values are `key_norm(key(enc))`
      and `value(enc)` (no RoPE), and ONE softmax runs over `[self ; cross]`
      (`keras_encdec.ops.merged_dot_product_attention`). The self part is
      causal (sliding layers keep `k > q - W`); the cross part is masked by
      encoder padding only.

    Kernels use `T5GemmaAttention`'s layouts (`query`, `key`, `value`,
    `attention_output`).

    Args:
        hidden_dim: int. Model width.
        num_heads: int. Query heads.
        num_kv_heads: int. Key/value heads.
        head_dim: int. Head width.
        merged: bool. Decoder merged attention. Defaults to `False`.
        sliding_window: int or None. `W` of a sliding layer. Defaults to
            `None` (full attention).
        query_pre_attn_scalar: float or None. Defaults to `head_dim`.
        rope_max_wavelength: float. RoPE base of this layer. Defaults to
            `10000.0`.
        rope_scaling_factor: float. Linear RoPE scaling (positions are
            divided by it). Defaults to `1.0`.
        rms_norm_eps: float. Epsilon of the QK norms. Defaults to `1e-6`.
        dropout_rate: float. Attention-probability dropout (encoder only;
            the merged kernels take none). Defaults to `0.0`.
        initializer_range: float. Kernel init std. Defaults to `0.02`.
        attention_impl: str or None. Attention implementation. Defaults to
            `None` (best available).
        **kwargs: passed to `keras.layers.Layer`.

    Examples:

    >>> import numpy as np
    >>> layer = T5Gemma2Attention(16, 4, 2, 8, merged=True, sliding_window=4)
    >>> x, enc = np.ones((1, 3, 16), "float32"), np.ones((1, 5, 16), "float32")
    >>> out, caches = layer(x, encoder_output=enc)
    >>> tuple(out.shape)
    (1, 3, 16)
    """

    def __init__(
        self,
        hidden_dim,
        num_heads,
        num_kv_heads,
        head_dim,
        merged=False,
        sliding_window=None,
        query_pre_attn_scalar=None,
        rope_max_wavelength=10000.0,
        rope_scaling_factor=1.0,
        rms_norm_eps=1e-6,
        dropout_rate=0.0,
        initializer_range=0.02,
        attention_impl=None,
        **kwargs,
    ):
        kwargs.pop("attention_type", None)
        kwargs.pop("causal", None)
        kwargs.pop("logit_soft_cap", None)
        if merged and dropout_rate:
            raise ValueError(
                "The decoder's merged attention has no probability dropout. "
                f"Received: dropout_rate={dropout_rate}. Expected 0.0."
            )
        if not rope_scaling_factor or rope_scaling_factor <= 0:
            raise ValueError(
                "rope_scaling_factor must be positive. Received: "
                f"rope_scaling_factor={rope_scaling_factor}."
            )
        super().__init__(
            hidden_dim,
            num_heads,
            num_kv_heads,
            head_dim,
            attention_type=SELF_ATTENTION,
            causal=merged,
            sliding_window=sliding_window,
            query_pre_attn_scalar=query_pre_attn_scalar,
            rope_max_wavelength=rope_max_wavelength,
            dropout_rate=dropout_rate,
            initializer_range=initializer_range,
            attention_impl=attention_impl,
            **kwargs,
        )
        self.merged = merged
        self.rope_scaling_factor = rope_scaling_factor
        self.rms_norm_eps = rms_norm_eps
        self.query_norm = T5GemmaRMSNormalization(
            epsilon=rms_norm_eps, dtype=self.dtype_policy, name="query_norm"
        )
        self.key_norm = T5GemmaRMSNormalization(
            epsilon=rms_norm_eps, dtype=self.dtype_policy, name="key_norm"
        )

    def build(self, hidden_states_shape, encoder_output_shape=None):
        super().build(hidden_states_shape)
        self.query_norm.build((self.head_dim,))
        self.key_norm.build((self.head_dim,))

    def weight_roles(self):
        """T5Gemma's projection roles plus `query_norm` and `key_norm`."""
        roles = super().weight_roles()
        roles.update(query_norm=self.query_norm.scale, key_norm=self.key_norm.scale)
        return roles

    def rotate(self, x, positions):
        """Applies this layer's RoPE (base and linear scaling) to `x`."""
        if self.rope_scaling_factor != 1.0:
            positions = ops.cast(positions, "float32") / self.rope_scaling_factor
        return apply_rotary_embedding(x, positions, self.rope_max_wavelength)

    def compute_key_value(self, kv_states, positions=None, training=None):
        """`(key_norm(key(x)), value(x))`, rotated when `positions` is given.

        Without positions this is the decoder's cross key/value pair,
        computed once per encoder output.
        """
        key = call_sublayer(self.key_dense, kv_states, training=training)
        key = call_sublayer(self.key_norm, key)
        value = call_sublayer(self.value_dense, kv_states, training=training)
        if positions is not None:
            key = self.rotate(key, positions)
        return key, value

    def call(
        self,
        hidden_states,
        encoder_output=None,
        key_padding_mask=None,
        encoder_padding_mask=None,
        cache=None,
        cross_cache=None,
        cache_update_index=None,
        training=None,
        query_segment_ids=None,
        key_segment_ids=None,
        encoder_segment_ids=None,
    ):
        """Runs attention.

        Args:
            hidden_states: tensor `[batch, T, hidden_dim]`.
            encoder_output: tensor `[batch, S, hidden_dim]` or None (merged
                only; not needed when `cross_cache` is given).
            key_padding_mask: tensor `[batch, T_keys]` or None: true on real
                self-attention keys.
            encoder_padding_mask: tensor `[batch, S]` or None (merged only).
            cache: `(key, value)` static self-attention cache
                `[batch, max_len, kv_heads, head_dim]` or None.
            cross_cache: `(key, value)` of the encoder output or None.
            cache_update_index: int or int tensor: absolute position of
                `hidden_states[:, 0]`.
            training: bool. Enables dropout.
            query_segment_ids: int tensor `[batch, T]` or None: packed
                segments of the queries; with `key_segment_ids` (the self
                keys' segments, `[batch, T_keys]`) a self key is visible
                only from queries of its segment. Merged attention also
                restarts the RoPE positions on each segment.
            key_segment_ids: int tensor or None.
            encoder_segment_ids: int tensor `[batch, S]` or None (merged
                only, needs `query_segment_ids`): an encoder key is visible
                only from decoder queries of its segment.

        Returns:
            `(output, (key, value))` for the encoder, and
            `(output, ((key, value), (cross_key, cross_value)))` when merged.
        """
        query_length = ops.shape(hidden_states)[1]
        offset = 0 if cache_update_index is None else cache_update_index
        positions = ops.arange(query_length, dtype="int32") + offset
        if self.merged and query_segment_ids is not None:
            # Rotated queries meet unrotated encoder keys: the cross scores
            # depend on absolute decoder positions, so packed segments
            # restart them (as each example alone in a row has them).
            if cache is not None:
                raise ValueError(
                    "Packed inputs (segment ids) run without a KV cache. "
                    "Received: query_segment_ids and a self-attention cache."
                )
            positions = segment_positions(query_segment_ids)
        query = self.rotate(
            call_sublayer(
                self.query_norm,
                call_sublayer(
                    self.query_dense, hidden_states, training=training
                ),
            ),
            positions,
        )
        key, value = self.compute_key_value(
            hidden_states, positions, training=training
        )
        if cache is not None:
            if cache_update_index is None:
                raise ValueError(
                    "A self-attention cache needs `cache_update_index`."
                )
            start = [0, cache_update_index, 0, 0]
            key = ops.slice_update(cache[0], start, key)
            value = ops.slice_update(cache[1], start, value)
        scale = self.query_pre_attn_scalar**-0.5
        if not self.merged:
            dropout = None
            if training and self.dropout_rate > 0:
                def dropout(p):
                    return call_sublayer(self.dropout, p, training=training)

            window = self.sliding_window
            if window is not None:
                window = t5gemma2_encoder_window(window)
            attended = dot_product_attention(
                query,
                key,
                value,
                scale=scale,
                sliding_window=window,
                key_padding_mask=key_padding_mask,
                query_segment_ids=query_segment_ids,
                key_segment_ids=key_segment_ids,
                probabilities_dropout=dropout,
                impl=self.attention_impl,
            )
            output = call_sublayer(
                self.output_dense, attended, training=training
            )
            return output, (key, value)
        if cross_cache is None:
            if encoder_output is None:
                raise ValueError(
                    "Merged attention needs `encoder_output` or a precomputed "
                    "`cross_cache`."
                )
            cross_cache = self.compute_key_value(
                encoder_output, training=training
            )
        attended = merged_dot_product_attention(
            query,
            key,
            value,
            cross_cache[0],
            cross_cache[1],
            scale=scale,
            causal=True,
            sliding_window=self.sliding_window,
            key_padding_mask=key_padding_mask,
            cross_padding_mask=encoder_padding_mask,
            query_offset=offset,
            query_segment_ids=query_segment_ids,
            key_segment_ids=key_segment_ids,
            cross_segment_ids=encoder_segment_ids,
            impl=self.attention_impl,
        )
        output = call_sublayer(self.output_dense, attended, training=training)
        return output, ((key, value), cross_cache)

    def get_config(self):
        config = super().get_config()
        for name in ("attention_type", "causal", "logit_soft_cap"):
            config.pop(name)
        config.update(
            {
                "merged": self.merged,
                "rope_scaling_factor": self.rope_scaling_factor,
                "rms_norm_eps": self.rms_norm_eps,
            }
        )
        return config
