"""LoRA for T5Gemma: target selection, adapter-only files, and merging.

A LoRA target is one `EinsumDense` projection, named by its path in the
backbone, e.g. `"decoder_layer_3/cross_attention/query"` or
`"encoder_layer_0/mlp/ffw_linear"`. `resolve_lora_targets` turns a user
`target` (a group name, aliases such as `"decoder.cross_attention"`, or glob
patterns) into a sorted list of such paths.

Adapter files (`*.lora.h5`) hold only the factors `lora_kernel_a` /
`lora_kernel_b` of each target plus `rank`, `alpha` and the target list, so
a base model plus an adapter file rebuilds the fine-tuned model exactly.
"""

import fnmatch
import json
import logging

import keras
import numpy as np

logger = logging.getLogger(__name__)

ATTENTION_PROJECTIONS = ("query", "key", "value", "attention_output")
MLP_PROJECTIONS = ("ffw_gating", "ffw_gating_2", "ffw_linear")
SIDES = ("encoder", "decoder")
# "merged_attention": the decoder attention of T5Gemma 2 (self + cross).
SUBLAYERS = ("self_attention", "cross_attention", "merged_attention", "mlp")
TARGET_GROUPS = ("attention", "attention+mlp", "all")
ADAPTER_SUFFIX = ".lora.h5"


def projection_layers(backbone):
    """Returns `{path: EinsumDense}` for every projection of the backbone.

    The path is the kernel's variable path without `/kernel`, e.g.
    `"encoder_layer_0/self_attention/query"`.
    """
    layers = {}
    for layer in backbone._flatten_layers(include_self=False):
        if isinstance(layer, keras.layers.EinsumDense) and layer.built:
            path = layer._kernel.path
            layers[path.rsplit("/", 1)[0]] = layer
    return layers


def _patterns(item):
    """Glob patterns over projection paths for one `target` list item."""
    if item in TARGET_GROUPS:
        projections = ATTENTION_PROJECTIONS
        if item != "attention":
            projections = projections + MLP_PROJECTIONS
        return [f"*/{name}" for name in projections if name]
    if "/" in item or any(char in item for char in "*?["):
        return [item]
    if "." in item:  # "decoder.cross_attention[.query]"
        parts = item.split(".")
        side, sublayer = parts[0], parts[1] if len(parts) > 1 else "*"
        projection = parts[2] if len(parts) > 2 else "*"
        if side not in SIDES + ("*",) or sublayer not in SUBLAYERS + ("*",):
            raise ValueError(
                f"Unknown LoRA target alias. Received: {item!r}. Expected "
                "'<side>.<sublayer>[.<projection>]' with side in "
                f"{SIDES} and sublayer in {SUBLAYERS}, e.g. "
                "'decoder.cross_attention' or 'encoder.mlp.ffw_linear'."
            )
        return [f"{side}_layer_*/{sublayer}/{projection}"]
    if item in SIDES:
        return [f"{item}_layer_*/*/*"]
    return [f"*/{item}"]  # a bare layer name, as keras-hub passes them


def resolve_lora_targets(backbone, target="attention"):
    """Lists the projection paths that `target` selects.

    Args:
        backbone: `keras_encdec.models.T5GemmaBackbone`. A built backbone.
        target: str or list of str. `"attention"` (query, key, value and
            attention_output of every self- and cross-attention, encoder and
            decoder), `"attention+mlp"` (plus ffw_gating, ffw_gating_2 and
            ffw_linear), `"all"` (every projection; today the same as
            `"attention+mlp"`: embeddings and norms stay frozen), or a list
            whose items are group names, aliases `"<side>[.<sublayer>
            [.<projection>]]"` (`"decoder.cross_attention"`,
            `"encoder.mlp.ffw_linear"`, `"decoder"`), bare layer names as
            keras-hub uses them (`"query"`, `"value"`) or globs over paths
            (`"decoder_layer_1*/self_attention/*"`). Defaults to
            `"attention"`.

    Returns:
        Sorted list of paths such as `"decoder_layer_0/cross_attention/key"`.

    Examples:

    >>> from keras_encdec.models import T5GemmaBackbone
    >>> backbone = T5GemmaBackbone.from_preset("t5gemma_tiny_random")
    >>> paths = resolve_lora_targets(backbone, ["decoder.cross_attention.query"])
    >>> paths[0]
    'decoder_layer_0/cross_attention/query'
    """
    items = [target] if isinstance(target, str) else list(target)
    if not items or not all(isinstance(item, str) for item in items):
        raise TypeError(
            "`target` must be a str or a non-empty list of str. Received: "
            f"target={target!r}."
        )
    layers = projection_layers(backbone)
    selected = set()
    for item in items:
        matches = {
            path
            for pattern in _patterns(item)
            for path in layers
            if fnmatch.fnmatchcase(path, pattern)
        }
        if not matches:
            raise ValueError(
                f"LoRA target {item!r} matches no projection. Paths look "
                f"like {sorted(layers)[:3]}; groups are {TARGET_GROUPS}."
            )
        selected |= matches
    return sorted(selected)


def lora_layers(backbone):
    """Returns `{path: layer}` for the projections with LoRA enabled."""
    return {
        path: layer
        for path, layer in projection_layers(backbone).items()
        if layer.lora_enabled
    }


