"""Sharding layout of T5Gemma weights for `keras.distribution.ModelParallel`.

Megatron-style: attention heads and the MLP width go over the model axis;
the other dimension of each matrix goes over the data axis (2D / FSDP-like
sharding, as keras-hub's Gemma does). Embeddings shard the vocabulary over
the model axis and the width over the data axis. LoRA factors follow their
kernel's leading dimensions; the small `lora_kernel_b` is replicated.

A dimension sharded over an axis must be divisible by that axis' size:
e.g. on a model axis of 8, `num_kv_heads` must be a multiple of 8.

The rules are built from the weight roles (`keras_encdec.models.
weight_roles`): each projection role's sharding (`SHARDING`) under its
Keras layer name (`PROJECTION_LAYER_NAMES`), inside any `*attention` or
`mlp` sublayer. The layout map is needed before a model exists (to create
the weights sharded), so it is keyed by these names, not by variables.
"""

import keras

from keras_encdec import weight_roles


def _names_pattern(names):
    """A regex for any of `names`: `"query"`, `"(query|key|value)"`, or a
    shared stem with optional suffixes (`"ffw_gating(_2)?"`)."""
    if len(names) == 1:
        return names[0]
    stem = min(names, key=len)
    if all(name.startswith(stem) for name in names):
        suffixes = [name[len(stem):] for name in names if name != stem]
        return f"{stem}({'|'.join(suffixes)})?"
    return f"({'|'.join(names)})"


def _projection_groups():
    """`[(sublayer pattern, layer names pattern, kernel axes)]`: projection
    roles grouped by sublayer kind and sharding, in role order."""
    groups = {}
    for weights, sublayer in (
        (weight_roles.ATTENTION_PROJECTIONS, "attention"),
        (weight_roles.MLP_PROJECTIONS, weight_roles.MLP),
    ):
        for weight in weights:
            key = (sublayer, weight_roles.SHARDING[weight])
            name = weight_roles.PROJECTION_LAYER_NAMES[weight]
            groups.setdefault(key, []).append(name)
    return [
        (sublayer, _names_pattern(names), axes)
        for (sublayer, axes), names in groups.items()
    ]


def layout_rules():
    """`((regex over variable paths, axes), ...)` with "model" / "data"
    placeholders. LoRA's `lora_kernel_a` follows its kernel's leading axes;
    `lora_kernel_b` is replicated."""
    groups = _projection_groups()
    return (
        # T5Gemma: encoder_/decoder_token_embedding; T5Gemma 2:
        # token_embedding.
        (
            r"(encoder_|decoder_)?token_embedding/embeddings",
            weight_roles.SHARDING["embedding"],
        ),
        (
            r"decoder_token_embedding/reverse_embeddings",
            weight_roles.SHARDING["lm_head"],
        ),
        *(
            (f"{sublayer}/{names}/kernel", axes)
            for sublayer, names, axes in groups
        ),
        *(
            (f"{sublayer}/{names}/lora_kernel_a", axes[:-1] + (None,))
            for sublayer, names, axes in groups
        ),
        (r"/lora_kernel_b", (None, None)),
        # T5Gemma 2's vision tower (keras-hub's SigLIP blocks: 2D Dense
        # kernels `[in, out]`) and projector: column-parallel into the
        # heads / MLP width, row-parallel out of them. The patch convolution
        # and position table stay replicated.
        *(
            (f"vision_encoder/.*/{name}/kernel", weight_roles.SHARDING[kind])
            for name, kind in (
                ("(query|key|value)_proj", "up"),
                ("out_proj", "down"),
                ("mlp_dense_1", "up"),
                ("mlp_dense_2", "down"),
            )
        ),
        (r"vision_encoder/projector/projection", weight_roles.SHARDING["up"]),
    )


LAYOUT_RULES = layout_rules()


def get_layout_map(
    device_mesh, model_parallel_dim_name="model", data_parallel_dim_name="batch"
):
    """Builds the `keras.distribution.LayoutMap`; see
    `T5GemmaBackbone.get_layout_map`."""
    if not isinstance(device_mesh, keras.distribution.DeviceMesh):
        raise TypeError(
            "`device_mesh` must be a `keras.distribution.DeviceMesh`. "
            f"Received: {type(device_mesh).__name__}."
        )
    for name in (model_parallel_dim_name, data_parallel_dim_name):
        if name not in device_mesh.axis_names:
            raise ValueError(
                f"Axis {name!r} is not in the device mesh. Received: "
                f"axis_names={list(device_mesh.axis_names)}."
            )
    rename = {"model": model_parallel_dim_name, "data": data_parallel_dim_name}
    layout_map = keras.distribution.LayoutMap(device_mesh)
    for pattern, axes in LAYOUT_RULES:
        # Keras matches keys with `re.fullmatch` against variable paths.
        layout_map[".*" + pattern] = tuple(rename.get(axis) for axis in axes)
    return layout_map
