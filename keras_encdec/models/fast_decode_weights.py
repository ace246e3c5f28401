"""Weights of the functional torch encoder-decoder, read once per call.

`TorchWeights` reads a T5Gemma LM's weights into plain torch tensors in the
forms `keras_encdec.models.fast_decode_step.TorchDecodeStep` runs on: one
`[q, k, v]` projection with the logit scale folded into the query, fused
gate/up and cross key/value kernels, `(1 + scale, epsilon)` norms, and
RoPE tables over the fused projection's heads.
"""

import keras


def _value(variable_or_tensor, dtype):
    tensor = keras.ops.convert_to_tensor(variable_or_tensor)
    return tensor.detach().to(dtype)



class TorchWeights:
    """A T5Gemma LM's encoder and decoder weights as torch tensors.

    Args:
        lm: a `T5GemmaSeq2SeqLM` on the torch backend.

    Examples:

    >>> from keras_encdec.models import T5GemmaSeq2SeqLM
    >>> lm = T5GemmaSeq2SeqLM.from_preset("t5gemma_tiny_random")
    >>> if keras.backend.backend() == "torch":
    ...     weights = TorchWeights(lm)
    ...     assert len(weights.blocks) == len(lm.backbone.decoder_layers)
    """

    def __init__(self, lm):
        import torch

        backbone = lm.backbone
        self.dtype = getattr(torch, keras.backend.standardize_dtype(
            lm.compute_dtype
        ))
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
        self.encoder_embeddings = _value(
            backbone.token_embedding.embeddings, self.dtype
        )
        self.encoder_normalizer = torch.tensor(
            backbone.token_embedding.output_dim**0.5, dtype=self.dtype
        )
        self.encoder_norm = self.norm_weights(backbone.encoder_norm)
        self.encoder_blocks = [
            self.block_weights(b) for b in backbone.encoder_layers
        ]
        self.rotary = {}

    def norm_weights(self, norm):
        """`(1 + scale, epsilon)` of a `T5GemmaRMSNormalization`."""
        import torch

        scale = _value(norm.scale, torch.float32)
        return 1.0 + scale, norm.epsilon

    def kernel(self, dense):
        """An `EinsumDense` kernel (LoRA merged) as `[d, heads, head_dim]`
        (input projections) or `[heads * head_dim, d]` (output)."""
        kernel = _value(dense.kernel, self.dtype)
        if kernel.ndim == 3 and dense.equation.startswith("btnh"):
            return kernel.reshape(-1, kernel.shape[-1])
        return kernel

    def attention_weights(self, attention, self_attention):
        """The projections of one attention layer, folded for the step.

        The query kernel carries the logit scale (and `1 / soft_cap`), so
        logits are `tanh(q . k) * soft_cap` (or `q . k`). Self-attention
        projects `[q, k, v]` in one matmul (RoPE tables cover all three,
        identity on the values); cross-attention keeps its query kernel,
        and a fused key/value kernel for the encoder output.
        """
        import torch

        cap = attention.logit_soft_cap
        query = self.kernel(attention.query_dense) * self.query_scale(attention)
        key = self.kernel(attention.key_dense)
        value = self.kernel(attention.value_dense)
        weights = dict(
            output=self.kernel(attention.output_dense),
            num_heads=attention.num_heads,
            num_kv_heads=attention.num_kv_heads,
            head_dim=attention.head_dim,
            soft_cap=cap,
            window=attention.sliding_window,
            rope_max_wavelength=attention.rope_max_wavelength,
            rope_scaling_factor=getattr(attention, "rope_scaling_factor", 1.0),
        )
        d = query.shape[0]
        if not self_attention:
            weights["query"] = query.reshape(d, -1)
            weights["key_value"] = torch.cat([key, value], dim=1).reshape(
                key.shape[0], -1
            )
            return weights

        projection = torch.cat([query, key, value], dim=1)
        weights["projection"] = projection.reshape(d, -1)
        return weights

    def query_scale(self, attention):
        """The factor folded into the query kernel: the logit scale, and
        `1 / soft_cap` with a soft-cap."""
        scale = attention.query_pre_attn_scalar**-0.5
        if attention.logit_soft_cap is not None:
            scale = scale / attention.logit_soft_cap
        return scale

    def block_weights(self, block):
        """Everything one encoder or decoder block reads."""
        import torch

        mlp = block.mlp
        weights = dict(
            pre_self=self.norm_weights(block.pre_self_attention_norm),
            self_attention=self.attention_weights(block.self_attention, True),
            post_self=self.norm_weights(block.post_self_attention_norm),
            pre_ffw=self.norm_weights(block.pre_ffw_norm),
            gate_up=torch.cat(
                [self.kernel(mlp.gating), self.kernel(mlp.gating_2)], dim=1
            ),
            down=self.kernel(mlp.linear),
            activation=mlp.hidden_activation,
            post_ffw=self.norm_weights(block.post_ffw_norm),
        )
        if hasattr(block, "cross_attention"):
            weights.update(
                pre_cross=self.norm_weights(block.pre_cross_attention_norm),
                cross_attention=self.attention_weights(
                    block.cross_attention, False
                ),
                post_cross=self.norm_weights(block.post_cross_attention_norm),
            )
        return weights

    def rotary_tables(self, attention, length):
        """`(cos, sin)` `[length, heads, head_dim]` over the fused
        projection's heads (query, key, value; 1 and 0 on values), as
        `keras_encdec.ops.apply_rotary_embedding` computes them; `sin` is
        negated on its first half, so RoPE is `x * cos + roll(x) * sin`
        with `roll` swapping the halves."""
        import torch

        num_heads, num_kv_heads, head_dim = (
            attention["num_heads"], attention["num_kv_heads"],
            attention["head_dim"],
        )
        factor = attention["rope_scaling_factor"]
        key = (attention["rope_max_wavelength"], factor, num_heads,
               num_kv_heads, head_dim)
        if key in self.rotary and self.rotary[key][0].shape[0] >= length:
            attention["rotary"] = self.rotary[key]
            return
        exponents = torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim
        inverse = 1.0 / torch.pow(
            torch.tensor(key[0], dtype=torch.float32), exponents
        )
        positions = torch.arange(length, dtype=torch.int32).to(torch.float32)
        if factor != 1.0:  # Linear RoPE scaling, as T5Gemma 2's `rotate`.
            positions = positions / factor
        angles = positions[:, None] * inverse
        angles = torch.cat([angles, angles], dim=-1)[:, None, :]
        sign = torch.ones(head_dim)
        sign[: head_dim // 2] = -1.0
        rotated = num_heads + num_kv_heads

        def table(values, fill):
            values = values.to(self.dtype).expand(length, rotated, head_dim)
            rest = torch.full((length, num_kv_heads, head_dim), fill,
                              dtype=self.dtype)
            return torch.cat([values, rest], dim=1)

        self.rotary[key] = (table(torch.cos(angles), 1.0),
                            table(torch.sin(angles) * sign, 0.0))
        attention["rotary"] = self.rotary[key]
