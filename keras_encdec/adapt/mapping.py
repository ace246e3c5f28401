"""Decoder-only Gemma 2 weights into a `T5GemmaBackbone`.

Three `WeightAssigner` passes, each correct by construction:

1. encoder <- `encoder_source`: every source tensor used once (a separate
   LM head excepted), every encoder weight set once;
2. decoder self-attention, MLP, norms, embedding <- `decoder_source`: the
   same checks;
3. cross-attention <- the decoder source's self-attention and its pre/post
   norms (`"self_attention"` init) or left at its fresh init (`"random"`,
   `"zeros"` with a zero output projection), by design.

Any shape mismatch names the weight and both shapes.
"""

import logging

import numpy as np

from keras_encdec.adapt.source_types import AdaptationError
from keras_encdec.adapt.source_types import ATTENTION_ROLES
from keras_encdec.adapt.source_types import FAMILY_NAMES
from keras_encdec.convert.weight_mapping import WeightAssigner
from keras_encdec.convert.weight_mapping import check_all_assigned

logger = logging.getLogger(__name__)

CROSS_ATTENTION_INITS = ("auto", "self_attention", "random", "zeros")
STACK_KEYS = (
    "hidden_dim", "intermediate_dim", "num_layers", "num_heads",
    "num_kv_heads", "head_dim", "layer_types", "sliding_window",
    "attention_logit_soft_cap", "query_pre_attn_scalar", "rope_max_wavelength",
)
BYTES_PER_PARAM = {"float32": 4, "bfloat16": 2, "float16": 2}


def check_pair(encoder, decoder):
    """Raises unless the two sources can form one encoder-decoder."""
    enc, dec = encoder.config, decoder.config
    if enc["family"] != dec["family"]:
        raise AdaptationError(
            "The encoder and decoder sources must be the same Gemma "
            f"generation. Received: {FAMILY_NAMES[enc['family']]} "
            f"({encoder.description}) and {FAMILY_NAMES[dec['family']]} "
            f"({decoder.description})."
        )
    if enc["vocabulary_size"] != dec["vocabulary_size"]:
        raise AdaptationError(
            "The encoder and decoder sources must share the vocabulary and "
            f"tokenizer. Received: vocabulary sizes {enc['vocabulary_size']} "
            f"({encoder.description}) and {dec['vocabulary_size']} "
            f"({decoder.description})."
        )
    protos = (encoder.tokenizer_proto, decoder.tokenizer_proto)
    if None not in protos and protos[0] != protos[1]:
        raise AdaptationError(
            "The encoder and decoder sources must share the vocabulary and "
            f"tokenizer, but their SentencePiece models differ "
            f"({encoder.description} vs {decoder.description})."
        )
    for key in ("rms_norm_eps", "hidden_activation"):
        if enc[key] != dec[key]:
            raise AdaptationError(
                f"The encoder and decoder sources differ in {key}: "
                f"{enc[key]!r} vs {dec[key]!r}. T5Gemma shares one value."
            )


def resolve_cross_attention_init(cross_attention_init, encoder, decoder):
    """Returns the concrete init (`"auto"` resolved) after checking it."""
    if cross_attention_init not in CROSS_ATTENTION_INITS:
        raise ValueError(
            "Unknown cross_attention_init. Received: "
            f"cross_attention_init={cross_attention_init!r}. Expected one of "
            f"{CROSS_ATTENTION_INITS}."
        )
    enc_width = encoder.config["hidden_dim"]
    dec_width = decoder.config["hidden_dim"]
    balanced = enc_width == dec_width
    if cross_attention_init == "auto":
        return "self_attention" if balanced else "random"
    if cross_attention_init == "self_attention" and not balanced:
        raise AdaptationError(
            "cross_attention_init='self_attention' copies the decoder's "
            "self-attention key/value kernels, which read the decoder width "
            f"({dec_width}); cross-attention reads the encoder width "
            f"({enc_width}). Use 'random' or 'zeros' (or 'auto') for an "
            "unbalanced pair."
        )
    return cross_attention_init


