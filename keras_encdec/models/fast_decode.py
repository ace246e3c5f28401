"""A functional torch decoder: cached generation without `Layer.__call__`.

On the torch backend, Keras runs every sublayer call eagerly through
`Layer.__call__` (autocast scopes, argument binding, name scopes), which is
most of the time of a one-token decode step. `TorchDecodeStep` reads the
encoder's and decoder's weights once per `generate` call into plain torch
tensors (`fast_decode_weights.TorchWeights`: one `[q, k, v]` projection
with the logit scale folded into the query, fused gate/up and cross
key/value kernels), runs the encoder, builds its own caches (`start`:
static self-attention caches, cross-attention keys/values) and runs the
prefill and every step with torch ops, writing the caches in place. It
computes what the layers compute up to float rounding (logits within 1e-5
in the tests), so greedy and beam tokens equal the layer path's. JAX and
TensorFlow compile the layer path and do not use it.

The step is written per block (`self_attention_block`, `cross_attention_block`,
`feed_forward_block`) over `attend`, a grouped-query attention over a
keys-then-values tensor `[batch, 2 * kv_heads, S, head_dim]`, so a family
with another block layout overrides a few methods; its task names the
subclass in `torch_decode_step_class` (T5Gemma 2: `keras_encdec.models.
t5gemma2.t5gemma2_fast_decode.T5Gemma2DecodeStep`).
"""

import logging

import keras

from keras_encdec.models.fast_decode_step import TorchDecodeStep

logger = logging.getLogger(__name__)


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
    step_class = decode_step_class(lm)
    expected = step_class.backbone_class()
    if type(backbone) is not expected:
        return (
            f"{step_class.__name__} covers {expected.__name__} only; "
            f"received {type(backbone).__name__}"
        )
    layers = [backbone.token_embedding, backbone.encoder_norm,
              backbone.decoder_token_embedding, backbone.decoder_norm]
    for block in (*backbone.encoder_layers, *backbone.decoder_layers):
        layers.extend(block._flatten_layers(include_self=False))
    for layer in layers:
        if getattr(layer, "quantization_mode", None) is not None:
            return (
                f"layer '{layer.name}' is quantized "
                f"({layer.quantization_mode})"
            )
    return None


def decode_step_class(lm):
    """The step class of `lm`'s family: the task's `torch_decode_step_class`
    attribute, or `TorchDecodeStep` (T5Gemma) when it has none.

    Args:
        lm: an encoder-decoder LM task.

    Returns:
        A `TorchDecodeStep` subclass.

    Examples:

    >>> from keras_encdec.models import T5GemmaSeq2SeqLM
    >>> decode_step_class(T5GemmaSeq2SeqLM.from_preset("t5gemma_tiny_random"))
    <class 'keras_encdec.models.fast_decode_step.TorchDecodeStep'>
    """
    return getattr(lm, "torch_decode_step_class", None) or TorchDecodeStep


def decode_step_for(lm):
    """A `TorchDecodeStep` for `lm`, or None where the layer path runs.

    The step (its weight copies) is kept on `lm` and reused while every
    backbone variable is the same torch tensor at the same version (an
    `assign`, an optimizer update, LoRA or a new dtype make a new one).

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
    key = (lm.compute_dtype,) + tuple(
        (id(v.value), v.value._version) for v in lm.backbone.weights
    )
    cached = getattr(lm, "_torch_decode_step", None)
    if cached is None or cached[0] != key:
        cached = (key, decode_step_class(lm)(lm))
        lm._torch_decode_step = cached
    return cached[1]
