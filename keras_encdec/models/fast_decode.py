"""A functional torch decode step: cached generation without `Layer.__call__`.

On the torch backend, Keras runs every sublayer call eagerly through
`Layer.__call__` (autocast scopes, argument binding, name scopes), which is
most of the time of a one-token decode step. `TorchDecodeStep` reads the
decoder's weights once per `generate` call into plain torch tensors (fusing
the query/key/value and gate/up kernels), then runs each step with torch ops
on static-length caches it owns (written in place at the step's position).
It computes what the layers compute, in the same order and dtypes, so
greedy tokens equal the layer path's; it is used for the one-token steps
after the Keras prefill pass. JAX and TensorFlow compile the layer path and
do not use it.

The step is written per block (`self_attention_block`, `cross_attention_block`,
`feed_forward_block`) over `attend`, a grouped-query attention over key/value
tensors `[batch, kv_heads, S, head_dim]`, so a family with another block
layout overrides one method (a merged self+cross attention concatenates the
two key/value sets and one mask before `attend`).
"""

import logging

import keras

logger = logging.getLogger(__name__)

_MASKED_LOGIT = -1e30


def unsupported_reason(lm):
    """Why `lm` cannot use `TorchDecodeStep`, or None when it can.

    Args:
        lm: a `T5GemmaSeq2SeqLM`.

    Returns:
        A string, or None.

    Examples:

    >>> from keras_encdec.models import T5GemmaSeq2SeqLM
    >>> lm = T5GemmaSeq2SeqLM.from_preset("t5gemma_tiny_random")
    >>> reason = unsupported_reason(lm)
    >>> reason is None or isinstance(reason, str)
    True
    """
    if keras.backend.backend() != "torch":
        return f"backend is {keras.backend.backend()}, not torch"
    if not getattr(lm, "use_fast_decode", True):
        return "lm.use_fast_decode is False"
    backbone = lm.backbone
    from keras_encdec.models.t5gemma.t5gemma_backbone import T5GemmaBackbone

    if type(backbone) is not T5GemmaBackbone:
        # T5Gemma 2's merged attention has no functional step yet; its
        # decode keeps the Keras layer path (same tokens, slower on torch).
        return (
            f"the functional step covers T5GemmaBackbone only; received "
            f"{type(backbone).__name__}"
        )
    layers = [backbone.decoder_token_embedding, backbone.decoder_norm]
    for block in backbone.decoder_layers:
        layers.extend(block._flatten_layers(include_self=False))
    for layer in layers:
        if getattr(layer, "quantization_mode", None) is not None:
            return (
                f"layer '{layer.name}' is quantized "
                f"({layer.quantization_mode})"
            )
    return None


def decode_step_for(lm):
    """A `TorchDecodeStep` for `lm`, or None where the layer path runs.

    Args:
        lm: a `T5GemmaSeq2SeqLM`.

    Returns:
        `TorchDecodeStep` or None.

    Examples:

    >>> from keras_encdec.models import T5GemmaSeq2SeqLM
    >>> lm = T5GemmaSeq2SeqLM.from_preset("t5gemma_tiny_random")
    >>> step = decode_step_for(lm)  # None unless KERAS_BACKEND=torch
    """
    reason = unsupported_reason(lm)
    if reason is not None:
        logger.debug("Decoding with the Keras layers: %s.", reason)
        return None
    return TorchDecodeStep(lm)


def _value(variable_or_tensor, dtype):
    tensor = keras.ops.convert_to_tensor(variable_or_tensor)
    return tensor.detach().to(dtype)


