"""The encoder and decoder block stacks of the T5Gemma backbones.

Functions (not methods) so that T5Gemma, T5Gemma 2 and the encoder-only
models, which borrow `_encode`, run the same loop. Segment ids (sequence
packing) are passed to the blocks only when given, so an unpacked call and
the functional graph are those of a model without packing.
"""

from keras_encdec.models.encdec_inputs import DECODER_SEGMENT_IDS
from keras_encdec.models.encdec_inputs import ENCODER_SEGMENT_IDS
from keras_encdec.models.encdec_inputs import has_segment_ids


class PackedCallMixin:
    """A backbone's `call` for input dicts its functional graph does not
    take: with segment ids (sequence packing) the layers run one by one
    (`call_layers`); without them the graph runs, unchanged."""

    def call(self, inputs, training=None, mask=None):
        if has_segment_ids(inputs):  # the functional graph takes none
            return self.call_layers(inputs, training=training)
        return super().call(inputs, training=training, mask=mask)

    def call_layers(self, inputs, training=None):
        """Runs the encoder and decoder on an input dict outside the
        functional graph: the path of packed inputs (segment ids).

        Args:
            inputs: dict. The backbone inputs, optionally with
                `encoder_segment_ids` and `decoder_segment_ids`.
            training: bool or None. Enables dropout.

        Returns:
            The output dict of a call (`encoder_sequence_output`,
            `decoder_sequence_output`).
        """
        encoder_output = self._encode_inputs(inputs, training)
        decoder_output, _ = self._decode(
            inputs["decoder_token_ids"],
            inputs["decoder_padding_mask"],
            encoder_output,
            inputs["encoder_padding_mask"],
            training=training,
            segment_ids=inputs.get(DECODER_SEGMENT_IDS),
            encoder_segment_ids=inputs.get(ENCODER_SEGMENT_IDS),
        )
        return {
            "encoder_sequence_output": encoder_output,
            "decoder_sequence_output": decoder_output,
        }

    def _encode_inputs(self, inputs, training):
        """`_encode` on an input dict (subclasses add their inputs)."""
        return self._encode(
            inputs["encoder_token_ids"],
            inputs["encoder_padding_mask"],
            training=training,
            segment_ids=inputs.get(ENCODER_SEGMENT_IDS),
        )


def encoder_stack(model, x, padding_mask, training, segment_ids=None):
    """`model`'s encoder blocks and final norm on embedded inputs `x`
    (a function, so encoder-only models that borrow `_encode` share it)."""
    segments = segment_kwargs(segment_ids=segment_ids)
    for layer in model.encoder_layers:
        x = layer(x, padding_mask=padding_mask, training=training, **segments)
    x = model.encoder_norm(x)
    return model.output_dropout(x, training=training)


def decoder_stack(model, x, padding_mask, encoder_output,
                  encoder_padding_mask, caches, cache_update_index, training,
                  segments):
    """`model`'s decoder blocks and final norm on embedded inputs `x`;
    returns `(hidden_states, caches)`. `segments` holds the given
    `segment_ids` / `encoder_segment_ids`."""
    new_caches = []
    for i, layer in enumerate(model.decoder_layers):
        self_cache, cross_cache = (None, None) if caches is None else caches[i]
        x, layer_caches = layer(
            x,
            encoder_output if cross_cache is None else None,
            padding_mask=padding_mask,
            encoder_padding_mask=encoder_padding_mask,
            self_attention_cache=self_cache,
            cross_attention_cache=cross_cache,
            cache_update_index=cache_update_index,
            training=training,
            **segments,
        )
        new_caches.append(layer_caches)
    x = model.decoder_norm(x)
    return model.output_dropout(x, training=training), new_caches


def segment_kwargs(**segment_ids):
    """The segment-id kwargs that are given (a call without segments
    passes none, so the functional graph stays as it was)."""
    return {k: v for k, v in segment_ids.items() if v is not None}
