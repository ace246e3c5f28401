"""Sharding layout of T5Gemma weights for `keras.distribution.ModelParallel`.

Megatron-style: attention heads and the MLP width go over the model axis;
the other dimension of each matrix goes over the data axis (2D / FSDP-like
sharding, as keras-hub's Gemma does). Embeddings shard the vocabulary over
the model axis and the width over the data axis. LoRA factors follow their
kernel's leading dimensions; the small `lora_kernel_b` is replicated.

A dimension sharded over an axis must be divisible by that axis' size:
e.g. on a model axis of 8, `num_kv_heads` must be a multiple of 8.
"""

import keras

# (regex over variable paths, axes) with "model" / "data" placeholders.
LAYOUT_RULES = (
    # T5Gemma: encoder_/decoder_token_embedding; T5Gemma 2: token_embedding.
    (r"(encoder_|decoder_)?token_embedding/embeddings", ("model", "data")),
    (r"decoder_token_embedding/reverse_embeddings", ("data", "model")),
    (r"attention/(query|key|value)/kernel", ("data", "model", None)),
    (r"attention/attention_output/kernel", ("model", None, "data")),
    (r"mlp/ffw_gating(_2)?/kernel", ("data", "model")),
    (r"mlp/ffw_linear/kernel", ("model", "data")),
    (r"attention/(query|key|value)/lora_kernel_a", ("data", "model", None)),
    (r"attention/attention_output/lora_kernel_a", ("model", None, None)),
    (r"mlp/ffw_gating(_2)?/lora_kernel_a", ("data", None)),
    (r"mlp/ffw_linear/lora_kernel_a", ("model", None)),
    (r"/lora_kernel_b", (None, None)),
)


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
