"""`from_preset` resolution for every source keras-encdec accepts.

`from_preset(x)` takes, in this order:

1. a preset name from `keras_encdec` presets (the embedded tiny preset loads
   offline; published names resolve to their hub handle);
2. a local folder: our own `save_to_preset` output, a transformers T5Gemma
   checkpoint (config.json + safetensors [+ tokenizer.model]), or a
   keras-hub `T5GemmaBackbone` / `T5Gemma2Backbone` `save_to_preset` folder;
3. an `hf://owner/name` or `kaggle://owner/model/keras/variant` handle,
   downloaded and then loaded as a local folder.

Formats are recognised from `config.json` alone. Only JSON, safetensors and
`.weights.h5` files are read: nothing from a checkpoint is executed.
"""

import contextlib
import difflib
import json
import logging
import os

from keras_encdec.convert.safetensors_io import CheckpointError
from keras_encdec.convert.safetensors_io import SafetensorsReader
from keras_encdec.errors import KerasEncDecError
from keras_encdec.errors import PresetDownloadError  # noqa: F401 (public)

logger = logging.getLogger(__name__)

KERAS_ENCDEC = "keras_encdec"
TRANSFORMERS = "transformers"
KERAS_HUB = "keras_hub"
HF_PREFIX = "hf://"
KAGGLE_PREFIX = "kaggle://"


def download(handle):
    """Downloads an `hf://` or `kaggle://` handle; returns the local folder."""
    try:
        if handle.startswith(HF_PREFIX):
            from huggingface_hub import snapshot_download

            return snapshot_download(
                handle.removeprefix(HF_PREFIX),
                allow_patterns=["*.json", "*.safetensors", "tokenizer.model"],
            )
        import kagglehub

        return kagglehub.model_download(handle.removeprefix(KAGGLE_PREFIX))
    except Exception as e:  # Any network or auth failure ends here.
        raise PresetDownloadError(
            f"Could not download preset '{handle}' ({type(e).__name__}: {e}). "
            "This machine may be offline or the handle may need credentials. "
            "To load without a download, fetch the files elsewhere and pass "
            "the local folder instead: `from_preset('/path/to/folder')` (a "
            "transformers checkpoint folder, a keras-hub preset folder or a "
            "keras-encdec preset folder)."
        ) from e


def resolve(preset, registry):
    """Returns `(format, local_folder)` for any accepted preset value.

    Args:
        preset: str. A preset name, a local folder or a hub handle.
        registry: mapping of preset names to metadata dicts holding `"path"`
            (embedded) or `"hf_handle"` / `"kaggle_handle"`.
    """
    if not isinstance(preset, (str, os.PathLike)):
        raise TypeError(
            "A preset must be a name, a folder path or a hub handle string. "
            f"Received: {type(preset).__name__} {preset!r}."
        )
    preset = os.fspath(preset)
    if preset in registry:
        entry = registry[preset]
        if "path" in entry:
            preset = entry["path"]
        else:
            preset = entry.get("hf_handle") or entry["kaggle_handle"]
    if preset.startswith((HF_PREFIX, KAGGLE_PREFIX)):
        preset = download(preset)
    if not os.path.isdir(preset):
        close = difflib.get_close_matches(
            os.path.basename(preset.rstrip("/\\")), registry, n=4, cutoff=0.6
        )
        hint = f"Did you mean {' or '.join(map(repr, close))}? " if close else ""
        raise ValueError(
            f"Unknown preset {preset!r}: it is not a keras-encdec preset name, "
            "not an existing folder, and not an hf:// or kaggle:// handle. "
            f"{hint}Known names ({len(registry)}, also in "
            f"`T5GemmaBackbone.presets`): {', '.join(sorted(registry))}."
        )
    fmt = detect_format(preset)
    if fmt != TRANSFORMERS:  # Transformers folders: `SafetensorsReader`.
        _check_one_weights_file(preset)
    return fmt, preset


