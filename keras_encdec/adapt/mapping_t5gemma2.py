"""Gemma 3 sources -> `T5Gemma2Backbone` arguments and size.

T5Gemma 2 is less free than T5Gemma: one embedding table serves the
encoder, the decoder and the LM head, and the decoder's merged attention
reuses each block's self-attention projections and norms for the encoder
keys. So the two stacks must share the width and everything stored once
(RoPE, norm epsilon, activation), and there is no cross-attention to
initialise. Pairs that break this raise `AdaptationError` naming the
difference. The weights themselves are assigned by `mapping`'s passes.
"""

import logging

from keras_encdec.adapt.source_types import AdaptationError

logger = logging.getLogger(__name__)

STACK_KEYS = (
    "intermediate_dim", "num_layers", "num_heads", "num_kv_heads",
    "head_dim", "layer_types", "sliding_window", "query_pre_attn_scalar",
)
# Source config key -> what T5Gemma 2 stores once for both stacks.
SHARED_KEYS = {
    "hidden_dim": "width (one embedding table serves both stacks)",
    "rope_max_wavelength": "global RoPE wavelength",
    "rope_local_max_wavelength": "local RoPE wavelength",
    "rope_scaling_factor": "global RoPE scaling factor",
    "rms_norm_eps": "norm epsilon",
    "hidden_activation": "MLP activation",
}
MERGED_INITS = ("auto", "self_attention")
UNUSED_SLIDING_WINDOW = 4096  # A stack without sliding layers.


def check_cross_attention_init(cross_attention_init):
    """T5Gemma 2's decoder has no separate cross-attention to initialise."""
    if cross_attention_init not in MERGED_INITS:
        raise AdaptationError(
            "T5Gemma 2's merged attention reuses the decoder's "
            "self-attention weights for the encoder keys, so there is no "
            "cross-attention to initialise. Received: cross_attention_init="
            f"{cross_attention_init!r}. Expected one of {MERGED_INITS}."
        )
    return "self_attention"


def _check_source(source, side):
    config = source.config
    problems = []
    if config["attention_logit_soft_cap"] is not None:
        problems.append(
            f"attention_logit_soft_cap={config['attention_logit_soft_cap']}")
    if config["rope_local_scaling_factor"] != 1.0:
        problems.append(
            f"rope_local_scaling_factor={config['rope_local_scaling_factor']}")
    if side == "decoder" and not config["tie_word_embeddings"]:
        problems.append("an untied LM head")
    if problems:
        raise AdaptationError(
            f"T5Gemma 2 cannot express the {side} source "
            f"{source.description}: it has {', '.join(problems)} (T5Gemma 2 "
            "has no attention soft-cap, unscaled local RoPE and a tied LM "
            "head)."
        )


def t5gemma2_backbone_kwargs(encoder, decoder, dtype=None):
    """`T5Gemma2Backbone` kwargs for two Gemma 3 sources (checked).

    Args:
        encoder: `GemmaSource`. Gemma 3.
        decoder: `GemmaSource`. Gemma 3.
        dtype: str or None. Defaults to `None` (the encoder source's).

    Returns:
        A dict of `T5Gemma2Backbone` arguments with `eoi_token_index=None`:
        the adapted model embeds every token as its source does.
    """
    _check_source(encoder, "encoder")
    _check_source(decoder, "decoder")
    enc, dec = encoder.config, decoder.config
    for key, meaning in SHARED_KEYS.items():
        if enc[key] != dec[key]:
            raise AdaptationError(
                f"T5Gemma 2 stores one {meaning} for both stacks, but the "
                f"sources differ in {key}: {enc[key]!r} "
                f"({encoder.description}) vs {dec[key]!r} "
                f"({decoder.description}). Adapt a pair with equal values."
            )
    if encoder is not decoder:
        logger.info(
            "T5Gemma 2 has one embedding table: it is taken from the decoder "
            "source (%s); the encoder source's is not used.",
            decoder.description,
        )
    kwargs = {"vocabulary_size": dec["vocabulary_size"],
              "hidden_dim": dec["hidden_dim"]}
    for side, config in (("encoder", enc), ("decoder", dec)):
        for key in STACK_KEYS:
            kwargs[f"{side}_{key}"] = config[key]
        if config["sliding_window"] is None:
            kwargs[f"{side}_sliding_window"] = UNUSED_SLIDING_WINDOW
    kwargs.update(
        rope_local_wavelength=dec["rope_local_max_wavelength"],
        rope_global_wavelength=dec["rope_max_wavelength"],
        rope_scaling_factor=dec["rope_scaling_factor"],
        final_logit_soft_cap=dec["final_logit_soft_cap"],
        attention_logit_soft_cap=None,
        eoi_token_index=None,
        rms_norm_eps=dec["rms_norm_eps"],
        hidden_activation=dec["hidden_activation"],
        dtype=dtype or enc["dtype"],
    )
    return kwargs


def count_t5gemma2_params(kwargs):
    """Parameter count of a text `T5Gemma2Backbone` built from `kwargs`,
    from the config alone (no memory allocated)."""
    width = kwargs["hidden_dim"]
    total = kwargs["vocabulary_size"] * width + width  # Table, eoi row.
    for side in ("encoder", "decoder"):
        get = lambda key: kwargs[f"{side}_{key}"]  # noqa: E731
        head_dim, ffn = get("head_dim"), get("intermediate_dim")
        query = get("num_heads") * head_dim
        key_value = get("num_kv_heads") * head_dim
        layer = (2 * width * query + 2 * width * key_value + 3 * width * ffn
                 + 4 * width + 2 * head_dim)
        total += get("num_layers") * layer + width  # Blocks, final norm.
    return total
