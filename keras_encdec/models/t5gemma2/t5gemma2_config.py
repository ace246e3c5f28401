"""T5Gemma 2 configuration helpers: argument checks, the Gemma 3 layer
pattern and block construction."""

from keras_encdec.models.t5gemma.t5gemma_backbone import check_inputs
from keras_encdec.models.t5gemma.t5gemma_block import FULL_ATTENTION
from keras_encdec.models.t5gemma.t5gemma_block import LAYER_TYPES
from keras_encdec.models.t5gemma.t5gemma_block import SLIDING_ATTENTION

# Per-stack (encoder / decoder) settings, in `__init__` order.
STACK_ARGS = (
    "intermediate_dim",
    "num_layers",
    "num_heads",
    "num_kv_heads",
    "head_dim",
    "layer_types",
    "sliding_window",
    "query_pre_attn_scalar",
)
SLIDING_PATTERN = 6  # Gemma 3: five sliding blocks, then one full block.
PIXEL_VALUES = "pixel_values"


def check_t5gemma2_inputs(inputs, vision_config):
    """T5Gemma's input checks, plus `pixel_values` for vision backbones
    (optional there: without it the encoder sees text only)."""
    if isinstance(inputs, dict) and PIXEL_VALUES in inputs:
        pixels = inputs[PIXEL_VALUES]
        if vision_config is None:
            raise ValueError(
                "This backbone is text-only (vision_config=None) but received "
                "`pixel_values`. Load the checkpoint with its vision tower."
            )
        size = vision_config["image_size"]
        shape = tuple(getattr(pixels, "shape", ()))
        if len(shape) != 5 or tuple(shape[2:]) != (size, size, 3):
            raise ValueError(
                "`pixel_values` must have shape [batch, num_images, "
                f"{size}, {size}, 3] (channels last). Received: shape={shape}."
            )
        inputs = {k: v for k, v in inputs.items() if k != PIXEL_VALUES}
    check_inputs(inputs)


def gemma3_layer_types(num_layers):
    """Gemma 3's pattern: 5 sliding blocks, then 1 full, repeated."""
    return [
        SLIDING_ATTENTION if (i + 1) % SLIDING_PATTERN else FULL_ATTENTION
        for i in range(num_layers)
    ]


def check_positive_int(name, value):
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(
            f"`{name}` must be a positive int. Received: {name}={value!r}."
        )


def check_stack(side, stack):
    for name in ("intermediate_dim", "num_layers", "num_heads", "num_kv_heads",
                 "head_dim"):
        check_positive_int(f"{side}_{name}", stack[name])
    if stack["num_heads"] % stack["num_kv_heads"]:
        raise ValueError(
            f"`{side}_num_heads` must be a multiple of `{side}_num_kv_heads`. "
            f"Received: {stack['num_heads']} and {stack['num_kv_heads']}."
        )
    if stack["layer_types"] is None:
        stack["layer_types"] = gemma3_layer_types(stack["num_layers"])
    stack["layer_types"] = list(stack["layer_types"])
    if len(stack["layer_types"]) != stack["num_layers"]:
        raise ValueError(
            f"`{side}_layer_types` needs one entry per layer. Received: "
            f"{len(stack['layer_types'])} entries for "
            f"{side}_num_layers={stack['num_layers']}."
        )
    bad = sorted(set(stack["layer_types"]) - set(LAYER_TYPES))
    if bad:
        raise ValueError(
            f"Unknown `{side}_layer_types` {bad}. Expected each to be one of "
            f"{LAYER_TYPES}."
        )
    return stack


def make_layer(layer_cls, stack, index, shared, rope, hidden_dim, side):
    layer_type = stack["layer_types"][index]
    full = layer_type == FULL_ATTENTION
    return layer_cls(
        hidden_dim=hidden_dim,
        intermediate_dim=stack["intermediate_dim"],
        num_heads=stack["num_heads"],
        num_kv_heads=stack["num_kv_heads"],
        head_dim=stack["head_dim"],
        layer_type=layer_type,
        sliding_window=stack["sliding_window"],
        query_pre_attn_scalar=stack["query_pre_attn_scalar"],
        rope_max_wavelength=rope["full"] if full else rope["local"],
        rope_scaling_factor=rope["scaling"] if full else 1.0,
        name=f"{side}_layer_{index}",
        **shared,
    )
