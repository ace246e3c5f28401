"""The T5Gemma 2 preset registry.

`presets/t5gemma2/<name>.json` files hold the published presets (metadata,
`hf://` handle and backbone config); `presets/t5gemma2/<name>/` folders with
a `config.json` are embedded presets that load offline by name. Parameter
counts are written by `tools/count_t5gemma2_params.py` from shape-only
builds.
"""

import json
import os

from keras_encdec.models.t5gemma.t5gemma_presets import PRESETS_DIR

PUBLISHED_DIR = "t5gemma2"
EMBEDDED_PRESET = "t5gemma2_tiny_random"


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
            registry[name.removesuffix(".json")] = _read_json(path)
        elif os.path.isfile(os.path.join(path, "config.json")):
            metadata_path = os.path.join(path, "metadata.json")
            metadata = {}
            if os.path.isfile(metadata_path):
                metadata = _read_json(metadata_path)
            registry[name] = {"metadata": metadata, "path": path}
    return registry


T5GEMMA2_PRESETS = _load_registry(PRESETS_DIR)
