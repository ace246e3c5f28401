"""The preset registry: published T5Gemma checkpoints and embedded presets.

Each `presets/t5gemma/<name>.json` file holds one published preset: its
metadata, its transformers (`hf://`) and keras-hub (`kaggle://`) handles and
its backbone config. Folders under `presets/` that hold a `config.json` are
embedded presets that load offline by name. Parameter counts are computed
from the configs (`count_parameters`), never typed.
"""

import json
import os

PRESETS_DIR = os.environ.get(
    "KERAS_ENCDEC_PRESETS_DIR",
    os.path.join(os.path.dirname(__file__), "..", "..", "..", "presets"),
)
PUBLISHED_DIR = "t5gemma"


def _load_registry(root):
    registry = {}
    root = os.path.abspath(root)
    if not os.path.isdir(root):
        return registry
    published = os.path.join(root, PUBLISHED_DIR)
    if os.path.isdir(published):
        for file_name in sorted(os.listdir(published)):
            if file_name.endswith(".json"):
                with open(os.path.join(published, file_name)) as f:
                    entry = json.load(f)
                registry[file_name.removesuffix(".json")] = entry
    for name in sorted(os.listdir(root)):
        folder = os.path.join(root, name)
        if name != PUBLISHED_DIR and os.path.isfile(
            os.path.join(folder, "config.json")
        ):
            metadata_path = os.path.join(folder, "metadata.json")
            metadata = {}
            if os.path.isfile(metadata_path):
                with open(metadata_path) as f:
                    metadata = json.load(f)
            registry[name] = {"metadata": metadata, "path": folder}
    return registry


T5GEMMA_PRESETS = _load_registry(PRESETS_DIR)
EMBEDDED_PRESET = "t5gemma_tiny_random"