def _check_one_weights_file(folder):
    """Raises when a Keras preset folder holds both a single weights file
    and a sharded one (keras-hub would silently load the sharded one)."""
    single, sharded = "model.weights.h5", "model.weights.json"
    if all(os.path.exists(os.path.join(folder, n)) for n in (single, sharded)):
        raise CheckpointError(
            f"'{folder}' holds both '{single}' and '{sharded}', two different "
            "sets of weights. Expected one of them: remove the stale one "
            "(e.g. left by an older save into this folder)."
        )


def detect_format(folder):
    """Tells which format a local preset folder holds, from config.json."""
    path = os.path.join(folder, "config.json")
    try:
        with open(path) as f:
            config = json.load(f)
    except OSError as e:
        raise CheckpointError(
            f"'{folder}' has no config.json, so it is not a preset folder."
        ) from e
    except json.JSONDecodeError as e:
        raise CheckpointError(f"Corrupt JSON in '{path}': {e}.") from e
    if config.get("model_type") in ("t5gemma", "t5gemma2"):
        return TRANSFORMERS
    module = str(config.get("module", ""))
    registered = str(config.get("registered_name", ""))
    if registered.startswith(KERAS_ENCDEC) or module.startswith(KERAS_ENCDEC):
        return KERAS_ENCDEC
    if module.startswith("keras_hub") and config.get("class_name") in (
        "T5GemmaBackbone",
        "T5Gemma2Backbone",
    ):
        return KERAS_HUB
    raise CheckpointError(
        f"'{path}' is not a T5Gemma preset. Received: "
        f"model_type={config.get('model_type')!r}, "
        f"class_name={config.get('class_name')!r}, module={module!r}. "
        "Expected a transformers T5Gemma config (model_type 't5gemma' or "
        "'t5gemma2'), a keras-hub T5GemmaBackbone or T5Gemma2Backbone preset "
        "or a keras-encdec preset."
    )


@contextlib.contextmanager
def naming_errors(folder):
    """Turns an unreadable-file `OSError` (h5py reports a truncated or
    corrupt `.weights.h5` without its name) into a `CheckpointError` naming
    the folder. Errors that already name it pass unchanged."""
    try:
        yield
    except OSError as e:
        if isinstance(e, KerasEncDecError) or str(folder) in str(e):
            raise
        raise CheckpointError(
            f"Could not read the preset in '{folder}': {type(e).__name__}: "
            f"{e}. A weights file is missing, truncated or corrupt."
        ) from e


def load_foreign_backbone(cls, fmt, folder, load_weights=True, **kwargs):
    """Builds `cls` (a T5Gemma backbone class) from a transformers or
    keras-hub folder, streaming its weights in when `load_weights`."""
    if fmt == TRANSFORMERS:
        from keras_encdec.convert import transformers_t5gemma as hf

        config = hf.read_config(folder)
        if load_weights:
            # Fail on missing or corrupt weight files before building.
            SafetensorsReader(folder)
        backbone_kwargs = hf.backbone_kwargs_from_config(config)
        backbone_kwargs.update(kwargs)
        if backbone_kwargs.get("dtype") is None:
            backbone_kwargs["dtype"] = hf.checkpoint_dtype(folder, config)
        backbone = cls(**backbone_kwargs)
        if load_weights:
            hf.load_transformers_weights(backbone, folder)
        return backbone
    if fmt == KERAS_HUB:
        from keras_encdec.convert import keras_hub_t5gemma

        return keras_hub_t5gemma.load_backbone(
            cls, folder, load_weights=load_weights, **kwargs
        )
    raise ValueError(f"Not a foreign preset format: {fmt!r}.")


def foreign_tokenizer_file(fmt, folder):
    """Path of the SentencePiece model in a foreign folder, or None."""
    candidates = {
        TRANSFORMERS: ["tokenizer.model"],
        KERAS_HUB: [
            os.path.join("assets", "tokenizer", "vocabulary.spm"),
            "tokenizer.model",
        ],
    }[fmt]
    for name in candidates:
        path = os.path.join(folder, name)
        if os.path.isfile(path):
            return path
    return None
