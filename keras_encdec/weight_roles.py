"""Weight roles: what each weight of an encoder-decoder Gemma *is*.

Every block class declares `weight_roles() -> {role: keras.Variable}`, and
every backbone yields `(stack, layer_index, role, variable)` for all its
weights (`FineTuningMixin.weight_roles`). LoRA target groups, the sharding
layout, the checkpoint converters and the adaptation from decoder-only
Gemma read these roles, not attribute names, so a new family only has to
declare its roles.

A block role is `"<sublayer>.<weight>"`:

- sublayers: `"attention"` (the block's self-attention; in a T5Gemma 2
  decoder the merged attention, whose one set of projections serves both
  self- and cross-attention), `"cross_attention"` (T5Gemma decoders) and
  `"mlp"`;
- attention weights: `"query"`, `"key"`, `"value"`, `"output"` (the
  projection kernels), `"query_norm"`, `"key_norm"` (QK norms, T5Gemma 2),
  `"pre_norm"`, `"post_norm"` (the sandwich norms around the sublayer);
- MLP weights: `"gate"`, `"up"`, `"down"`, `"pre_norm"`, `"post_norm"`.

Weights outside the blocks have roles without a sublayer: `"embedding"`,
`"embedding.eoi"` (T5Gemma 2's end-of-image row), `"lm_head"` (an untied
output table) and `"final_norm"`, listed per stack (`"encoder"`,
`"decoder"`; a table both stacks share is listed once, under `"decoder"`,
as it is also the LM head). The vision stack (`"vision"`) uses the same
block vocabulary plus `".bias"` for biases and layer-norm offsets.

Examples:

>>> from keras_encdec.models import T5GemmaBackbone
>>> backbone = T5GemmaBackbone.from_preset("t5gemma_tiny_random")
>>> roles = backbone.decoder_layers[0].weight_roles()
>>> roles["cross_attention.query"].path
'decoder_layer_0/cross_attention/query/kernel'
>>> split_role("mlp.gate")
('mlp', 'gate')
"""

ATTENTION = "attention"
CROSS_ATTENTION = "cross_attention"
MLP = "mlp"
SUBLAYERS = (ATTENTION, CROSS_ATTENTION, MLP)
STACKS = ("encoder", "decoder")

ATTENTION_PROJECTIONS = ("query", "key", "value", "output")
MLP_PROJECTIONS = ("gate", "up", "down")
QK_NORMS = ("query_norm", "key_norm")
SANDWICH_NORMS = ("pre_norm", "post_norm")

# The Keras layer name of each projection (keras-hub's Gemma names), the
# last part of its variable path; LoRA accepts them as bare target names.
PROJECTION_LAYER_NAMES = {
    "query": "query",
    "key": "key",
    "value": "value",
    "output": "attention_output",
    "gate": "ffw_gating",
    "up": "ffw_gating_2",
    "down": "ffw_linear",
}

# Sharding of each projection kernel and table, with "model" / "data" axis
# placeholders: heads and the MLP width over "model", the other matrix
# dimension over "data" (see `keras_encdec.models.layout_map`).
SHARDING = {
    "query": ("data", "model", None),
    "key": ("data", "model", None),
    "value": ("data", "model", None),
    "output": ("model", None, "data"),
    "gate": ("data", "model"),
    "up": ("data", "model"),
    "down": ("model", "data"),
    "embedding": ("model", "data"),
    "lm_head": ("data", "model"),
}


def split_role(role):
    """`"mlp.gate"` -> `("mlp", "gate")`; `"final_norm"` -> `(None, ...)`.

    Args:
        role: str. A role name.

    Returns:
        `(sublayer or None, weight)`.
    """
    sublayer, _, weight = role.partition(".")
    if sublayer in SUBLAYERS and weight:
        return sublayer, weight
    return None, role


def is_projection(role):
    """Whether `role` is a block projection kernel (a LoRA candidate)."""
    sublayer, weight = split_role(role)
    if sublayer == MLP:
        return weight in MLP_PROJECTIONS
    return sublayer is not None and weight in ATTENTION_PROJECTIONS


def sublayer_roles(sublayer, weights):
    """Prefixes a sublayer's `{weight: variable}` with `"<sublayer>."`."""
    return {f"{sublayer}.{name}": variable for name, variable in weights.items()}


def sandwich_roles(sublayer, pre_norm, post_norm):
    """The `pre_norm` / `post_norm` roles of one sandwich-normed sublayer."""
    return sublayer_roles(
        sublayer, {"pre_norm": pre_norm.scale, "post_norm": post_norm.scale}
    )


def projection_kernel(dense):
    """The kernel variable of an `EinsumDense` (not LoRA's merged view)."""
    return dense._kernel


def embedding_roles(layer):
    """`{role: variable}` of a token table: `embedding`, plus `lm_head`
    when untied, or the layer's own `weight_roles()` when it declares
    them (T5Gemma 2's table adds `embedding.eoi`)."""
    if hasattr(layer, "weight_roles"):
        return layer.weight_roles()
    roles = {"embedding": layer.embeddings}
    if getattr(layer, "tie_weights", True) is False:
        roles["lm_head"] = layer.reverse_embeddings
    return roles


def model_weight_roles(model):
    """Yields `(stack, layer_index, role, variable)` for every weight.

    `model` has `encoder_layers` (and `decoder_layers`) whose blocks
    declare `weight_roles()`, and `non_block_weight_roles()` yielding
    `(stack, role, variable)` (layer index `None`); a `vision` stack adds
    its blocks' roles with their index.

    Args:
        model: a backbone, e.g. `keras_encdec.models.T5GemmaBackbone`.
    """
    for stack, role, variable in model.non_block_weight_roles():
        yield stack, None, role, variable
    for stack in STACKS:
        blocks = getattr(model, f"{stack}_layers", None) or ()
        for index, block in enumerate(blocks):
            for role, variable in block.weight_roles().items():
                yield stack, index, role, variable
    vision = getattr(model, "vision_encoder", None)
    if vision is not None:
        for index, block_roles in enumerate(vision.block_weight_roles()):
            for role, variable in block_roles.items():
                yield "vision", index, role, variable


def block_weight_roles(model):
    """Yields `(stack, layer_index, role, variable)` for the block weights
    of `model` and of every model it holds (a task's backbone, a
    classifier's encoder), each block once.

    Args:
        model: a `keras.Layer` whose layers include objects with
            `encoder_layers` / `decoder_layers` lists of blocks.
    """
    seen = set()
    for layer in model._flatten_layers(include_self=True):
        for stack in STACKS:
            blocks = getattr(layer, f"{stack}_layers", None) or ()
            for index, block in enumerate(blocks):
                if id(block) in seen:
                    continue
                seen.add(id(block))
                for role, variable in block.weight_roles().items():
                    yield stack, index, role, variable