def enable_lora(backbone, rank, target="attention", alpha=None):
    """Freezes the backbone and adds rank-`rank` adapters to `target`.

    See `T5GemmaBackbone.enable_lora`, which calls this. Returns the number
    of trainable parameters.
    """
    if not isinstance(rank, int) or isinstance(rank, bool) or rank < 1:
        raise ValueError(f"`rank` must be a positive int. Received: {rank!r}.")
    if alpha is not None and (not isinstance(alpha, (int, float)) or alpha <= 0):
        raise ValueError(f"`alpha` must be positive. Received: {alpha!r}.")
    if lora_layers(backbone):
        raise ValueError(
            "LoRA is already enabled on this backbone. Call `merge_lora()` "
            "first, or rebuild the model, to enable it again."
        )
    paths = resolve_lora_targets(backbone, target)
    layers = projection_layers(backbone)
    backbone.trainable = True
    for layer in backbone._flatten_layers(include_self=False):
        layer.trainable = False
    for path in paths:
        layers[path].trainable = True
        layers[path].enable_lora(rank, lora_alpha=alpha)
        for variable in layers[path].weights:
            if "float" not in str(variable.dtype):
                # int8 base kernels and their scales (QLoRA) stay frozen.
                variable.trainable = False
    # keras-hub's bookkeeping, so its helpers see LoRA as enabled.
    backbone._lora_rank = rank
    backbone._lora_enabled_layers = paths
    count = trainable_parameter_count(backbone)
    logger.info(
        "LoRA rank %d on %d projections: %d trainable parameters.",
        rank,
        len(paths),
        count,
    )
    return count


def trainable_parameter_count(model):
    """Total size of `model.trainable_weights`."""
    return int(sum(np.prod(v.shape) for v in model.trainable_weights))


def save_lora_weights(backbone, filepath):
    """Writes only the adapter factors (and their settings) to `filepath`.

    Layout: group `lora` with attributes `rank`, `alpha` and `targets` (JSON
    list of paths); one subgroup per target path (`/` written as `|`) with
    datasets `lora_kernel_a` and `lora_kernel_b`.
    """
    import h5py

    layers = lora_layers(backbone)
    if not layers:
        raise ValueError(
            "There are no LoRA-enabled layers in this model. Call "
            "`enable_lora(rank)` first."
        )
    if not str(filepath).endswith(ADAPTER_SUFFIX):
        raise ValueError(
            f"The filename must end in `{ADAPTER_SUFFIX}`. Received: "
            f"filepath={filepath}."
        )
    first = next(iter(layers.values()))
    with h5py.File(filepath, "w") as f:
        group = f.create_group("lora")
        group.attrs["rank"] = first.lora_rank
        group.attrs["alpha"] = first.lora_alpha
        group.attrs["targets"] = json.dumps(sorted(layers))
        for path, layer in sorted(layers.items()):
            inner = group.create_group(path.replace("/", "|"))
            for name in ("lora_kernel_a", "lora_kernel_b"):
                value = keras.ops.convert_to_numpy(getattr(layer, name))
                inner.create_dataset(name, data=value)


def load_lora_weights(backbone, filepath):
    """Loads an adapter file, enabling LoRA with its settings if needed."""
    import h5py

    with h5py.File(filepath, "r") as f:
        if "lora" not in f or "targets" not in f["lora"].attrs:
            raise ValueError(
                f"'{filepath}' is not a keras-encdec adapter file (no "
                "`lora` group with `targets`). Write it with "
                "`save_lora_weights`."
            )
        group = f["lora"]
        rank = int(group.attrs["rank"])
        alpha = float(group.attrs["alpha"])
        targets = json.loads(group.attrs["targets"])
        layers = lora_layers(backbone)
        if not layers:
            enable_lora(backbone, rank, target=targets, alpha=alpha)
            layers = lora_layers(backbone)
        elif sorted(layers) != targets or any(
            layer.lora_rank != rank for layer in layers.values()
        ):
            raise ValueError(
                f"The adapter in '{filepath}' has rank={rank} on "
                f"{len(targets)} targets, but this model has LoRA on "
                f"{len(layers)} layers with a different rank or targets. "
                "Load it into a model without LoRA enabled."
            )
        for path, layer in layers.items():
            inner = group[path.replace("/", "|")]
            layer.lora_alpha = alpha
            layer.lora_kernel_a.assign(inner["lora_kernel_a"][()])
            layer.lora_kernel_b.assign(inner["lora_kernel_b"][()])


def merge_lora(backbone):
    """Folds every adapter into its base kernel and removes the adapters.

    Float kernels become `kernel + (alpha / rank) * A @ B` in the kernel's
    dtype; int8/int4 kernels are dequantized, merged and requantized (Keras'
    `_get_kernel_with_merged_lora`). Afterwards the backbone is a plain,
    fully trainable model. Returns the number of merged layers.
    """
    layers = lora_layers(backbone)
    for layer in layers.values():
        kernel, scale, zero = layer._get_kernel_with_merged_lora()
        layer._kernel.assign(keras.ops.cast(kernel, layer._kernel.dtype))
        if scale is not None:
            layer.kernel_scale.assign(scale)
        if zero is not None:
            layer.kernel_zero.assign(zero)
        for name in ("lora_kernel_a", "lora_kernel_b"):
            layer._untrack_variable(getattr(layer, name))
            object.__delattr__(layer, name)
        layer.lora_enabled = False
        layer.lora_rank = None
        if "float" in str(layer._kernel.dtype):  # int8 kernels stay frozen.
            layer._kernel.trainable = True
    for layer in backbone._flatten_layers(include_self=True):
        layer.trainable = True
        for name in ("train_function", "test_function", "predict_function"):
            if getattr(layer, name, None) is not None:
                setattr(layer, name, None)
    backbone._lora_enabled_layers = []
    return len(layers)
