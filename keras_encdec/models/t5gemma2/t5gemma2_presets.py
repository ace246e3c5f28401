"""The T5Gemma 2 preset registry.

`keras_encdec/presets/t5gemma2/<name>.json` files hold the published presets (metadata,
`hf://` handle and backbone config); `keras_encdec/presets/t5gemma2/<name>/` folders with
a `config.json` are embedded presets that load offline by name. Parameter
counts are computed from the configs when the registry loads (never typed),
two ways: `params` counts the shared embedding once, as this package stores
it; `params_keras_hub` counts it twice (plus a second EOI row), as keras-hub
stores and lists it. `count_parameters` equals `count_params()` of the built
backbone (tested on small configs).
"""

import json
import os

from keras_encdec.models.preset_registry import presets_root

PUBLISHED_DIR = "t5gemma2"
EMBEDDED_PRESET = "t5gemma2_tiny_random"


def count_parameters(config, keras_hub_layout=False):
    """Counts the weights of a `T5Gemma2Backbone` config, analytically.

    Per block: q/k/v/o projections, the two QK-norm scales, the gated MLP
    and four sandwich-norm scales; per stack a final norm; one token table
    and one EOI row (twice each with `keras_hub_layout`); with
    `vision_config`, the SigLIP tower (patch conv with bias, position
    table, blocks with biased projections and two layer norms, post layer
    norm) and the projector (norm scale and matmul). Nothing is allocated.

    Args:
        config: dict. `T5Gemma2Backbone` keyword arguments.
        keras_hub_layout: bool. Count the table and EOI row per stack, as
            keras-hub's `T5Gemma2Backbone` stores them. Defaults to `False`.

    Returns:
        int. The number of parameters.

    Examples:

    >>> import json, os
    >>> from keras_encdec.models.t5gemma2.t5gemma2_presets import (
    ...     T5GEMMA2_PRESETS)
    >>> config = T5GEMMA2_PRESETS["t5gemma2_4b_4b"]["config"]
    >>> count_parameters(config, keras_hub_layout=True)
    8180020080
    """
    width = config["hidden_dim"]
    total = 0
    for side in ("encoder", "decoder"):
        get = lambda name: config[f"{side}_{name}"]  # noqa: E731
        heads, kv_heads, head_dim = (
            get("num_heads"), get("num_kv_heads"), get("head_dim")
        )
        attention = 2 * width * head_dim * (heads + kv_heads) + 2 * head_dim
        block = attention + 3 * width * get("intermediate_dim") + 4 * width
        total += get("num_layers") * block + width
    tables = 2 if keras_hub_layout else 1
    total += tables * (config["vocabulary_size"] + 1) * width
    vision = config.get("vision_config")
    if vision:
        dim, mlp = vision["hidden_dim"], vision["intermediate_dim"]
        patch = vision["patch_size"]
        patches = (vision["image_size"] // patch) ** 2
        embeddings = 3 * patch * patch * dim + dim + patches * dim
        block = 4 * (dim * dim + dim) + 4 * dim + 2 * dim * mlp + mlp + dim
        total += embeddings + vision["num_layers"] * block + 2 * dim
        total += dim + dim * width  # projector
    return total


def _with_counts(entry, config):
    metadata = entry.setdefault("metadata", {})
    metadata["params"] = count_parameters(config)
    metadata["params_keras_hub"] = count_parameters(config, True)
    return entry


def _read_json(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, json.JSONDecodeError) as e:
        raise ValueError(f"Unreadable preset file '{path}': {e}.") from e


def _load_registry(root):
    """Reads every T5Gemma 2 preset under `root/t5gemma2`."""
    registry = {}
    folder = os.path.join(os.path.abspath(root), PUBLISHED_DIR)
    if not os.path.isdir(folder):
        return registry
    for name in sorted(os.listdir(folder)):
        path = os.path.join(folder, name)
        if name.endswith(".json"):
            entry = _read_json(path)
            registry[name.removesuffix(".json")] = _with_counts(
                entry, entry["config"]
            )
        elif os.path.isfile(os.path.join(path, "config.json")):
            metadata_path = os.path.join(path, "metadata.json")
            metadata = {}
            if os.path.isfile(metadata_path):
                metadata = _read_json(metadata_path)
            config = _read_json(os.path.join(path, "config.json"))["config"]
            registry[name] = _with_counts(
                {"metadata": metadata, "path": path}, config
            )
    return registry


T5GEMMA2_PRESETS = _load_registry(presets_root())
