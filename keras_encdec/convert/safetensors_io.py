"""Streaming safetensors reading and sharded writing, numpy only.

Reads single-file (`model.safetensors`) and sharded
(`model.safetensors.index.json`) checkpoints through memory maps, one tensor
at a time, bfloat16 included (via `ml_dtypes`). Writes shards of bounded size
with the transformers index file, so exporting never needs a second full copy
of the model in memory. Safetensors holds only tensors and JSON: loading it
never runs code.
"""

import json
import os
import struct

import ml_dtypes
import numpy as np
from keras_encdec.errors import CheckpointError  # noqa: F401 (public)

SINGLE_FILE = "model.safetensors"
INDEX_FILE = "model.safetensors.index.json"

_DTYPES = {
    "F64": np.dtype("float64"),
    "F32": np.dtype("float32"),
    "F16": np.dtype("float16"),
    "BF16": np.dtype(ml_dtypes.bfloat16),
    "I64": np.dtype("int64"),
    "I32": np.dtype("int32"),
    "I16": np.dtype("int16"),
    "I8": np.dtype("int8"),
    "U8": np.dtype("uint8"),
    "BOOL": np.dtype("bool"),
}
_NAMES = {dtype: name for name, dtype in _DTYPES.items()}


class ConfigDict(dict):
    """A config section whose missing keys raise a `CheckpointError` naming
    the key and the file (instead of a bare `KeyError`)."""

    def __init__(self, values, path, prefix=""):
        super().__init__(
            (key, _wrap(value, path, f"{prefix}{key}."))
            for key, value in values.items()
        )
        self.path, self.prefix = path, prefix

    def __missing__(self, key):
        raise CheckpointError(
            f"'{self.path}' lacks the required key '{self.prefix}{key}'. "
            f"Received keys: {sorted(self)}."
        )


def _wrap(value, path, prefix):
    return ConfigDict(value, path, prefix) if isinstance(value, dict) else value


def read_json_config(folder, name="config.json"):
    """Loads `folder/name`; a missing file or bad JSON raises a
    `CheckpointError` naming it, and so does a missing key later (the dicts
    are `ConfigDict`s). Returns `(path, config_dict)`."""
    path = os.path.join(folder, name)
    try:
        with open(path) as f:
            return path, _wrap(json.load(f), path, "")
    except OSError as e:
        raise CheckpointError(f"Missing '{name}' in '{folder}'.") from e
    except json.JSONDecodeError as e:
        raise CheckpointError(f"Corrupt JSON in '{path}': {e}.") from e


