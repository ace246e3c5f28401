"""`adapt_decoder_only`: decoder-only Gemma 2 -> T5Gemma encoder-decoder."""

import logging

from keras_encdec.adapt import mapping
from keras_encdec.adapt.sources import open_source
from keras_encdec.errors import log_missing_tokenizer
from keras_encdec.models import T5GemmaBackbone
from keras_encdec.models import T5GemmaSeq2SeqLM
from keras_encdec.models import T5GemmaSeq2SeqLMPreprocessor
from keras_encdec.models import T5GemmaTokenizer

logger = logging.getLogger(__name__)


def plan_adaptation(encoder_source, decoder_source=None, *,
                    cross_attention_init="auto", dtype=None):
    """Opens and checks the sources without building the model.

    Returns a dict with `encoder` and `decoder` (`GemmaSource`s),
    `cross_attention_init` (resolved), `backbone_kwargs`, `num_params` and
    `memory_bytes`. Arguments are those of `adapt_decoder_only`.
    """
    encoder = open_source(encoder_source)
    decoder = encoder if decoder_source is None else open_source(decoder_source)
    mapping.check_pair(encoder, decoder)
    init = mapping.resolve_cross_attention_init(
        cross_attention_init, encoder, decoder
    )
    kwargs = mapping.backbone_kwargs(encoder, decoder, dtype)
    return {
        "encoder": encoder,
        "decoder": decoder,
        "cross_attention_init": init,
        "backbone_kwargs": kwargs,
        "num_params": mapping.count_params(kwargs),
        "memory_bytes": mapping.memory_estimate_bytes(kwargs),
    }


def build_adapted(plan):
    """Builds the `T5GemmaSeq2SeqLM` a `plan_adaptation` plan describes."""
    encoder, decoder = plan["encoder"], plan["decoder"]
    backbone = T5GemmaBackbone(**plan["backbone_kwargs"])
    mapping.load_adapted_weights(
        backbone, encoder, decoder, plan["cross_attention_init"]
    )
    proto = decoder.tokenizer_proto or encoder.tokenizer_proto
    preprocessor = None
    if proto is None:
        log_missing_tokenizer(f"{decoder.description} / {encoder.description}")
    else:
        preprocessor = T5GemmaSeq2SeqLMPreprocessor(
            T5GemmaTokenizer(proto=proto)
        )
    return T5GemmaSeq2SeqLM(backbone=backbone, preprocessor=preprocessor)


def adapt_decoder_only(encoder_source, decoder_source=None, *,
                       cross_attention_init="auto", dtype=None):
    """Turns decoder-only Gemma 2 checkpoints into a T5Gemma model.

    The recipe of "Encoder-Decoder Gemma" (arXiv 2504.06225): the encoder is
    `encoder_source` with bidirectional attention (two-sided windows
    `|q - k| <= W` on its sliding layers); the decoder's self-attention,
    MLP, norms and embedding are `decoder_source`'s; cross-attention is new.
    Encoder and decoder may differ in size (e.g. a 9B-like encoder with a
    2B-like decoder) as long as they share the vocabulary and tokenizer.

    Args:
        encoder_source: a keras-hub `GemmaBackbone` or `GemmaCausalLM` with
            Gemma 2 settings, a keras-hub preset name or folder, or a local
            transformers `Gemma2ForCausalLM` folder.
        decoder_source: same kinds, or None. Defaults to `None`
            (`encoder_source`).
        cross_attention_init: str. `"self_attention"` copies the decoder's
            self-attention weights and their norms (encoder and decoder of
            the same width only); `"random"` keeps a fresh init; `"zeros"` is
            random with a zero output projection, so the adapted decoder
            computes exactly the source LM; `"auto"` is `"self_attention"`
            for equal widths and `"random"` otherwise. Defaults to `"auto"`.
        dtype: str or None. Weight dtype of the result. Defaults to `None`
            (the encoder source's dtype).

    Returns:
        A `keras_encdec.models.T5GemmaSeq2SeqLM` carrying the source's
        tokenizer (when it has one), so `generate` works on text.

    Examples:

    >>> import keras_hub
    >>> from keras_encdec.adapt import adapt_decoder_only
    >>> gemma2 = keras_hub.models.GemmaBackbone(
    ...     vocabulary_size=32, num_layers=2, num_query_heads=2,
    ...     num_key_value_heads=1, hidden_dim=16, intermediate_dim=64,
    ...     head_dim=8, use_post_ffw_norm=True, use_post_attention_norm=True,
    ...     attention_logit_soft_cap=50.0, final_logit_soft_cap=30.0,
    ...     use_sliding_window_attention=True, sliding_window_size=4)
    >>> lm = adapt_decoder_only(gemma2, cross_attention_init="zeros")
    >>> lm.backbone.encoder_num_layers, lm.backbone.decoder_hidden_dim
    (2, 16)
    """
    plan = plan_adaptation(
        encoder_source,
        decoder_source,
        cross_attention_init=cross_attention_init,
        dtype=dtype,
    )
    logger.info(
        "Adapting %s (encoder) + %s (decoder), cross-attention init %r: "
        "%d parameters.",
        plan["encoder"].description,
        plan["decoder"].description,
        plan["cross_attention_init"],
        plan["num_params"],
    )
    return build_adapted(plan)