def backbone_kwargs(encoder, decoder, dtype=None):
    """`T5GemmaBackbone` kwargs for an encoder and a decoder source."""
    kwargs = {"vocabulary_size": decoder.config["vocabulary_size"]}
    for side, source in (("encoder", encoder), ("decoder", decoder)):
        for key in STACK_KEYS:
            kwargs[f"{side}_{key}"] = source.config[key]
    dec = decoder.config
    kwargs.update(
        final_logit_soft_cap=dec["final_logit_soft_cap"],
        tie_word_embeddings=dec["tie_word_embeddings"],
        rms_norm_eps=dec["rms_norm_eps"],
        hidden_activation=dec["hidden_activation"],
        dtype=dtype or encoder.config["dtype"],
    )
    if kwargs["encoder_sliding_window"] is None:
        kwargs["encoder_sliding_window"] = 4096  # Unused: no sliding layer.
    if kwargs["decoder_sliding_window"] is None:
        kwargs["decoder_sliding_window"] = 4096
    return kwargs


def count_params(kwargs):
    """Parameter count of a `T5GemmaBackbone` built from `kwargs`, computed
    from the config alone (no memory allocated)."""
    vocab = kwargs["vocabulary_size"]
    total = 0
    widths = {}
    for side in ("encoder", "decoder"):
        get = lambda key: kwargs[f"{side}_{key}"]  # noqa: E731
        d, f = get("hidden_dim"), get("intermediate_dim")
        q = get("num_heads") * get("head_dim")
        kv = get("num_kv_heads") * get("head_dim")
        widths[side] = (d, q, kv)
        attention = 2 * d * q + 2 * d * kv
        layer = attention + 3 * d * f + 4 * d
        total += get("num_layers") * layer + vocab * d + d
    d_enc = widths["encoder"][0]
    d_dec, q_dec, kv_dec = widths["decoder"]
    cross = 2 * d_dec * q_dec + 2 * d_enc * kv_dec + 2 * d_dec
    total += kwargs["decoder_num_layers"] * cross
    if not kwargs.get("tie_word_embeddings", True):
        total += vocab * d_dec
    return total


def _layer_targets(layer):
    """Role -> variable of a T5Gemma or T5Gemma 2 block (T5Gemma 2's
    attention adds the query/key norms)."""
    attention = layer.self_attention
    targets = {
        "query": attention.query_dense.kernel,
        "key": attention.key_dense.kernel,
        "value": attention.value_dense.kernel,
        "output": attention.output_dense.kernel,
        "pre_attention_norm": layer.pre_self_attention_norm.scale,
        "post_attention_norm": layer.post_self_attention_norm.scale,
        "pre_ffw_norm": layer.pre_ffw_norm.scale,
        "post_ffw_norm": layer.post_ffw_norm.scale,
        "gate": layer.mlp.gating.kernel,
        "up": layer.mlp.gating_2.kernel,
        "down": layer.mlp.linear.kernel,
    }
    if hasattr(attention, "query_norm"):
        targets["query_norm"] = attention.query_norm.scale
        targets["key_norm"] = attention.key_norm.scale
    return targets


def shares_embedding(backbone):
    """Whether encoder and decoder use one table (T5Gemma 2)."""
    return backbone.decoder_token_embedding is backbone.token_embedding


