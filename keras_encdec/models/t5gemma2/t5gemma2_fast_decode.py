"""T5Gemma 2's functional torch decoder (see `keras_encdec.models.fast_decode`).

`T5Gemma2DecodeStep` is `TorchDecodeStep` with T5Gemma 2's differences:

- QK norms: queries and keys go through `x * (1 + w)` RMS norms over
  `head_dim` (float32) before RoPE. The logit scale cannot be folded into
  the query kernel (the norm would undo it): it is folded into the query
  norm's `1 + w` instead.
- RoPE with a per-layer base and linear `rope_scaling_factor` (the shared
  tables divide positions by it).
- The embedding's end-of-image row: positions holding `eoi_token_index`
  take the learned, unscaled `eoi_embedding`.
- The encoder's bidirectional sliding window `t5gemma2_encoder_window(W)`.
- The decoder block's merged attention: one `[q, k, v]` projection; cross
  keys/values `key_norm(key(enc))`, `value(enc)` (no RoPE), computed once
  in `start`; ONE softmax over `[self keys ; cross keys]`, the self part
  causal with the window `k > q - W`, the cross part masked by encoder
  padding. There is no cross-attention sublayer.

With images (`pixel_values` holding at least one image) the encoder runs
through the Keras layers (`lm.encode_prompt`): vision tokens are merged
there; the decoder steps, which dominate generation, run here either way.
"""

from keras_encdec.models.fast_decode_step import TorchDecodeStep
from keras_encdec.models.fast_decode_weights import _value
from keras_encdec.models.t5gemma2.t5gemma2_config import PIXEL_VALUES
from keras_encdec.ops import t5gemma2_encoder_window
from keras_encdec.ops.softmax_parts import MASKED_LOGIT


