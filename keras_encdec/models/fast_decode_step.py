"""`TorchDecodeStep`: the functional torch encoder-decoder passes.

The encoder, the caches (`start`), the prefill and every decode step of a
T5Gemma LM as plain torch ops over `fast_decode_weights.TorchWeights`
(see `keras_encdec.models.fast_decode` for when it runs and why).
"""

import keras

from keras_encdec.models.fast_decode_weights import TorchWeights
from keras_encdec.ops.attention import attention_mask
from keras_encdec.ops.softmax_parts import MASKED_LOGIT

class TorchDecodeStep(TorchWeights):
    """Cached decoder passes of a T5Gemma LM as plain torch code.

    Args:
        lm: a `T5GemmaSeq2SeqLM` on the torch backend.

    Examples:

    >>> import numpy as np
    >>> from keras_encdec.models import T5GemmaSeq2SeqLM
    >>> lm = T5GemmaSeq2SeqLM.from_preset(
    ...     "t5gemma_tiny_random", preprocessor=None
    ... )
    >>> lm.compile(sampler="greedy")
    >>> out = lm.generate({  # uses TorchDecodeStep when on torch
    ...     "encoder_token_ids": np.array([[2, 5, 6, 1]]),
    ...     "encoder_padding_mask": np.array([[1, 1, 1, 1]]),
    ...     "decoder_token_ids": np.array([[2, 0, 0, 0]]),
    ...     "decoder_padding_mask": np.array([[1, 0, 0, 0]]),
    ... }, stop_token_ids=None)
    """

    @classmethod
    def backbone_class(cls):
        """The backbone class this step reads (exactly; not subclasses)."""
        from keras_encdec.models.t5gemma.t5gemma_backbone import T5GemmaBackbone

        return T5GemmaBackbone

    # === The encoder ===

    def encode_inputs(self, lm, inputs):
        """The encoder output for a `generate_step` input dict."""
        return self.encode(
            inputs["encoder_token_ids"], inputs["encoder_padding_mask"]
        )

    def embed(self, token_ids, table, normalizer):
        """Scaled embeddings of int `token_ids` from `table`."""
        return table[token_ids] * normalizer

    def encode(self, token_ids, padding_mask):
        """The encoder output `[batch, S, width]` (as `backbone.encode`).

        Args:
            token_ids: int tensor `[batch, S]`.
            padding_mask: tensor `[batch, S]`, true on real tokens.
        """
        import torch

        token_ids = torch.as_tensor(token_ids).long()
        padding_mask = torch.as_tensor(padding_mask).bool()
        x = self.embed(token_ids, self.encoder_embeddings,
                       self.encoder_normalizer)
        length = x.shape[1]
        masks = {}
        for weights in self.encoder_blocks:
            attention = weights["self_attention"]
            self.rotary_tables(attention, length)
            key = (attention["window"], attention["num_heads"],
                   attention["num_kv_heads"])
            if key not in masks:
                mask = attention_mask(
                    length, length, sliding_window=attention["window"],
                    key_padding_mask=padding_mask,
                )
                groups = key[1] // key[2]
                masks[key] = mask.repeat(1, groups, 1)[:, None]
            x = self.self_attention_block(x, weights, None, 0, masks[key])
            x = self.feed_forward_block(x, weights)
        return self.rms_norm(x, self.encoder_norm)

    # === Caches ===

    def start(self, encoder_output, encoder_padding_mask, max_length):
        """Builds the caches of one `generate` call.

        Args:
            encoder_output: tensor `[batch, S, encoder_dim]`.
            encoder_padding_mask: tensor `[batch, S]`, true on real tokens.
            max_length: int, the decoder positions to cache.

        Returns:
            The cache `__call__` takes: `(self_caches, cross_caches,
            encoder_mask)`, per block what `self_cache` and
            `cross_key_value` return, and the key mask `[batch, 1, 1, S]`.
            Batch-major, so beam search can repeat and gather it.
        """
        import torch

        encoder_output = torch.as_tensor(encoder_output).to(self.dtype)
        batch = encoder_output.shape[0]
        self_caches, cross_caches = [], []
        for weights in self.blocks:
            attention = weights["self_attention"]
            self_caches.append(self.self_cache(batch, attention, max_length))
            cross_caches.append(self.cross_key_value(encoder_output, weights))
            self.rotary_tables(attention=weights["self_attention"],
                               length=max_length)
        mask = torch.as_tensor(encoder_padding_mask).bool()
        # A mask that hides nothing changes no probability: skip it.
        self.mask_cross = not bool(mask.all())
        return tuple(self_caches), tuple(cross_caches), mask[:, None, None, :]

    def self_cache(self, batch, attention, max_length):
        """One block's empty self-attention cache: zeros `[batch, 2 *
        kv_heads, max_length, head_dim]` (keys then values)."""
        import torch

        shape = (batch, 2 * attention["num_kv_heads"], max_length,
                 attention["head_dim"])
        return torch.zeros(shape, dtype=self.dtype)

    def cross_key_value(self, encoder_output, weights):
        """One block's cross keys then values `[batch, 2 * kv_heads, S,
        head_dim]` of `encoder_output`."""
        attention = weights["cross_attention"]
        batch, length = encoder_output.shape[:2]
        key_value = (encoder_output @ attention["key_value"]).reshape(
            batch, length, -1, attention["head_dim"]
        )
        return key_value.transpose(1, 2).contiguous()

    # === The step ===

    def __call__(self, token_ids, cache, index):
        """Runs the decoder on `T` tokens from position `index`.

        Args:
            token_ids: int tensor `[batch, T]` at positions `index ...`;
                every earlier position is in the cache, and every token is
                real (the prefill covers the shortest prompt).
            cache: the structure `start` returned (updated in place).
            index: int or int scalar tensor.

        Returns:
            `(logits, hidden_states, cache)`: soft-capped logits `[batch,
            T, vocab]` and the final normalized states `[batch, T, d]`.
        """
        import torch

        index = int(index)
        self_caches, cross_caches, encoder_mask = cache
        if not self.mask_cross:
            encoder_mask = None
        token_ids = torch.as_tensor(token_ids).long()
        x = self.embed(token_ids, self.embeddings, self.normalizer)
        for weights, self_cache, cross_cache in zip(
            self.blocks, self_caches, cross_caches
        ):
            x = self.decoder_block(
                x, weights, self_cache, cross_cache, encoder_mask, index
            )
        x = self.rms_norm(x, self.final_norm)
        logits = torch.nn.functional.linear(x, self.output_kernel)
        if self.final_soft_cap is not None:
            logits = torch.tanh(logits / self.final_soft_cap) * self.final_soft_cap
        return logits, x, cache

    def decoder_block(self, x, weights, self_cache, cross_cache, encoder_mask,
                      index):
        """One decoder block: self-attention, cross-attention, MLP."""
        x = self.self_attention_block(x, weights, self_cache, index)
        x = self.cross_attention_block(x, weights, cross_cache, encoder_mask)
        return self.feed_forward_block(x, weights)

    def rms_norm(self, x, weights):
        import torch

        scale, epsilon = weights
        # torch's CPU `rms_norm` runs these same float32 ops plus a dozen
        # casts and copies; a one-token step has 25 norms.
        y = x if x.dtype == torch.float32 else x.float()
        y = (y * torch.rsqrt(y.pow(2).mean(-1, keepdim=True) + epsilon)).mul_(
            scale
        )
        return y if y.dtype == self.dtype else y.to(self.dtype)

    def attend(self, query, key_value, attention, mask=None):
        """Grouped-query attention.

        Args:
            query: `[batch, T, num_heads, head_dim]`, scaled (see
                `attention_weights`).
            key_value: `[batch, 2 * kv_heads, S, head_dim]`, keys then
                values.
            attention: the layer's weights dict.
            mask: bool, broadcastable to `[batch, kv_heads, groups * T, S]`
                (true on visible keys), or None.

        Returns:
            `[batch, T, num_heads * head_dim]`.
        """
        import torch

        batch, length = query.shape[:2]
        num_kv_heads, head_dim = attention["num_kv_heads"], attention["head_dim"]
        key, value = key_value[:, :num_kv_heads], key_value[:, num_kv_heads:]
        query = query.transpose(1, 2).reshape(batch, num_kv_heads, -1, head_dim)
        logits = torch.matmul(query, key.transpose(-1, -2))
        if logits.dtype != torch.float32:
            logits = logits.float()
        cap = attention["soft_cap"]
        if cap is not None:
            logits = torch.tanh(logits).mul_(cap)
        if mask is not None:
            logits = logits.masked_fill(~mask, MASKED_LOGIT)
        probabilities = torch.softmax(logits, dim=-1)
        if probabilities.dtype != value.dtype:
            probabilities = probabilities.to(value.dtype)
        out = torch.matmul(probabilities, value)
        out = out.reshape(batch, -1, length, head_dim).transpose(1, 2)
        return out.reshape(batch, length, -1)

    def self_attention_block(self, x, weights, self_cache, index, mask=None):
        """Self-attention sublayer with its residual.

        With `self_cache` (decoder), keys/values are written at `index` and
        attention is causal (windowed); without (encoder), `mask` (see
        `attend`) sets visibility over the block's own keys.
        """
        attention = weights["self_attention"]
        num_heads = attention["num_heads"]
        h = self.rms_norm(x, weights["pre_self"])
        qkv = self.rotated_qkv(h, attention, index)
        if self_cache is None:
            key_value = qkv[:, :, num_heads:].transpose(1, 2)
        else:
            key_value, mask = self.cached_self_keys(
                qkv, attention, self_cache, index
            )
        h = self.attend(qkv[:, :, :num_heads], key_value, attention, mask)
        h = self.rms_norm(h @ attention["output"], weights["post_self"])
        return x + h

    def rotated_qkv(self, h, attention, index):
        """`[q, k, v]` heads `[batch, T, heads, head_dim]` of normed states
        `h` at positions `index ...`, RoPE applied to queries and keys."""
        import torch

        batch, length = h.shape[:2]
        head_dim, end = attention["head_dim"], index + length
        qkv = (h @ attention["projection"]).reshape(batch, length, -1, head_dim)
        cos, sin = attention["rotary"]
        swapped = qkv.roll(head_dim // 2, dims=-1)
        return torch.addcmul(qkv * cos[index:end], swapped, sin[index:end])

    def cached_self_keys(self, qkv, attention, self_cache, index):
        """Writes the keys/values of `qkv` into `self_cache` at `index`;
        returns the visible cache slice and its causal (windowed) mask (see
        `attend`; None where the slice hides nothing)."""
        num_heads, length = attention["num_heads"], qkv.shape[1]
        end = index + length
        self_cache[:, :, index:end] = qkv[:, :, num_heads:].transpose(1, 2)
        start, mask = self.causal_window(attention, index, length)
        return self_cache[:, :, start:end], mask

    def causal_window(self, attention, index, length):
        """`(start, mask)` of `length` queries from `index` over cached
        keys `start ... index + length`: one query sees the slice (its
        window), several get a causal windowed mask (see `attend`)."""
        window = attention["window"]
        start, mask = 0, None
        if length == 1 and window is not None:
            start = max(0, index - window + 1)
        elif length > 1:
            mask = attention_mask(
                length, index + length, query_offset=index, causal=True,
                sliding_window=window,
            )[0]
            groups = attention["num_heads"] // attention["num_kv_heads"]
            mask = mask.repeat(groups, 1)
        return start, mask

    def cross_attention_block(self, x, weights, cross_cache, encoder_mask):
        attention = weights["cross_attention"]
        batch, length = x.shape[:2]
        h = self.rms_norm(x, weights["pre_cross"])
        query = (h @ attention["query"]).reshape(
            batch, length, -1, attention["head_dim"]
        )
        h = self.attend(query, cross_cache, attention, encoder_mask)
        h = self.rms_norm(h @ attention["output"], weights["post_cross"])
        return x + h

    def feed_forward_block(self, x, weights):
        import torch

        h = self.rms_norm(x, weights["pre_ffw"])
        gate, up = (h @ weights["gate_up"]).chunk(2, dim=-1)
        if weights["activation"] == "gelu_approximate":
            gate = torch.nn.functional.gelu(gate, approximate="tanh")
        else:
            gate = keras.activations.get(weights["activation"])(gate)
        h = gate.mul_(up) @ weights["down"]
        return x + self.rms_norm(h, weights["post_ffw"])
