"""The generation loop shared by the encoder-decoder LM tasks.

`EncDecGenerationMixin.generate_step` encodes the prompt once, computes
every decoder layer's cross-attention keys/values once, and decodes with a
static self-attention cache through a keras-hub sampler (`"greedy"`,
`"top_k"`, `"top_p"`, `"beam"`, ...). On torch, one-token steps may run
through `keras_encdec.models.fast_decode`. The task provides `backbone`
(`encode`, `decode`, `decoder_layers`), `compute_logits` and `sampler`.
"""

import keras
from keras import ops
from keras_hub.src.utils.tensor_utils import any_equal

from keras_encdec.models import fast_decode
from keras_encdec.models import fast_decode_greedy
from keras_encdec.models import greedy_sampler


class EncDecGenerationMixin:
    """Cached generation for an encoder-decoder task (module docstring)."""

    def call_encoder(self, token_ids, padding_mask):
        """Runs the encoder; returns `(encoder_output, padding_mask)`."""
        return self.backbone.encode(token_ids, padding_mask), padding_mask

    def encode_prompt(self, inputs):
        """Runs the encoder on a `generate_step` input dict; returns
        `(encoder_output, padding_mask)`."""
        return self.call_encoder(
            inputs["encoder_token_ids"], inputs["encoder_padding_mask"]
        )

    def build_cache(self, encoder_output, encoder_padding_mask, max_length):
        """Builds generation caches: empty static self-attention caches of
        `max_length` positions, and cross-attention keys/values computed once
        from `encoder_output`.

        Returns `(layer_caches, encoder_padding_mask)`, the structure
        `call_decoder_with_cache` takes. It is a flat nest of batch-major
        tensors, so beam search can repeat and gather it.
        """
        batch_size = ops.shape(encoder_output)[0]
        backbone = self.backbone
        shape = (
            batch_size,
            max_length,
            backbone.decoder_num_kv_heads,
            backbone.decoder_head_dim,
        )
        layer_caches = []
        for layer in backbone.decoder_layers:
            self_cache = (
                ops.zeros(shape, dtype=self.compute_dtype),
                ops.zeros(shape, dtype=self.compute_dtype),
            )
            cross_cache = layer.compute_cross_key_value(encoder_output)
            layer_caches.append((self_cache, cross_cache))
        return tuple(layer_caches), encoder_padding_mask

    def prefill(self, token_ids, padding_mask, cache, index):
        """Fills `cache` with the decoder prompt's keys/values before the
        sampler's steps, which start at position `index` (the shortest
        prompt) and recompute every later position.

        A compiled prefill has a static length. With one-token prompts (a
        start token, the usual seq2seq case) only position 0 is run; longer
        prompts run every position (`ops.cond` picks at run time).

        Args:
            token_ids: int tensor `[batch, max_length]`, the prompt.
            padding_mask: bool tensor `[batch, max_length]`.
            cache: the structure returned by `build_cache`.
            index: int tensor, the shortest prompt length.

        Returns:
            `(hidden_states, cache)`: hidden states `[batch, max_length,
            width]`, exact at positions before `index`, and the filled cache.
        """
        max_length = ops.shape(token_ids)[1]

        def first_position():
            _, hidden_states, new_cache = self.call_decoder_with_cache(
                token_ids[:, :1], padding_mask[:, :1], cache, 0
            )
            pad = [[0, 0], [0, max_length - 1], [0, 0]]
            return ops.pad(hidden_states, pad), new_cache

        def every_position():
            _, hidden_states, new_cache = self.call_decoder_with_cache(
                token_ids, padding_mask, cache, 0
            )
            return hidden_states, new_cache

        return ops.cond(index <= 1, first_position, every_position)

    def call_decoder_with_cache(
        self, token_ids, padding_mask, cache, cache_update_index
    ):
        """One cached decoder pass.

        Args:
            token_ids: int tensor `[batch, T]`, starting at absolute position
                `cache_update_index`.
            padding_mask: tensor `[batch, T]` or None (decode steps).
            cache: the structure returned by `build_cache`.
            cache_update_index: int or int tensor.

        Returns:
            `(logits, hidden_states, cache)`.
        """
        layer_caches, encoder_padding_mask = cache
        if padding_mask is not None:
            # Keys beyond the prompt are padding during the prefill pass.
            max_length = ops.shape(layer_caches[0][0][0])[1]
            padding_mask = ops.pad(
                ops.cast(padding_mask, "bool"),
                [[0, 0], [0, max_length - ops.shape(padding_mask)[1]]],
                constant_values=False,
            )
        hidden_states, layer_caches = self.backbone.decode(
            token_ids,
            padding_mask,
            None,
            encoder_padding_mask,
            caches=layer_caches,
            cache_update_index=cache_update_index,
        )
        logits = self.compute_logits(hidden_states, cached=True)
        return logits, hidden_states, (tuple(layer_caches), encoder_padding_mask)

    def fast_prefill(self, fast_step, inputs, max_length, index):
        """Encodes and prefills with `fast_step` (a `TorchDecodeStep`) up
        to the shortest prompt; returns `(cache, hidden_states)`."""
        if int(index) < 1:
            mask = ops.cast(inputs["decoder_padding_mask"], "int32")
            lengths = ops.convert_to_numpy(ops.sum(mask, axis=-1)).tolist()
            raise ValueError(
                "Decoding needs at least one decoder prompt token (the start "
                "token) in every row; received decoder_padding_mask row "
                f"lengths {lengths}"
            )
        encoder_padding_mask = inputs["encoder_padding_mask"]
        encoder_output = fast_step.encode_inputs(self, inputs)
        prefill_length = int(index)
        cache = fast_step.start(
            encoder_output, encoder_padding_mask, max_length
        )
        _, hidden_states, cache = fast_step(
            inputs["decoder_token_ids"][:, :prefill_length], cache, 0
        )
        return cache, hidden_states

    def sample_tokens(self, fast_step, inputs, index, stop_token_ids):
        """Decodes `inputs` from position `index` with `self.sampler`
        (through `fast_step` where it is not None); returns the token ids."""
        decoder_token_ids = inputs["decoder_token_ids"]
        decoder_padding_mask = ops.cast(inputs["decoder_padding_mask"], "bool")
        max_length = ops.shape(decoder_token_ids)[1]
        if fast_step is not None:
            cache, hidden_states = self.fast_prefill(
                fast_step, inputs, max_length, index
            )
            prefill_length = ops.shape(hidden_states)[1]
            hidden_states = ops.pad(
                hidden_states,
                [[0, 0], [0, max_length - prefill_length], [0, 0]],
            )
        else:
            encoder_output, encoder_padding_mask = self.encode_prompt(inputs)
            cache = self.build_cache(
                encoder_output, encoder_padding_mask, max_length
            )
            hidden_states, cache = self.prefill(
                decoder_token_ids, decoder_padding_mask, cache, index
            )

        def next(prompt, cache, index):
            # The cache index is the position of the previous token.
            cache_update_index = index - 1
            if fast_step is not None:
                position = int(cache_update_index)
                token = prompt[:, position : position + 1]
                logits, _, cache = fast_step(token, cache, position)
                return logits[:, 0], None, cache
            batch_size = ops.shape(prompt)[0]
            token = ops.slice(prompt, [0, cache_update_index], [batch_size, 1])
            logits, _, cache = self.call_decoder_with_cache(
                token, None, cache, cache_update_index
            )
            return ops.squeeze(logits, axis=1), None, cache

        sampler = self.sampler
        if keras.backend.backend() in ("jax", "tensorflow"):
            sampler = greedy_sampler.for_compiled_loop(sampler)
        return sampler(
            next=next,
            prompt=decoder_token_ids,
            cache=cache,
            index=index,
            mask=decoder_padding_mask,
            stop_token_ids=stop_token_ids,
            hidden_states=hidden_states,
            model=self,
        )

    def generate_step(self, inputs, stop_token_ids=None):
        """Generates one batch: a compilable function of token tensors.

        Args:
            inputs: dict with `encoder_token_ids`, `encoder_padding_mask`,
                `decoder_token_ids` and `decoder_padding_mask`. The decoder
                tensors hold the (right-padded) prompt and set the output
                length.
            stop_token_ids: tuple of ints or None. Generation stops once every
                sequence produced one of them.

        Returns:
            dict with `decoder_token_ids` and `decoder_padding_mask`.
        """
        decoder_token_ids = inputs["decoder_token_ids"]
        decoder_padding_mask = ops.cast(inputs["decoder_padding_mask"], "bool")
        max_length = ops.shape(decoder_token_ids)[1]
        row_lengths = ops.sum(ops.cast(decoder_padding_mask, "int32"), axis=-1)
        index = ops.min(row_lengths)
        # On torch, the encoder and the cached decoder passes run as plain
        # torch code (same numbers) on caches it builds, and the prefill
        # covers only the shortest prompt: the steps recompute every later
        # position anyway. Greedy decoding then runs as a torch loop.
        fast_step = fast_decode.decode_step_for(self)
        if fast_decode_greedy.greedy_applies(self.sampler, fast_step):
            import torch

            with torch.inference_mode():
                cache, _ = self.fast_prefill(
                    fast_step, inputs, max_length, index
                )
                decoder_token_ids = fast_decode_greedy.greedy_decode(
                    fast_step, decoder_token_ids, decoder_padding_mask, cache,
                    index, stop_token_ids, self.sampler.temperature,
                )
        else:
            decoder_token_ids = self.sample_tokens(
                fast_step, inputs, index, stop_token_ids
            )

        if stop_token_ids is not None:
            # Keep everything up to and including the first new stop token.
            end_locations = any_equal(
                decoder_token_ids,
                stop_token_ids,
                ops.logical_not(decoder_padding_mask),
            )
            end_locations = ops.cast(end_locations, "int32")
            cumsum = ops.cast(ops.cumsum(end_locations, axis=-1), "int32")
            overflow = cumsum - end_locations
            decoder_padding_mask = ops.logical_not(ops.cast(overflow, "bool"))
        else:
            decoder_padding_mask = ops.ones_like(decoder_token_ids, dtype="bool")
        return {
            "decoder_token_ids": decoder_token_ids,
            "decoder_padding_mask": decoder_padding_mask,
        }
