"""T5Gemma 2 encoder and decoder blocks.

Both reuse T5Gemma's block (`T5GemmaBlock`: sandwich norms, MLP, residual
dropout, remat) and swap in `T5Gemma2Attention`. The decoder block has no
separate cross-attention sublayer: its merged attention attends to the
decoder and the encoder at once.
"""

from keras_encdec.api import register
from keras_encdec.models.t5gemma.t5gemma_block import T5GemmaBlock
from keras_encdec.models.t5gemma.t5gemma_decoder_layer import T5GemmaDecoderLayer
from keras_encdec.models.t5gemma.t5gemma_encoder_layer import T5GemmaEncoderLayer
from keras_encdec.models.t5gemma2.t5gemma2_attention import T5Gemma2Attention
from keras_encdec.utils.sublayer import call_sublayer


class _T5Gemma2BlockMixin:
    """Adds `rope_scaling_factor` and builds `T5Gemma2Attention`."""

    merged = False

    def __init__(self, *args, rope_scaling_factor=1.0, **kwargs):
        # Read by `make_self_attention`, which runs inside `super().__init__`.
        self.rope_scaling_factor = rope_scaling_factor
        super().__init__(*args, **kwargs)
        self.config_values["rope_scaling_factor"] = rope_scaling_factor

    def make_self_attention(self, window, rope_max_wavelength):
        return T5Gemma2Attention(
            merged=self.merged,
            sliding_window=window,
            rope_max_wavelength=rope_max_wavelength,
            rope_scaling_factor=self.rope_scaling_factor,
            rms_norm_eps=self.config_values["rms_norm_eps"],
            name="merged_attention" if self.merged else "self_attention",
            **self.attention_options,
        )


@register
class T5Gemma2EncoderLayer(_T5Gemma2BlockMixin, T5GemmaEncoderLayer):
    """Encoder block: `x + post(attn(pre(x)))`, then `x + post(mlp(pre(x)))`.

    Bidirectional QK-normed attention; sliding layers keep keys with
    `-(W+1)//2 < k - q < W//2 + 1`.

    Args:
        rope_scaling_factor: float. Linear RoPE scaling of this block.
            Defaults to `1.0`.
        *args, **kwargs: as for `keras_encdec.models.t5gemma.
            t5gemma_encoder_layer.T5GemmaEncoderLayer` (the attention
            soft-cap must be None).

    Examples:

    >>> import numpy as np
    >>> layer = T5Gemma2EncoderLayer(16, 32, 4, 2, 8, "sliding_attention",
    ...                              sliding_window=4)
    >>> tuple(layer(np.ones((1, 5, 16), "float32")).shape)
    (1, 5, 16)
    """


@register
class T5Gemma2DecoderLayer(_T5Gemma2BlockMixin, T5GemmaBlock):
    """Decoder block: `x + post(merged_attn(pre(x), enc))`, then the MLP.

    The merged attention (`merged_attention`) runs one softmax over the
    causal self keys and the encoder keys.

    Args:
        rope_scaling_factor: float. Linear RoPE scaling of this block.
            Defaults to `1.0`.
        *args, **kwargs: as for `keras_encdec.models.t5gemma.
            t5gemma_encoder_layer.T5GemmaEncoderLayer`.

    Examples:

    >>> import numpy as np
    >>> layer = T5Gemma2DecoderLayer(16, 32, 4, 2, 8, "full_attention")
    >>> x, enc = np.ones((1, 3, 16), "float32"), np.ones((1, 5, 16), "float32")
    >>> out, caches = layer(x, enc)
    >>> tuple(out.shape)
    (1, 3, 16)
    """

    causal = True
    merged = True

    def build(self, hidden_states_shape, encoder_output_shape=None):
        for layer in (
            self.pre_self_attention_norm,
            self.self_attention,
            self.post_self_attention_norm,
            self.pre_ffw_norm,
            self.mlp,
            self.post_ffw_norm,
        ):
            layer.build(hidden_states_shape)

    def compute_cross_key_value(self, encoder_output):
        """The encoder keys/values of this block (computed once in
        generation)."""
        return self.self_attention.compute_key_value(encoder_output)

    # T5Gemma's decoder block has the same call signature, remat handling
    # and output structure; only `forward` differs.
    call = T5GemmaDecoderLayer.call
    compute_output_spec = T5GemmaDecoderLayer.compute_output_spec

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
        x, caches = call_sublayer(self.self_attention,
            x,
            encoder_output=encoder_output,
            key_padding_mask=padding_mask,
            encoder_padding_mask=encoder_padding_mask,
            cache=self_attention_cache,
            cross_cache=cross_attention_cache,
            cache_update_index=cache_update_index,
            training=training,
            query_segment_ids=segment_ids,
            key_segment_ids=segment_ids,
            encoder_segment_ids=encoder_segment_ids,
        )
        x = call_sublayer(self.post_self_attention_norm, x)
        hidden_states = self.residual(hidden_states, x, training)
        return self.feed_forward(hidden_states, training), caches
