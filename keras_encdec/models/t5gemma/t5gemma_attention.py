"""T5Gemma attention: self-attention (RoPE, KV cache) and cross-attention."""

import keras
from keras import ops

from keras_encdec.api import register
from keras_encdec.models.t5gemma.t5gemma_layers import einsum_dense
from keras_encdec.weight_roles import projection_kernel
from keras_encdec.ops import apply_rotary_embedding, dot_product_attention
from keras_encdec.utils.validation import check_positive_int
from keras_encdec.utils.validation import check_positive_number
from keras_encdec.utils.sublayer import call_sublayer

SELF_ATTENTION = "self"
CROSS_ATTENTION = "cross"


@register
class T5GemmaAttention(keras.layers.Layer):
    """Grouped-query attention of a T5Gemma encoder or decoder layer.

    Self-attention applies RoPE and, in the decoder, a causal mask and a KV
    cache. Cross-attention takes its keys and values from the encoder output
    (whose width may differ from this layer's: unbalanced pairs), applies no
    RoPE, and sees every non-padded encoder position.

    Kernels use keras-hub's layouts: `query` is `(hidden, heads, head_dim)`,
    `key`/`value` are `(kv_input, kv_heads, head_dim)` and
    `attention_output` is `(heads, head_dim, hidden)`.

    Args:
        hidden_dim: int. Width of the query input and of the output.
        num_heads: int. Query heads.
        num_kv_heads: int. Key/value heads (divides `num_heads`).
        head_dim: int. Width of one head.
        attention_type: str. `"self"` or `"cross"`.
        causal: bool. Causal masking (decoder self-attention). Defaults to
            `False`.
        sliding_window: int or None. Window of a sliding layer; see
            `keras_encdec.ops.attention`. Defaults to `None`.
        query_pre_attn_scalar: float. Logits are scaled by its `-0.5` power.
            Defaults to `head_dim`.
        logit_soft_cap: float or None. Attention logit soft-cap. Defaults to
            `None`.
        rope_max_wavelength: float. RoPE base (self-attention only).
            Defaults to `10000.0`.
        dropout_rate: float. Dropout on attention probabilities. Defaults
            to `0.0`.
        initializer_range: float. Kernel init std. Defaults to `0.02`.
        attention_impl: str or None. Passed to
            `keras_encdec.ops.dot_product_attention`. Defaults to `None`.
        **kwargs: passed to `keras.layers.Layer`.

    Examples:

    >>> import numpy as np
    >>> layer = T5GemmaAttention(16, 4, 2, 8, "self", causal=True)
    >>> out, cache = layer(np.ones((1, 5, 16), "float32"))
    >>> tuple(out.shape)
    (1, 5, 16)
    """

    def __init__(
        self,
        hidden_dim,
        num_heads,
        num_kv_heads,
        head_dim,
        attention_type,
        causal=False,
        sliding_window=None,
        query_pre_attn_scalar=None,
        logit_soft_cap=None,
        rope_max_wavelength=10000.0,
        dropout_rate=0.0,
        initializer_range=0.02,
        attention_impl=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if attention_type not in (SELF_ATTENTION, CROSS_ATTENTION):
            raise ValueError(
                "attention_type must be 'self' or 'cross'. Received: "
                f"attention_type={attention_type!r}."
            )
        if num_heads % num_kv_heads:
            raise ValueError(
                "num_heads must be a multiple of num_kv_heads. Received: "
                f"num_heads={num_heads}, num_kv_heads={num_kv_heads}."
            )
        if sliding_window is not None:
            check_positive_int("sliding_window", sliding_window)
        check_positive_number(
            "query_pre_attn_scalar", query_pre_attn_scalar, allow_none=True
        )
        check_positive_number("logit_soft_cap", logit_soft_cap, allow_none=True)
        check_positive_number("rope_max_wavelength", rope_max_wavelength)
        if attention_type == CROSS_ATTENTION and (causal or sliding_window):
            raise ValueError(
                "Cross-attention is always full and bidirectional. Received: "
                f"causal={causal}, sliding_window={sliding_window}."
            )
        self.hidden_dim = hidden_dim
        self.num_heads = num_heads
        self.num_kv_heads = num_kv_heads
        self.head_dim = head_dim
        self.attention_type = attention_type
        self.causal = causal
        self.sliding_window = sliding_window
        self.query_pre_attn_scalar = (
            head_dim if query_pre_attn_scalar is None else query_pre_attn_scalar
        )
        self.logit_soft_cap = logit_soft_cap
        self.rope_max_wavelength = rope_max_wavelength
        self.dropout_rate = dropout_rate
        self.initializer_range = initializer_range
        self.attention_impl = attention_impl

        def projection(equation, shape, name):
            return einsum_dense(
                equation, shape, name, initializer_range, self.dtype_policy
            )

        self.query_dense = projection(
            "btd,dnh->btnh", (None, num_heads, head_dim), "query"
        )
        self.key_dense = projection(
            "bsd,dkh->bskh", (None, num_kv_heads, head_dim), "key"
        )
        self.value_dense = projection(
            "bsd,dkh->bskh", (None, num_kv_heads, head_dim), "value"
        )
        self.output_dense = projection(
            "btnh,nhd->btd", (None, hidden_dim), "attention_output"
        )
        self.dropout = keras.layers.Dropout(
            dropout_rate, dtype=self.dtype_policy, name="attention_dropout"
        )

    def build(self, hidden_states_shape, kv_states_shape=None):
        if kv_states_shape is None:
            kv_states_shape = hidden_states_shape
        self.query_dense.build(hidden_states_shape)
        self.key_dense.build(kv_states_shape)
        self.value_dense.build(kv_states_shape)
        self.output_dense.build(
            tuple(hidden_states_shape[:-1]) + (self.num_heads, self.head_dim)
        )

    def weight_roles(self):
        """`{weight: variable}`: the `query`, `key`, `value` and `output`
        kernels (see `keras_encdec.weight_roles`)."""
        return {
            "query": projection_kernel(self.query_dense),
            "key": projection_kernel(self.key_dense),
            "value": projection_kernel(self.value_dense),
            "output": projection_kernel(self.output_dense),
        }

    def compute_key_value(self, kv_states, positions=None, training=None):
        """Projects `kv_states` to keys and values (RoPE on self-attention).

        Returns a tuple `(key, value)`, each `[batch, S, kv_heads, head_dim]`.
        Cross-attention callers compute this once per input and pass it as
        `cache` on every decode step.
        """
        key = call_sublayer(self.key_dense, kv_states, training=training)
        value = call_sublayer(self.value_dense, kv_states, training=training)
        if self.attention_type == SELF_ATTENTION:
            key = apply_rotary_embedding(key, positions, self.rope_max_wavelength)
        return key, value

    def call(
        self,
        hidden_states,
        kv_states=None,
        key_padding_mask=None,
        cache=None,
        cache_update_index=None,
        training=None,
        query_segment_ids=None,
        key_segment_ids=None,
    ):
        """Runs attention.

        Args:
            hidden_states: tensor `[batch, T, hidden_dim]`, the queries.
            kv_states: tensor `[batch, S, kv_input_dim]` (cross-attention
                only): the encoder output.
            key_padding_mask: tensor `[batch, S]` or None: true on real keys.
            cache: `(key, value)` tuple or None. Self-attention: the full
                static cache `[batch, max_len, kv_heads, head_dim]` each,
                updated at `cache_update_index`. Cross-attention: the
                precomputed encoder keys/values, used as is.
            cache_update_index: int or int tensor: the absolute position of
                `hidden_states[:, 0]` (self-attention with a cache).
            training: bool. Enables dropout.
            query_segment_ids: int tensor `[batch, T]` or None: segment ids
                of packed queries; with `key_segment_ids` (`[batch, S]`), a
                key is visible only from queries of its segment.
            key_segment_ids: int tensor `[batch, S]` or None.

        Returns:
            `(output, cache)`: output `[batch, T, hidden_dim]` and the
            `(key, value)` tuple used (the updated cache when decoding).
        """
        query_length = ops.shape(hidden_states)[1]
        offset = 0 if cache_update_index is None else cache_update_index
        query = call_sublayer(
            self.query_dense, hidden_states, training=training
        )
        if self.attention_type == SELF_ATTENTION:
            if kv_states is not None:
                raise ValueError("Self-attention takes no `kv_states`.")
            positions = ops.arange(query_length, dtype="int32") + offset
            query = apply_rotary_embedding(
                query, positions, self.rope_max_wavelength
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
        elif cache is not None:
            key, value = cache
        else:
            if kv_states is None:
                raise ValueError(
                    "Cross-attention needs `kv_states` (the encoder output) "
                    "or a precomputed `cache`."
                )
            key, value = self.compute_key_value(kv_states, training=training)

        dropout = None
        if training and self.dropout_rate > 0:
            def dropout(p):
                return call_sublayer(self.dropout, p, training=training)

        attended = dot_product_attention(
            query,
            key,
            value,
            scale=self.query_pre_attn_scalar**-0.5,
            soft_cap=self.logit_soft_cap,
            causal=self.causal,
            sliding_window=self.sliding_window,
            key_padding_mask=key_padding_mask,
            query_offset=offset,
            query_segment_ids=query_segment_ids,
            key_segment_ids=key_segment_ids,
            probabilities_dropout=dropout,
            impl=self.attention_impl,
        )
        output = call_sublayer(self.output_dense, attended, training=training)
        return output, (key, value)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "hidden_dim": self.hidden_dim,
                "num_heads": self.num_heads,
                "num_kv_heads": self.num_kv_heads,
                "head_dim": self.head_dim,
                "attention_type": self.attention_type,
                "causal": self.causal,
                "sliding_window": self.sliding_window,
                "query_pre_attn_scalar": self.query_pre_attn_scalar,
                "logit_soft_cap": self.logit_soft_cap,
                "rope_max_wavelength": self.rope_max_wavelength,
                "dropout_rate": self.dropout_rate,
                "initializer_range": self.initializer_range,
                "attention_impl": self.attention_impl,
            }
        )
        return config