def _read_header(path):
    try:
        with open(path, "rb") as f:
            (length,) = struct.unpack("<Q", f.read(8))
            if length > 100_000_000:
                raise CheckpointError(
                    f"'{path}' is not a safetensors file (header length "
                    f"{length})."
                )
            header = json.loads(f.read(length))
    except (OSError, struct.error, json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(
            f"Could not read the safetensors file '{path}': {e}. The file is "
            "missing or corrupt."
        ) from e
    header.pop("__metadata__", None)
    return 8 + length, header


class SafetensorsReader:
    """Reads tensors by name from a transformers checkpoint folder.

    Args:
        folder: str. Holds `model.safetensors` or
            `model.safetensors.index.json` and its shards.

    Examples:

    >>> import tempfile, numpy as np
    >>> folder = tempfile.mkdtemp()
    >>> with SafetensorsWriter(folder) as writer:
    ...     writer.add("w", np.arange(6, dtype="float32").reshape(2, 3))
    >>> SafetensorsReader(folder).get("w").tolist()
    [[0.0, 1.0, 2.0], [3.0, 4.0, 5.0]]
    """

    def __init__(self, folder):
        self.folder = folder
        index_path = os.path.join(folder, INDEX_FILE)
        single_path = os.path.join(folder, SINGLE_FILE)
        if os.path.exists(index_path) and os.path.exists(single_path):
            raise CheckpointError(
                f"'{folder}' holds both '{SINGLE_FILE}' and '{INDEX_FILE}', "
                "two different sets of weights. Expected one of them: remove "
                "the stale one (e.g. left by an older save into this folder)."
            )
        if os.path.exists(index_path):
            try:
                with open(index_path) as f:
                    weight_map = json.load(f)["weight_map"]
            except (OSError, KeyError, json.JSONDecodeError) as e:
                raise CheckpointError(
                    f"Corrupt index file '{index_path}': {e}."
                ) from e
            files = sorted(set(weight_map.values()))
        elif os.path.exists(single_path):
            files = [SINGLE_FILE]
        else:
            raise CheckpointError(
                f"No safetensors weights in '{folder}'. Expected "
                f"'{SINGLE_FILE}' or '{INDEX_FILE}'."
            )
        self._entries = {}
        for name in files:
            path = os.path.join(folder, name)
            offset, header = _read_header(path)
            size = os.path.getsize(path)
            for key, info in header.items():
                end = offset + info["data_offsets"][1]
                if end > size:
                    raise CheckpointError(
                        f"'{path}' is truncated: tensor '{key}' ends at byte "
                        f"{end} but the file has {size} bytes."
                    )
                self._entries[key] = (path, offset, info)

    def keys(self):
        return list(self._entries)

    def __contains__(self, name):
        return name in self._entries

    def dtype(self, name):
        return _DTYPES[self._entries[name][2]["dtype"]]

    def get(self, name):
        """Returns tensor `name` as a numpy array (a private copy)."""
        path, offset, info = self._entries[name]
        if info["dtype"] not in _DTYPES:
            raise CheckpointError(
                f"Unsupported dtype {info['dtype']} for '{name}' in '{path}'."
            )
        start, end = info["data_offsets"]
        data = np.memmap(
            path, dtype=np.uint8, mode="r", offset=offset + start,
            shape=(end - start,),
        ) if end > start else np.zeros((0,), np.uint8)
        array = np.frombuffer(data, dtype=_DTYPES[info["dtype"]])
        return array.reshape(info["shape"]).copy()


class SafetensorsWriter:
    """Writes tensors into size-bounded safetensors shards plus an index.

    Holds at most one shard's tensors in memory. One shard is written as
    `model.safetensors`; several as `model-0000i-of-0000n.safetensors` with
    `model.safetensors.index.json`, the layout transformers expects.

    Args:
        folder: str. Output folder (created if needed).
        max_shard_bytes: int. Shard size bound. Defaults to 2 GiB.
    """

    def __init__(self, folder, max_shard_bytes=2 * 1024**3):
        os.makedirs(folder, exist_ok=True)
        self.folder = folder
        self.max_shard_bytes = max_shard_bytes
        self._pending = {}
        self._pending_bytes = 0
        self._shards = []  # list of (temp_name, names)

    def add(self, name, array):
        array = np.ascontiguousarray(array)
        if array.dtype not in _NAMES:
            raise CheckpointError(f"Cannot write dtype {array.dtype} ('{name}').")
        if self._pending and self._pending_bytes + array.nbytes > self.max_shard_bytes:
            self._flush()
        self._pending[name] = array
        self._pending_bytes += array.nbytes

    def _flush(self):
        header, offset = {}, 0
        for name, array in self._pending.items():
            header[name] = {
                "dtype": _NAMES[array.dtype],
                "shape": list(array.shape),
                "data_offsets": [offset, offset + array.nbytes],
            }
            offset += array.nbytes
        header["__metadata__"] = {"format": "pt"}
        blob = json.dumps(header, separators=(",", ":")).encode()
        blob += b" " * (-len(blob) % 8)
        temp_name = f".shard-{len(self._shards)}.tmp"
        with open(os.path.join(self.folder, temp_name), "wb") as f:
            f.write(struct.pack("<Q", len(blob)))
            f.write(blob)
            for array in self._pending.values():
                f.write(array.tobytes())
        self._shards.append((temp_name, list(self._pending)))
        self._pending, self._pending_bytes = {}, 0

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is not None:
            return False
        if self._pending or not self._shards:
            self._flush()
        count = len(self._shards)
        if count == 1:
            os.replace(
                os.path.join(self.folder, self._shards[0][0]),
                os.path.join(self.folder, SINGLE_FILE),
            )
            return False
        weight_map, total = {}, 0
        for i, (temp_name, names) in enumerate(self._shards):
            final = f"model-{i + 1:05d}-of-{count:05d}.safetensors"
            path = os.path.join(self.folder, final)
            os.replace(os.path.join(self.folder, temp_name), path)
            total += os.path.getsize(path)
            weight_map.update({name: final for name in names})
        with open(os.path.join(self.folder, INDEX_FILE), "w") as f:
            json.dump(
                {"metadata": {"total_size": total}, "weight_map": weight_map},
                f,
                indent=2,
            )
        return False
