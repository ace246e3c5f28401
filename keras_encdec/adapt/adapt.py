"""`adapt_decoder_only`: decoder-only Gemma 2 -> T5Gemma, Gemma 3 ->
T5Gemma 2 encoder-decoder."""

import logging

from keras_encdec.adapt import mapping
from keras_encdec.adapt import mapping_t5gemma2
from keras_encdec.adapt.source_types import GEMMA2
from keras_encdec.adapt.source_types import GEMMA3
from keras_encdec.adapt.sources import open_source
from keras_encdec.models import T5Gemma2Backbone
from keras_encdec.models import T5Gemma2Seq2SeqLM
from keras_encdec.models import T5Gemma2Seq2SeqLMPreprocessor
from keras_encdec.models import T5Gemma2Tokenizer
from keras_encdec.models import T5GemmaBackbone
from keras_encdec.models import T5GemmaSeq2SeqLM
from keras_encdec.models import T5GemmaSeq2SeqLMPreprocessor
from keras_encdec.models import T5GemmaTokenizer

# Source family -> (backbone, task, preprocessor, tokenizer) classes.
TARGETS = {
    GEMMA2: (T5GemmaBackbone, T5GemmaSeq2SeqLM,
               T5GemmaSeq2SeqLMPreprocessor, T5GemmaTokenizer),
    GEMMA3: (T5Gemma2Backbone, T5Gemma2Seq2SeqLM,
             T5Gemma2Seq2SeqLMPreprocessor, T5Gemma2Tokenizer),
}

logger = logging.getLogger(__name__)


def plan_adaptation(encoder_source, decoder_source=None, *,
                    cross_attention_init="auto", dtype=None):
    """Opens and checks the sources without building the model.

    Returns a dict with `encoder` and `decoder` (`GemmaSource`s),
    `family` (`"gemma2"` or `"gemma3"`), `cross_attention_init` (resolved;
    `"self_attention"` for T5Gemma 2's merged attention), `backbone_kwargs`,
    `num_params` and `memory_bytes`. Arguments are those of
    `adapt_decoder_only`.
    """
    encoder = open_source(encoder_source)
    decoder = encoder if decoder_source is None else open_source(decoder_source)
    mapping.check_pair(encoder, decoder)
    if encoder.family == GEMMA3:
        init = mapping_t5gemma2.check_cross_attention_init(
            cross_attention_init)
        kwargs = mapping_t5gemma2.t5gemma2_backbone_kwargs(
            encoder, decoder, dtype)
        num_params = mapping_t5gemma2.count_t5gemma2_params(kwargs)
    else:
        init = mapping.resolve_cross_attention_init(
            cross_attention_init, encoder, decoder
        )
        kwargs = mapping.backbone_kwargs(encoder, decoder, dtype)
        num_params = mapping.count_params(kwargs)
    return {
        "encoder": encoder,
        "decoder": decoder,
        "family": encoder.family,
        "cross_attention_init": init,
        "backbone_kwargs": kwargs,
        "num_params": num_params,
        "memory_bytes": num_params * mapping.BYTES_PER_PARAM.get(
            str(kwargs["dtype"]), 4),
    }


def build_adapted(plan):
    """Builds the `T5GemmaSeq2SeqLM` or `T5Gemma2Seq2SeqLM` a
    `plan_adaptation` plan describes."""
    encoder, decoder = plan["encoder"], plan["decoder"]
    backbone_cls, task_cls, preprocessor_cls, tokenizer_cls = TARGETS[
        plan["family"]]
    backbone = backbone_cls(**plan["backbone_kwargs"])
    mapping.load_adapted_weights(
        backbone, encoder, decoder, plan["cross_attention_init"]
    )
    proto = decoder.tokenizer_proto or encoder.tokenizer_proto
    preprocessor = None
    if proto is None:
        logger.warning(
            "The sources carry no tokenizer: the adapted model has no "
            "preprocessor and takes token-id dicts."
        )
    else:
        preprocessor = preprocessor_cls(tokenizer_cls(proto=proto))
    return task_cls(backbone=backbone, preprocessor=preprocessor)


def adapt_decoder_only(encoder_source, decoder_source=None, *,
                       cross_attention_init="auto", dtype=None):
    """Turns decoder-only Gemma checkpoints into an encoder-decoder.

    The recipe of "Encoder-Decoder Gemma" (arXiv 2504.06225): the encoder is
    `encoder_source` with bidirectional attention; the decoder's
    self-attention, MLP, norms and embedding are `decoder_source`'s.

    - Gemma 2 -> `T5GemmaSeq2SeqLM`: encoder sliding layers see `|q - k| <=
      W`; cross-attention is new (`cross_attention_init`). Encoder and
      decoder may differ in size (e.g. a 9B-like encoder with a 2B-like
      decoder) as long as they share the vocabulary and tokenizer.
    - Gemma 3 -> `T5Gemma2Seq2SeqLM` (arXiv 2512.14856): encoder sliding
      layers see `-(W+1)//2 < k - q < W//2 + 1`; each decoder block's merged
      attention runs its self-attention projections and norms over the
      decoder and the encoder keys in one softmax, so with an empty
      (fully masked) encoder the decoder computes exactly the source LM.
      One embedding table (the decoder source's) serves both stacks, so
      both sources must have the same width, RoPE, epsilon and activation.

    Args:
        encoder_source: a keras-hub `GemmaBackbone` / `GemmaCausalLM` with
            Gemma 2 settings or `Gemma3Backbone` / `Gemma3CausalLM`, a
            keras-hub preset name or folder, a local transformers
            `Gemma2ForCausalLM` / `Gemma3ForCausalLM` folder, or a Gemma 3
            `.gguf` file.
        decoder_source: same kinds (and the same Gemma generation), or None.
            Defaults to `None` (`encoder_source`).
        cross_attention_init: str. T5Gemma only: `"self_attention"` copies
            the decoder's self-attention weights and their norms (encoder
            and decoder of the same width only); `"random"` keeps a fresh
            init; `"zeros"` is random with a zero output projection, so the
            adapted decoder computes exactly the source LM; `"auto"` is
            `"self_attention"` for equal widths and `"random"` otherwise.
            T5Gemma 2 accepts `"auto"` and `"self_attention"` (its merged
            attention). Defaults to `"auto"`.
        dtype: str or None. Weight dtype of the result. Defaults to `None`
            (the encoder source's dtype).

    Returns:
        A `keras_encdec.models.T5GemmaSeq2SeqLM` (Gemma 2) or
        `T5Gemma2Seq2SeqLM` (Gemma 3) carrying the source's tokenizer (when
        it has one), so `generate` works on text.

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
    >>> gemma3 = keras_hub.models.Gemma3Backbone(
    ...     vocabulary_size=32, image_size=16, num_layers=2,
    ...     num_query_heads=2, num_key_value_heads=1, hidden_dim=16,
    ...     intermediate_dim=32, head_dim=8, use_post_ffw_norm=True,
    ...     use_post_attention_norm=True, use_sliding_window_attention=True,
    ...     sliding_window_size=4)
    >>> type(adapt_decoder_only(gemma3)).__name__
    'T5Gemma2Seq2SeqLM'
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