class T5Gemma2DecodeStep(TorchDecodeStep):
    """Cached decoder passes of a T5Gemma 2 LM as plain torch code.

    Built by `keras_encdec.models.fast_decode.decode_step_for` (the task's
    `torch_decode_step_class`); it computes what the layers compute up to
    float rounding, so generated tokens equal the layer path's.

    Args:
        lm: a `T5Gemma2Seq2SeqLM` on the torch backend.

    Examples:

    >>> import numpy as np
    >>> from keras_encdec.models import T5Gemma2Seq2SeqLM
    >>> lm = T5Gemma2Seq2SeqLM.from_preset("t5gemma2_tiny_random")
    >>> lm.preprocessor = None  # Token ids in, token ids out.
    >>> lm.compile(sampler="greedy")
    >>> out = lm.generate({  # uses T5Gemma2DecodeStep when on torch
    ...     "encoder_token_ids": np.array([[2, 5, 6, 1]]),
    ...     "encoder_padding_mask": np.array([[1, 1, 1, 1]]),
    ...     "decoder_token_ids": np.array([[2, 0, 0, 0]]),
    ...     "decoder_padding_mask": np.array([[1, 0, 0, 0]]),
    ... }, stop_token_ids=None)
    """

    def __init__(self, lm):
        super().__init__(lm)
        embedding = lm.backbone.token_embedding
        self.eoi_token_index = embedding.eoi_token_index
        self.eoi_embedding = _value(embedding.eoi_embedding, self.dtype)

    @classmethod
    def backbone_class(cls):
        from keras_encdec.models.t5gemma2.t5gemma2_backbone import (
            T5Gemma2Backbone,
        )

        return T5Gemma2Backbone

    # === Weights ===

    def query_scale(self, attention):
        # The query norm would undo a scaled kernel: see `attention_weights`.
        return 1.0

    def attention_weights(self, attention, self_attention):
        """`TorchWeights.attention_weights` plus the QK norms.

        `qk_norm` holds `(table, epsilon)`: a float32 `[heads + kv_heads,
        head_dim]` table of `1 + w` per query head (times the logit scale)
        then per key head. Encoder blocks keep their window as
        `t5gemma2_encoder_window(W)`.
        """
        import torch

        weights = super().attention_weights(attention, self_attention)
        query_norm = self.norm_weights(attention.query_norm)[0]
        key_norm = self.norm_weights(attention.key_norm)[0]
        scale = attention.query_pre_attn_scalar**-0.5
        table = torch.cat([
            (query_norm * scale).expand(attention.num_heads, -1),
            key_norm.expand(attention.num_kv_heads, -1),
        ])
        # Both norms are built with the layer's `rms_norm_eps`.
        weights["qk_norm"] = (table, attention.rms_norm_eps)
        if not attention.merged and attention.sliding_window is not None:
            weights["window"] = t5gemma2_encoder_window(attention.sliding_window)
        return weights

    # === Inputs ===

    def encode_inputs(self, lm, inputs):
        """The encoder output; through the Keras layers with images."""
        pixels = inputs.get(PIXEL_VALUES)
        if pixels is not None and pixels.shape[1] != 0:
            return lm.encode_prompt(inputs)[0]
        return super().encode_inputs(lm, inputs)

    def embed(self, token_ids, table, normalizer):
        import torch

        x = super().embed(token_ids, table, normalizer)
        if self.eoi_token_index is None:
            return x
        is_eoi = (token_ids == self.eoi_token_index)[..., None]
        return torch.where(is_eoi, self.eoi_embedding, x)

    # === Blocks ===

    def head_norm(self, x, table, epsilon):
        """RMS norm over `head_dim` with one weight row per head (float32)."""
        import torch

        y = torch.nn.functional.rms_norm(x.float(), (x.shape[-1],), None, epsilon)
        return (y * table).to(self.dtype)

    def rotated_qkv(self, h, attention, index):
        """As `TorchDecodeStep.rotated_qkv`, with the QK norms before RoPE."""
        import torch

        batch, length = h.shape[:2]
        head_dim, end = attention["head_dim"], index + length
        qkv = (h @ attention["projection"]).reshape(batch, length, -1, head_dim)
        rotated = attention["num_heads"] + attention["num_kv_heads"]
        table, epsilon = attention["qk_norm"]
        qkv = torch.cat(
            [self.head_norm(qkv[:, :, :rotated], table, epsilon),
             qkv[:, :, rotated:]],
            dim=2,
        )
        cos, sin = attention["rotary"]
        swapped = qkv.roll(head_dim // 2, dims=-1)
        return torch.addcmul(qkv * cos[index:end], swapped, sin[index:end])

    def cross_key_value(self, encoder_output, weights):
        """`(key_norm(key(enc)), value(enc))`, each `[batch, kv_heads, S,
        head_dim]` and contiguous (a slice of one tensor would be copied by
        every step's matmul), without RoPE, from the merged projection."""
        attention = weights["self_attention"]
        batch, length = encoder_output.shape[:2]
        num_heads, num_kv_heads, head_dim = (
            attention["num_heads"], attention["num_kv_heads"],
            attention["head_dim"],
        )
        kernel = attention["projection"][:, num_heads * head_dim:]
        key_value = (encoder_output @ kernel).reshape(batch, length, -1, head_dim)
        table, epsilon = attention["qk_norm"]
        key = self.head_norm(
            key_value[:, :, :num_kv_heads], table[num_heads:], epsilon
        )
        value = key_value[:, :, num_kv_heads:]
        return (key.transpose(1, 2).contiguous(),
                value.transpose(1, 2).contiguous())

    def self_cache(self, batch, attention, max_length):
        """`(keys, values)` zeros, each `[batch, kv_heads, max_length,
        head_dim]`: a step's slice of either is one strided matrix per
        head, which matmul reads without a copy."""
        import torch

        shape = (batch, attention["num_kv_heads"], max_length,
                 attention["head_dim"])
        return (torch.zeros(shape, dtype=self.dtype),
                torch.zeros(shape, dtype=self.dtype))

    def cached_self_keys(self, qkv, attention, self_cache, index):
        """Writes `qkv`'s keys and values at `index`; returns the visible
        `(keys, values)` and the mask (`TorchDecodeStep.causal_window`)."""
        key, value = self_cache
        num_heads, length = attention["num_heads"], qkv.shape[1]
        middle, end = num_heads + attention["num_kv_heads"], index + length
        key[:, :, index:end] = qkv[:, :, num_heads:middle].transpose(1, 2)
        value[:, :, index:end] = qkv[:, :, middle:].transpose(1, 2)
        start, mask = self.causal_window(attention, index, length)
        return (key[:, :, start:end], value[:, :, start:end]), mask

    def decoder_block(self, x, weights, self_cache, cross_cache, encoder_mask,
                      index):
        """Merged attention over `[self ; encoder]` keys, then the MLP."""
        attention = weights["self_attention"]
        num_heads = attention["num_heads"]
        h = self.rms_norm(x, weights["pre_self"])
        qkv = self.rotated_qkv(h, attention, index)
        self_part, mask = self.cached_self_keys(qkv, attention, self_cache, index)
        h = self.merged_attend(
            qkv[:, :, :num_heads], attention,
            ((self_part, mask), (cross_cache, encoder_mask)),
        )
        h = self.rms_norm(h @ attention["output"], weights["post_self"])
        return self.feed_forward_block(x + h, weights)

    def merged_attend(self, query, attention, parts):
        """One softmax over several key sets (as `attend` for one).

        Args:
            query: `[batch, T, num_heads, head_dim]`, scaled.
            attention: the layer's weights dict.
            parts: `((key, value), mask)` pairs: keys and values `[batch,
                kv_heads, S_i, head_dim]`, and a bool mask broadcastable to
                `[batch, kv_heads, groups * T, S_i]` or None.

        Returns:
            `[batch, T, num_heads * head_dim]`.
        """
        import torch

        batch, length = query.shape[:2]
        num_kv_heads, head_dim = attention["num_kv_heads"], attention["head_dim"]
        query = query.transpose(1, 2).reshape(batch, num_kv_heads, -1, head_dim)
        logits, sizes = [], []
        for (key, _), mask in parts:
            part = torch.matmul(query, key.transpose(-1, -2)).float()
            if mask is not None:
                part = part.masked_fill(~mask, MASKED_LOGIT)
            logits.append(part)
            sizes.append(part.shape[-1])
        probabilities = torch.softmax(torch.cat(logits, dim=-1), dim=-1)
        probabilities = probabilities.to(query.dtype).split(sizes, dim=-1)
        out = sum(
            torch.matmul(p, value)
            for p, ((_, value), _) in zip(probabilities, parts)
        )
        out = out.reshape(batch, -1, length, head_dim).transpose(1, 2)
        return out.reshape(batch, length, -1)