class TorchDecodeStep:
    """One-token decoder steps of a T5Gemma LM as plain torch code.

    Args:
        lm: a `T5GemmaSeq2SeqLM` on the torch backend.

    Examples:

    >>> import numpy as np
    >>> from keras_encdec.models import T5GemmaSeq2SeqLM
    >>> lm = T5GemmaSeq2SeqLM.from_preset("t5gemma_tiny_random")
    >>> lm.compile(sampler="greedy")
    >>> out = lm.generate({  # uses TorchDecodeStep when on torch
    ...     "encoder_token_ids": np.array([[2, 5, 6, 1]]),
    ...     "encoder_padding_mask": np.array([[1, 1, 1, 1]]),
    ...     "decoder_token_ids": np.array([[2, 0, 0, 0]]),
    ...     "decoder_padding_mask": np.array([[1, 0, 0, 0]]),
    ... }, stop_token_ids=None)
    """

    def __init__(self, lm):
        import torch

        backbone = lm.backbone
        self.dtype = getattr(torch, keras.backend.standardize_dtype(
            lm.compute_dtype
        ))
        self.backbone = backbone
        embedding = backbone.decoder_token_embedding
        self.embeddings = _value(embedding.embeddings, self.dtype)
        self.normalizer = torch.tensor(
            embedding.output_dim**0.5, dtype=self.embeddings.dtype
        )
        if embedding.tie_weights:
            self.output_kernel = self.embeddings  # [V, d]: F.linear form.
        else:
            self.output_kernel = _value(embedding.reverse_embeddings, self.dtype).T
        self.final_soft_cap = backbone.final_logit_soft_cap
        self.final_norm = self.norm_weights(backbone.decoder_norm)
        self.blocks = [self.block_weights(b) for b in backbone.decoder_layers]

    # === Weights ===

    def norm_weights(self, norm):
        """`(1 + scale, epsilon)` of a `T5GemmaRMSNormalization`."""
        import torch

        scale = _value(norm.scale, torch.float32)
        return 1.0 + scale, norm.epsilon

    def kernel(self, dense, flat_shape):
        """An `EinsumDense` kernel (LoRA merged), reshaped to 2-D."""
        return _value(dense.kernel, self.dtype).reshape(flat_shape)

    def attention_weights(self, attention, fuse_key_value):
        """Query (fused with key/value for self-attention) and output."""
        import torch

        d = attention.query_dense.kernel.shape[0]
        query = self.kernel(attention.query_dense, (d, -1))
        if fuse_key_value:
            query = torch.cat(
                [
                    query,
                    self.kernel(attention.key_dense, (d, -1)),
                    self.kernel(attention.value_dense, (d, -1)),
                ],
                dim=1,
            )
        return dict(
            projection=query,
            output=self.kernel(attention.output_dense, (-1, attention.hidden_dim)),
            num_heads=attention.num_heads,
            num_kv_heads=attention.num_kv_heads,
            head_dim=attention.head_dim,
            scale=attention.query_pre_attn_scalar**-0.5,
            soft_cap=attention.logit_soft_cap,
            window=attention.sliding_window,
            rope_max_wavelength=attention.rope_max_wavelength,
        )

    def block_weights(self, block):
        """Everything one decoder block's step reads."""
        import torch

        mlp = block.mlp
        d = mlp.gating.kernel.shape[0]
        return dict(
            pre_self=self.norm_weights(block.pre_self_attention_norm),
            self_attention=self.attention_weights(block.self_attention, True),
            post_self=self.norm_weights(block.post_self_attention_norm),
            pre_cross=self.norm_weights(block.pre_cross_attention_norm),
            cross_attention=self.attention_weights(block.cross_attention, False),
            post_cross=self.norm_weights(block.post_cross_attention_norm),
            pre_ffw=self.norm_weights(block.pre_ffw_norm),
            gate_up=torch.cat(
                [self.kernel(mlp.gating, (d, -1)), self.kernel(mlp.gating_2, (d, -1))],
                dim=1,
            ),
            down=self.kernel(mlp.linear, (-1, d)),
            activation=mlp.hidden_activation,
            post_ffw=self.norm_weights(block.post_ffw_norm),
        )

    # === Caches ===

    def prepare(self, cache):
        """Converts `build_cache`'s structure (after the prefill pass) to
        this step's: per block `(self_key, self_value, cross_key,
        cross_value)` as `[batch, kv_heads, S, head_dim]` copies, rotary
        tables for every cache position, and the encoder key mask
        `[batch, 1, 1, S]`."""
        import torch

        layer_caches, encoder_padding_mask = cache
        blocks = []
        for (self_cache, cross_cache) in layer_caches:
            blocks.append(
                tuple(
                    t.transpose(1, 2).contiguous()
                    for t in (*self_cache, *cross_cache)
                )
            )
        length = layer_caches[0][0][0].shape[1]
        self.rotary = {}
        for weights in self.blocks:
            attention = weights["self_attention"]
            key = (attention["rope_max_wavelength"], attention["head_dim"])
            if key not in self.rotary:
                self.rotary[key] = self.rotary_tables(length, *key)
        mask = torch.as_tensor(encoder_padding_mask).bool()[:, None, None, :]
        return tuple(blocks), mask

    def rotary_tables(self, length, max_wavelength, head_dim):
        """`(cos, sin)` `[length, head_dim]`, computed as
        `keras_encdec.ops.apply_rotary_embedding` does."""
        import torch

        exponents = torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim
        inverse = 1.0 / torch.pow(
            torch.tensor(max_wavelength, dtype=torch.float32), exponents
        )
        positions = torch.arange(length, dtype=torch.int32).to(torch.float32)
        angles = positions[:, None] * inverse
        angles = torch.cat([angles, angles], dim=-1)
        return torch.cos(angles).to(self.dtype), torch.sin(angles).to(self.dtype)

    # === The step ===

    def __call__(self, token_ids, cache, index):
        """Runs one step.

        Args:
            token_ids: int tensor `[batch, 1]` at absolute position `index`.
            cache: the structure `prepare` returned (updated in place).
            index: int or int scalar tensor.

        Returns:
            `(logits, cache)`: soft-capped logits `[batch, 1, vocab]`.
        """
        import torch

        index = int(index)
        blocks, encoder_mask = cache
        x = self.embeddings[token_ids[:, 0].long()] * self.normalizer
        for weights, block_cache in zip(self.blocks, blocks):
            x = self.self_attention_block(x, weights, block_cache, index)
            x = self.cross_attention_block(x, weights, block_cache, encoder_mask)
            x = self.feed_forward_block(x, weights)
        x = self.rms_norm(x, self.final_norm)
        logits = torch.nn.functional.linear(x, self.output_kernel)
        if self.final_soft_cap is not None:
            logits = torch.tanh(logits / self.final_soft_cap) * self.final_soft_cap
        return logits[:, None, :], cache

    def rms_norm(self, x, weights):
        import torch

        scale, epsilon = weights
        y = torch.nn.functional.rms_norm(
            x.float(), (x.shape[-1],), scale, epsilon
        )
        return y.to(self.dtype)

    def attend(self, query, key, value, attention, mask=None):
        """Grouped-query attention of one query position.

        Args:
            query: `[batch, num_heads * head_dim]`.
            key, value: `[batch, kv_heads, S, head_dim]`.
            attention: the layer's weights dict (scale, soft-cap, heads).
            mask: bool `[batch, 1, 1, S]` (true on visible keys) or None.

        Returns:
            `[batch, num_heads * head_dim]`.
        """
        import torch

        batch = query.shape[0]
        num_kv_heads, head_dim = attention["num_kv_heads"], attention["head_dim"]
        query = query.reshape(batch, num_kv_heads, -1, head_dim)
        logits = torch.matmul(query, key.transpose(-1, -2)).float()
        logits = logits * attention["scale"]
        cap = attention["soft_cap"]
        if cap is not None:
            logits = torch.tanh(logits / cap) * cap
        if mask is not None:
            logits = logits.masked_fill(~mask, _MASKED_LOGIT)
        probabilities = torch.softmax(logits, dim=-1).to(value.dtype)
        return torch.matmul(probabilities, value).reshape(batch, -1)

    def rotate(self, x, attention, index):
        """RoPE at position `index` on `[batch, heads, head_dim]`."""
        import torch

        cos, sin = self.rotary[
            (attention["rope_max_wavelength"], attention["head_dim"])
        ]
        first, second = x.chunk(2, dim=-1)
        rotated = torch.cat([-second, first], dim=-1)
        return x * cos[index] + rotated * sin[index]

    def self_attention_block(self, x, weights, block_cache, index):
        attention = weights["self_attention"]
        key_cache, value_cache = block_cache[0], block_cache[1]
        num_heads, num_kv_heads = attention["num_heads"], attention["num_kv_heads"]
        h = self.rms_norm(x, weights["pre_self"])
        qkv = (h @ attention["projection"]).reshape(
            x.shape[0], num_heads + 2 * num_kv_heads, attention["head_dim"]
        )
        query_key = self.rotate(qkv[:, : num_heads + num_kv_heads], attention, index)
        key_cache[:, :, index] = query_key[:, num_heads:]
        value_cache[:, :, index] = qkv[:, num_heads + num_kv_heads :]
        start = 0
        if attention["window"] is not None:
            start = max(0, index - attention["window"] + 1)
        h = self.attend(
            query_key[:, :num_heads].reshape(x.shape[0], -1),
            key_cache[:, :, start : index + 1],
            value_cache[:, :, start : index + 1],
            attention,
        )
        h = self.rms_norm(h @ attention["output"], weights["post_self"])
        return x + h

    def cross_attention_block(self, x, weights, block_cache, encoder_mask):
        attention = weights["cross_attention"]
        h = self.rms_norm(x, weights["pre_cross"])
        h = self.attend(
            h @ attention["projection"],
            block_cache[2],
            block_cache[3],
            attention,
            encoder_mask,
        )
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
        h = (gate * up) @ weights["down"]
        return x + self.rms_norm(h, weights["post_ffw"])