def _stack_targets(backbone, side):
    """`[(variable, role, layer)]` for one stack of the backbone. A shared
    table (T5Gemma 2) is the decoder's: it is also the LM head."""
    if side == "encoder":
        layers = backbone.encoder_layers
        targets = [(backbone.encoder_norm.scale, "final_norm", None)]
        if not shares_embedding(backbone):
            targets.append(
                (backbone.token_embedding.embeddings, "embedding", None)
            )
    else:
        layers = backbone.decoder_layers
        embedding = backbone.decoder_token_embedding
        targets = [
            (embedding.embeddings, "embedding", None),
            (backbone.decoder_norm.scale, "final_norm", None),
        ]
        if not backbone.tie_word_embeddings:
            targets.append((embedding.reverse_embeddings, "lm_head", None))
    for i, layer in enumerate(layers):
        targets += [(v, role, i) for role, v in _layer_targets(layer).items()]
    return targets


def _assign_stack(backbone, side, source):
    targets = _stack_targets(backbone, side)
    uses_head = any(role == "lm_head" for _, role, _ in targets)
    if uses_head and not source.has("lm_head"):
        raise AdaptationError(
            f"{source.description} is untied but stores no LM head."
        )
    ignored = []
    if source.has("lm_head") and not uses_head:
        ignored.append(source.tensor("lm_head")[0])
    if not any(role == "embedding" for _, role, _ in targets):
        ignored.append(source.tensor("embedding")[0])
    with WeightAssigner(
        source.read,
        source.names(),
        total=len(targets),
        description=f"Adapting {side}",
        ignored_sources=ignored,
    ) as assign:
        for variable, role, layer in targets:
            name, transform = source.tensor(role, layer)
            assign(variable, name, transform)
    return assign


def _cross_targets(layer):
    attention = layer.cross_attention
    return {
        "query": attention.query_dense.kernel,
        "key": attention.key_dense.kernel,
        "value": attention.value_dense.kernel,
        "output": attention.output_dense.kernel,
        "pre_attention_norm": layer.pre_cross_attention_norm.scale,
        "post_attention_norm": layer.post_cross_attention_norm.scale,
    }


def cross_attention_variables(backbone):
    """Every cross-attention weight (projections and their norms)."""
    return [
        v for layer in backbone.decoder_layers
        for v in _cross_targets(layer).values()
    ]


def _init_cross_attention(backbone, init, decoder):
    if init == "self_attention":
        roles = ATTENTION_ROLES + ("pre_attention_norm", "post_attention_norm")
        names = [
            decoder.tensor(role, i)[0]
            for i in range(len(backbone.decoder_layers)) for role in roles
        ]
        with WeightAssigner(
            decoder.read, names, total=len(names),
            description="Copying self- to cross-attention",
        ) as assign:
            for i, layer in enumerate(backbone.decoder_layers):
                for role, variable in _cross_targets(layer).items():
                    name, transform = decoder.tensor(role, i)
                    assign(variable, name, transform)
        return
    if init == "zeros":
        for layer in backbone.decoder_layers:
            kernel = layer.cross_attention.output_dense.kernel
            kernel.assign(np.zeros(kernel.shape, "float32"))
    logger.info(
        "Cross-attention keeps its fresh random init%s.",
        " with a zero output projection" if init == "zeros" else "",
    )


def load_adapted_weights(backbone, encoder, decoder, cross_attention_init):
    """Fills `backbone` from the two sources (see the module docstring).

    A `T5Gemma2Backbone` has no cross-attention weights (its merged
    attention reuses the decoder's self-attention) and one table, taken from
    the decoder source; its `eoi_embedding` is unused (the adapted model has
    `eoi_token_index=None`) and keeps its zero init.
    """
    encoder_assign = _assign_stack(backbone, "encoder", encoder)
    decoder_assign = _assign_stack(backbone, "decoder", decoder)
    if shares_embedding(backbone):
        fresh = [backbone.token_embedding.eoi_embedding]
    else:
        _init_cross_attention(backbone, cross_attention_init, decoder)
        fresh = cross_attention_variables(backbone)
    fresh = {id(v) for v in fresh}
    encoder_assign.assigned |= decoder_assign.assigned
    check_all_assigned(
        [v for v in backbone.weights if id(v) not in fresh], encoder_assign
    )
