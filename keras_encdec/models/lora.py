"""LoRA for T5Gemma: target selection, adapter-only files, and merging.

A LoRA target is one `EinsumDense` projection, named by its path in the
backbone, e.g. `"decoder_layer_3/cross_attention/query"` or
`"encoder_layer_0/mlp/ffw_linear"`. `resolve_lora_targets` turns a user
`target` (a group name, aliases such as `"decoder.cross_attention"`, or glob
patterns) into a sorted list of such paths. Groups and whole stacks are
selected by weight role (`keras_encdec.weight_roles`): every block
projection the blocks declare, whatever its attribute or layer name.

Adapter files (`*.lora.h5`) hold only the factors `lora_kernel_a` /
`lora_kernel_b` of each target plus `rank`, `alpha` and the target list, so
a base model plus an adapter file rebuilds the fine-tuned model exactly.
"""

import fnmatch
import json
import logging
import os

import keras
import numpy as np

from keras_encdec import weight_roles
from keras_encdec.errors import CheckpointError
from keras_encdec.errors import TargetExistsError
from keras_encdec.errors import WeightMismatchError
from keras_encdec.utils import atomic_save

logger = logging.getLogger(__name__)

# keras-hub's layer names of the projections, accepted as bare targets.
ATTENTION_PROJECTIONS = tuple(
    weight_roles.PROJECTION_LAYER_NAMES[name]
    for name in weight_roles.ATTENTION_PROJECTIONS
)
MLP_PROJECTIONS = tuple(
    weight_roles.PROJECTION_LAYER_NAMES[name]
    for name in weight_roles.MLP_PROJECTIONS
)
SIDES = weight_roles.STACKS
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


def projection_roles(model):
    """Returns `{path: (stack, role)}` for every block projection of `model`
    (a backbone, an encoder model or a task holding one), as the blocks
    declare them in `weight_roles()`."""
    roles = {}
    for stack, _, role, variable in weight_roles.block_weight_roles(model):
        if weight_roles.is_projection(role):
            roles[variable.path.rsplit("/", 1)[0]] = (stack, role)
    return roles


def _role_matches(item, path, roles):
    """Whether a group or stack name `item` selects projection `path`."""
    if path not in roles:
        return False
    stack, role = roles[path]
    if item in SIDES:
        return stack == item
    sublayer, _ = weight_roles.split_role(role)
    return item != "attention" or sublayer != weight_roles.MLP


def _patterns(item):
    """Glob patterns over projection paths for one `target` list item
    (groups and stack names are matched by role instead)."""
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
    # A bare layer name, as keras-hub passes them, nested or top-level (a
    # task's head, e.g. "score").
    return [f"*/{item}", item]


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
    roles = projection_roles(backbone)
    selected = set()
    for item in items:
        if item in TARGET_GROUPS or item in SIDES:
            matches = {p for p in layers if _role_matches(item, p, roles)}
        else:
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


def save_lora_weights(backbone, filepath, overwrite=False):
    """Writes only the adapter factors (and their settings) to `filepath`.

    Layout: group `lora` with attributes `rank`, `alpha` and `targets` (JSON
    list of paths); one subgroup per target path (`/` written as `|`) with
    datasets `lora_kernel_a` and `lora_kernel_b`. The file is written to a
    temporary sibling and moved into place in one step; an existing adapter
    file is replaced, any other existing file is refused (`TargetExistsError`)
    unless `overwrite=True`.
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
    if os.path.exists(filepath) and not overwrite and not _is_adapter(filepath):
        raise TargetExistsError(
            f"'{filepath}' exists and is not a keras-encdec adapter file. "
            "Choose another path, or pass `overwrite=True` to replace it."
        )
    first = next(iter(layers.values()))
    needed = atomic_save.variables_nbytes(
        [getattr(layer, name) for layer in layers.values()
         for name in ("lora_kernel_a", "lora_kernel_b")]
    )
    with atomic_save.atomic_file(filepath, needed) as staging, h5py.File(
        staging, "w"
    ) as f:
        group = f.create_group("lora")
        group.attrs["rank"] = first.lora_rank
        group.attrs["alpha"] = first.lora_alpha
        group.attrs["targets"] = json.dumps(sorted(layers))
        for path, layer in sorted(layers.items()):
            inner = group.create_group(path.replace("/", "|"))
            for name in ("lora_kernel_a", "lora_kernel_b"):
                value = keras.ops.convert_to_numpy(getattr(layer, name))
                inner.create_dataset(name, data=value)


def _is_adapter(filepath):
    import h5py

    try:
        with h5py.File(filepath, "r") as f:
            return "lora" in f and "targets" in f["lora"].attrs
    except OSError:
        return False


def load_lora_weights(backbone, filepath):
    """Loads an adapter file, enabling LoRA with its settings if needed.

    Every target of the file must be a projection of `backbone` with the
    same factor shapes; otherwise nothing is loaded and a
    `WeightMismatchError` names the first difference.
    """
    import h5py

    try:
        handle = h5py.File(filepath, "r")
    except OSError as e:
        raise CheckpointError(
            f"Could not open the adapter file '{filepath}': {e}."
        ) from e
    with handle as f:
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
        _check_adapter_fits(backbone, group, targets, rank, filepath)
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


def _check_adapter_fits(backbone, group, targets, rank, filepath):
    """Raises unless every adapter target exists here with matching shapes
    (an adapter from a deeper or wider model must not half-apply)."""
    projections = projection_layers(backbone)
    missing = [path for path in targets if path not in projections]
    if missing:
        raise WeightMismatchError(
            f"The adapter '{filepath}' targets {len(missing)} projections "
            f"this model does not have, e.g. {missing[:3]}. Received: "
            f"{len(targets)} targets. Expected an adapter saved from a model "
            "with the same architecture."
        )
    for path in targets:
        layer = projections[path]
        if getattr(layer, "quantization_mode", None) == "int4":
            continue  # Packed kernel shape; `assign` checks the factors.
        kernel_shape = tuple(layer._kernel.shape)
        expected = {
            "lora_kernel_a": kernel_shape[:-1] + (rank,),
            "lora_kernel_b": (rank, kernel_shape[-1]),
        }
        inner = group[path.replace("/", "|")]
        for name, shape in expected.items():
            received = tuple(inner[name].shape)
            if received != shape:
                raise WeightMismatchError(
                    f"The adapter '{filepath}' does not fit '{path}': "
                    f"{name} has shape {received}. Expected {shape} for this "
                    "model."
                )


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
