"""Checks that an adapted model still holds its source model.

`causal_encoder_hidden_states` runs an adapted encoder with causal masks
(and the source's causal sliding windows, `q - W < k <= q`). Its output
must equal the source decoder-only model's final hidden states: the
adaptation only removed the causal mask. The model is not modified: the
encoder's norms and MLPs are reused; a T5Gemma self-attention is run
through a causal twin built from the same config and weights, a T5Gemma 2
one through its own projections, norms and RoPE with a causal mask.
"""

from keras import ops

from keras_encdec.models.t5gemma.t5gemma_attention import T5GemmaAttention
from keras_encdec.models.t5gemma.t5gemma_backbone import scale_embeddings
from keras_encdec.models.t5gemma2.t5gemma2_attention import T5Gemma2Attention
from keras_encdec.ops import dot_product_attention


def causal_twin(attention):
    """A causal copy of a `T5GemmaAttention`, sharing no variables."""
    config = dict(attention.get_config(), causal=True)
    twin = T5GemmaAttention.from_config(config)
    width = attention.query_dense.kernel.shape[0]
    twin.build((None, None, width))
    twin.set_weights(attention.get_weights())
    return twin


def causal_t5gemma2_attention(attention, x, padding_mask=None):
    """A T5Gemma 2 encoder attention run causally (`q - W < k <= q` on
    sliding layers), as the Gemma 3 source ran it."""
    positions = ops.arange(ops.shape(x)[1], dtype="int32")
    query = attention.rotate(
        attention.query_norm(attention.query_dense(x)), positions
    )
    key, value = attention.compute_key_value(x, positions)
    attended = dot_product_attention(
        query, key, value, scale=attention.query_pre_attn_scalar ** -0.5,
        causal=True, sliding_window=attention.sliding_window,
        key_padding_mask=padding_mask,
    )
    return attention.output_dense(attended)


def _causal_attention(attention):
    if isinstance(attention, T5Gemma2Attention):
        return lambda h, mask: causal_t5gemma2_attention(attention, h, mask)
    twin = causal_twin(attention)
    return lambda h, mask: twin(h, key_padding_mask=mask)[0]


def causal_encoder_hidden_states(backbone, token_ids, padding_mask=None):
    """Runs `backbone`'s encoder causally; returns its final hidden states.

    Args:
        backbone: `keras_encdec.models.T5GemmaBackbone` or
            `T5Gemma2Backbone` (text).
        token_ids: int array `[batch, length]`.
        padding_mask: array `[batch, length]` or None. Defaults to `None`
            (no padding).

    Returns:
        A tensor `[batch, length, encoder_hidden_dim]`.

    Examples:

    >>> import numpy as np, keras_hub
    >>> from keras_encdec.adapt import adapt_decoder_only
    >>> gemma2 = keras_hub.models.GemmaBackbone(
    ...     vocabulary_size=32, num_layers=2, num_query_heads=2,
    ...     num_key_value_heads=1, hidden_dim=16, intermediate_dim=64,
    ...     head_dim=8, use_post_ffw_norm=True, use_post_attention_norm=True,
    ...     attention_logit_soft_cap=50.0, final_logit_soft_cap=30.0,
    ...     use_sliding_window_attention=True, sliding_window_size=2)
    >>> lm = adapt_decoder_only(gemma2, cross_attention_init="zeros")
    >>> ids, mask = np.array([[3, 4, 5, 6, 7]]), np.ones((1, 5), "int32")
    >>> ours = causal_encoder_hidden_states(lm.backbone, ids, mask)
    >>> theirs = gemma2({"token_ids": ids, "padding_mask": mask})
    >>> max_abs_difference(ours, theirs) < 1e-5
    True
    """
    x = backbone.token_embedding(token_ids)
    if not hasattr(backbone.token_embedding, "eoi_token_index"):
        x = scale_embeddings(x, backbone.token_embedding.output_dim)
    for layer in backbone.encoder_layers:
        attention = _causal_attention(layer.self_attention)
        residual = x
        h = layer.pre_self_attention_norm(x)
        h = attention(h, padding_mask)
        x = residual + layer.post_self_attention_norm(h)
        residual = x
        h = layer.post_ffw_norm(layer.mlp(layer.pre_ffw_norm(x)))
        x = residual + h
    return backbone.encoder_norm(x)


def max_abs_difference(a, b):
    """`max |a - b|` as a Python float (any backend tensors or arrays)."""
    a = ops.convert_to_numpy(ops.cast(a, "float32"))
    b = ops.convert_to_numpy(ops.cast(b, "float32"))
    return float(abs(a - b).max())
