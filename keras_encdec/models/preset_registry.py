"""Preset registries read from the package data in `keras_encdec/presets/`.

The presets ship inside the package (wheel and source alike) and are read
with `importlib.resources`, so an installed package finds them wherever it
lives. Two kinds of entries:

- published checkpoints: `presets/<family>/<family>_<pair>.json`, one file
  per size pair holding the shared backbone config, a description and the
  list of variants; each variant becomes one preset name
  `<family>_<pair>_<variant>` with its transformers (`hf://`) and keras-hub
  (`kaggle://`) handles;
- embedded presets: folders `presets/<name>/` holding a keras-encdec preset
  (`config.json`, weights, tokenizer assets) that load offline by name.
  A folder belongs to the family whose backbone class its `config.json`
  names.

Parameter counts are computed from the configs when a registry loads,
never typed.
"""

import importlib.resources
import json
import os

PACKAGE = "keras_encdec"


def presets_root():
    """The folder holding the shipped presets, as a filesystem path.

    Raises:
        ValueError: when the package data is missing (a broken install).
    """
    root = importlib.resources.files(PACKAGE) / "presets"
    path = os.fspath(root) if isinstance(root, os.PathLike) else None
    if path is None or not os.path.isdir(path):
        raise ValueError(
            f"The preset data of {PACKAGE} is missing: expected a folder at "
            f"{root}. Reinstall the package (`pip install keras-encdec`); "
            "presets ship as package data."
        )
    return path


def read_json(path):
    """Reads a JSON file; raises `ValueError` naming the file if it fails."""
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, json.JSONDecodeError) as e:
        raise ValueError(f"Unreadable preset file '{path}': {e}.") from e


def expand_published(family, pair, entry, official_name, hf_prefix,
                     kaggle_model):
    """The preset entries of one size-pair file, one per variant.

    Args:
        family: str. File-name prefix, e.g. `"t5gemma"`.
        pair: str. The size pair, e.g. `"2b_2b"`.
        entry: dict. The file: `description`, `config`, optionally
            `variants` (variant name -> description tail; without it the
            file is one preset `<family>_<pair>`) and `kaggle_version`
            (defaults to 1).
        official_name: str. Metadata `official_name`, e.g. `"T5Gemma"`.
        hf_prefix: str. Hub repository prefix, e.g. `"google/t5gemma-"`.
        kaggle_model: str. Kaggle model path, e.g. `"keras/t5-gemma"`.

    Returns:
        dict. Preset name -> `{metadata, hf_handle, kaggle_handle, config}`.

    Examples:

    >>> out = expand_published(
    ...     "t5gemma", "s_s",
    ...     {"description": "S-S", "variants": {"ul2": "pretrained with UL2."},
    ...      "config": {}},
    ...     "T5Gemma", "google/t5gemma-", "keras/t5-gemma")
    >>> out["t5gemma_s_s_ul2"]["hf_handle"]
    'hf://google/t5gemma-s-s-ul2'
    """
    for key in ("description", "config"):
        if key not in entry:
            raise ValueError(
                f"Preset file for {family}_{pair} lacks the key {key!r}. "
                "Expected keys: description, config and optionally variants."
            )
    presets = {}
    version = entry.get("kaggle_version", 1)
    for variant, tail in (entry.get("variants") or {None: None}).items():
        suffix = pair if variant is None else f"{pair}_{variant}"
        name = f"{family}_{suffix}"
        hf_name = hf_prefix + suffix.replace("_", "-")
        description = entry["description"]
        if variant is not None:
            description = f"{description}, {tail}"
        presets[name] = {
            "metadata": {
                "description": description,
                "official_name": official_name,
                "path": family,
                "model_card": f"https://huggingface.co/{hf_name}",
            },
            "hf_handle": f"hf://{hf_name}",
            "kaggle_handle": f"kaggle://{kaggle_model}/keras/{name}/{version}",
            "config": entry["config"],
        }
    return presets


def load_registry(family, backbone_class_name, count_parameters, *,
                  official_name, hf_prefix, kaggle_model):
    """Reads one family's published and embedded presets.

    Args:
        family: str. Sub-folder and name prefix, e.g. `"t5gemma"`.
        backbone_class_name: str. Embedded presets whose `config.json` names
            this class belong to the family.
        count_parameters: callable. Backbone config -> parameter count.
        official_name, hf_prefix, kaggle_model: str. See
            `expand_published`.

    Returns:
        dict. Preset name -> entry; embedded entries hold `"path"`.

    Raises:
        ValueError: when no preset is found (an empty registry is a broken
            install, not an empty result).
    """
    root = presets_root()
    registry = {}
    published = os.path.join(root, family)
    prefix = family + "_"
    if os.path.isdir(published):
        for file_name in sorted(os.listdir(published)):
            if not (file_name.startswith(prefix)
                    and file_name.endswith(".json")):
                continue
            pair = file_name[len(prefix):-len(".json")]
            entry = read_json(os.path.join(published, file_name))
            for name, preset in expand_published(
                family, pair, entry, official_name, hf_prefix, kaggle_model
            ).items():
                preset["metadata"]["params"] = count_parameters(
                    preset["config"]
                )
                registry[name] = preset
    for name in sorted(os.listdir(root)):
        folder = os.path.join(root, name)
        config_path = os.path.join(folder, "config.json")
        if not os.path.isfile(config_path):
            continue
        config = read_json(config_path)
        if config.get("class_name") != backbone_class_name:
            continue
        metadata_path = os.path.join(folder, "metadata.json")
        metadata = read_json(metadata_path) if os.path.isfile(
            metadata_path) else {}
        metadata["params"] = count_parameters(config["config"])
        registry[name] = {"metadata": metadata, "path": folder}
    if not registry:
        raise ValueError(
            f"No {official_name} presets found under '{root}'. Expected "
            f"'{family}/{prefix}<pair>.json' files or embedded preset "
            "folders: the package data is incomplete; reinstall the package."
        )
    return registry
