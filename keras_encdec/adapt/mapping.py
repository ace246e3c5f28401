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
from keras_encdec.adapt.source_types import FAMILY_NAMES
from keras_encdec.adapt.source_types import GLOBAL_ROLES
from keras_encdec.convert.weight_mapping import WeightAssigner
from keras_encdec.convert.weight_mapping import check_all_assigned
from keras_encdec.stack_config import StackConfig
from keras_encdec.weight_roles import ATTENTION
from keras_encdec.weight_roles import CROSS_ATTENTION
from keras_encdec.weight_roles import split_role

logger = logging.getLogger(__name__)

CROSS_ATTENTION_INITS = ("auto", "self_attention", "random", "zeros")
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
        values = {key: source.config[key] for key in StackConfig.names()}
        if values["sliding_window"] is None:
            values["sliding_window"] = 4096  # Unused: no sliding layer.
        kwargs.update(StackConfig(side=side, **values).prefixed())
    dec = decoder.config
    kwargs.update(
        final_logit_soft_cap=dec["final_logit_soft_cap"],
        tie_word_embeddings=dec["tie_word_embeddings"],
        rms_norm_eps=dec["rms_norm_eps"],
        hidden_activation=dec["hidden_activation"],
        dtype=dtype or encoder.config["dtype"],
    )
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


# Block role of ours -> the decoder-only source's role (`source_types`).
# A T5Gemma cross-attention role reads its `attention.*` counterpart.
SOURCE_ROLES = {
    "attention.query": "query",
    "attention.key": "key",
    "attention.value": "value",
    "attention.output": "output",
    "attention.query_norm": "query_norm",
    "attention.key_norm": "key_norm",
    "attention.pre_norm": "pre_attention_norm",
    "attention.post_norm": "post_attention_norm",
    "mlp.pre_norm": "pre_ffw_norm",
    "mlp.post_norm": "post_ffw_norm",
    "mlp.gate": "gate",
    "mlp.up": "up",
    "mlp.down": "down",
}


def _source_role(role):
    """The source role that fills block role `role`."""
    sublayer, weight = split_role(role)
    if sublayer == CROSS_ATTENTION:
        role = f"{ATTENTION}.{weight}"
    if role not in SOURCE_ROLES:
        raise AdaptationError(
            f"No decoder-only Gemma weight fills the block weight role "
            f"{role!r}. Expected roles among {sorted(SOURCE_ROLES)}."
        )
    return SOURCE_ROLES[role]


def _is_cross(role):
    return split_role(role)[0] == CROSS_ATTENTION


def _stack_targets(backbone, side):
    """`[(variable, source role, layer)]` for one stack of the backbone, from
    its weight roles. Cross-attention and weights outside the blocks that
    a decoder-only Gemma lacks (T5Gemma 2's `embedding.eoi`) are left out;
    a table both stacks share is listed under the decoder."""
    targets = []
    for stack, index, role, variable in backbone.weight_roles():
        if stack != side:
            continue
        if index is None:
            if role in GLOBAL_ROLES:
                targets.append((variable, role, None))
        elif not _is_cross(role):
            targets.append((variable, _source_role(role), index))
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


def _cross_targets(backbone):
    """`[(variable, source role, layer)]` of every cross-attention weight."""
    return [
        (variable, _source_role(role), index)
        for _, index, role, variable in backbone.weight_roles()
        if _is_cross(role)
    ]


def cross_attention_variables(backbone):
    """Every cross-attention weight (projections and their norms)."""
    return [variable for variable, _, _ in _cross_targets(backbone)]


def _init_cross_attention(backbone, init, decoder):
    targets = _cross_targets(backbone)
    if init == "self_attention":
        names = [decoder.tensor(role, i)[0] for _, role, i in targets]
        with WeightAssigner(
            decoder.read, names, total=len(names),
            description="Copying self- to cross-attention",
        ) as assign:
            for variable, role, i in targets:
                name, transform = decoder.tensor(role, i)
                assign(variable, name, transform)
        return
    if init == "zeros":
        for _, _, role, kernel in backbone.weight_roles():
            if role == f"{CROSS_ATTENTION}.output":
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
    if cross_attention_variables(backbone):
        _init_cross_attention(backbone, cross_attention_init, decoder)
    # Cross-attention has its own pass (or keeps its init), and weights a
    # decoder-only Gemma lacks keep their init; the stack passes set all
    # the others.
    fresh = {
        id(variable)
        for _, index, role, variable in backbone.weight_roles()
        if _is_cross(role) or (index is None and role not in GLOBAL_ROLES)
    }
    encoder_assign.assigned |= decoder_assign.assigned
    check_all_assigned(
        [v for v in backbone.weights if id(v) not in fresh], encoder_assign
    )
