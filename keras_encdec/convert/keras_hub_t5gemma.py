"""keras-hub T5Gemma presets to keras-encdec.

Reads a folder written by keras-hub's `T5GemmaBackbone.save_to_preset`:
`config.json` (plain JSON) and the Keras 3 weights file `model.weights.h5`
(or, for backbones over keras-hub's shard size, `model.weights.json` plus
`model_NNNNN.weights.h5` shards). Weights are read with `h5py`, tensor by
tensor, with a progress bar. Nothing from the folder is deserialized or
executed: keras-hub classes are never instantiated.

Layout of the weights file: Keras 3 stores each layer of a functional model
under `layers/<snake_case class name>[_<n>]/...`, numbering repeated classes
in graph order, and each layer's own variables as `vars/<i>` in creation
order. keras-hub's kernels already have our layouts (query `(d, heads, h)`,
key/value `(d_kv, kv_heads, h)`, output `(heads, h, d)`, MLP `(d, f)` and
`(f, d)`), so every tensor is copied as is; `WeightAssigner` still checks each
shape and that every tensor is used exactly once.

keras-hub's config has one `sliding_window`, `query_pre_attn_scalar`,
attention soft-cap and RoPE wavelength for both stacks; they are copied to
our `encoder_*` and `decoder_*` settings. Note that keras-hub's own forward
pass ignores the window in its encoder and admits one key too many in its
decoder (see `../shared/ANCHORS.md` section 2); ours applies the transformers
windows, so the two agree only where the window is at least the sequence
length.
"""

import json
import logging
import os

import numpy as np

from keras_encdec.convert.safetensors_io import CheckpointError
from keras_encdec.convert.safetensors_io import read_json_config
from keras_encdec.convert.transformers_blocks import SANDWICH_NORM_TENSORS
from keras_encdec.convert.weight_mapping import WeightAssigner
from keras_encdec.convert.weight_mapping import check_all_assigned
from keras_encdec.convert.weight_mapping import named_block_roles
from keras_encdec.stack_config import StackConfig

logger = logging.getLogger(__name__)

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.weights.h5"
SHARDED_WEIGHTS_FILE = "model.weights.json"
CLASS_NAME = "T5GemmaBackbone"

# keras-hub key -> our `StackConfig` field, per stack (`encoder_`/`decoder_`).
_STACK_KEYS = {
    "hidden_dim": "hidden_dim",
    "intermediate_dim": "intermediate_dim",
    "num_layers": "num_layers",
    "num_attention_heads": "num_heads",
    "num_key_value_heads": "num_kv_heads",
    "head_dim": "head_dim",
    "layer_types": "layer_types",
}
# keras-hub settings shared by both stacks -> our per-stack key.
_SHARED_STACK_KEYS = {
    "sliding_window": "sliding_window",
    "attn_logit_softcapping": "attention_logit_soft_cap",
    "query_pre_attn_scalar": "query_pre_attn_scalar",
    "rope_max_wavelength": "rope_max_wavelength",
}
# keras-hub key -> our key, model-wide.
_MODEL_KEYS = {
    "vocabulary_size": "vocabulary_size",
    "final_logit_softcapping": "final_logit_soft_cap",
    "tie_word_embeddings": "tie_word_embeddings",
    "rms_norm_eps": "rms_norm_eps",
    "hidden_activation": "hidden_activation",
    "dropout_rate": "dropout_rate",
    "attention_dropout": "attention_dropout",
    "initializer_range": "initializer_range",
}
# keras-hub's defaults for optional settings (some differ from ours).
_HUB_DEFAULTS = {
    "sliding_window": None,
    "attn_logit_softcapping": None,
    "query_pre_attn_scalar": 1.0,
    "rope_max_wavelength": 10000.0,
    "final_logit_softcapping": None,
    "tie_word_embeddings": True,
    "rms_norm_eps": 1e-6,
    "hidden_activation": "gelu_approximate",
    "dropout_rate": 0.0,
    "attention_dropout": 0.0,
    "initializer_range": 0.02,
}
# Checked separately, or without effect on the weights and numerics.
_OTHER_KEYS = {
    "name",
    "trainable",
    "dtype",
    "attention_bias",
    "cross_attention_hidden_size",
}
# Block role -> the layer holding it inside a keras-hub block (its one
# variable is `vars/0`).
BLOCK_TENSORS = {
    "attention.query": "self_attn/query_dense",
    "attention.key": "self_attn/key_dense",
    "attention.value": "self_attn/value_dense",
    "attention.output": "self_attn/output_dense",
    "cross_attention.query": "cross_attn/query_dense",
    "cross_attention.key": "cross_attn/key_dense",
    "cross_attention.value": "cross_attn/value_dense",
    "cross_attention.output": "cross_attn/output_dense",
    **SANDWICH_NORM_TENSORS,
    "mlp.gate": "mlp/gate_proj",
    "mlp.up": "mlp/up_proj",
    "mlp.down": "mlp/down_proj",
}
# Keras 3 names of the backbone's own layers in the weights file.
_ENCODER_LAYER = "t5_gemma_encoder_layer"
_DECODER_LAYER = "t5_gemma_decoder_layer"
_FLOAT_POLICIES = ("DTypePolicy", "FloatDTypePolicy")


def read_config(folder, class_name=CLASS_NAME):
    """Loads a keras-hub backbone `config.json` (by default a
    `T5GemmaBackbone` one).

    Args:
        folder: str. A keras-hub preset folder.
        class_name: str. The backbone class the config must name.
            Defaults to `"T5GemmaBackbone"`.

    Returns:
        The backbone's `"config"` dict.
    """
    path, config = read_json_config(folder, CONFIG_FILE)
    if config.get("class_name") != class_name or not isinstance(
        config.get("config"), dict
    ):
        raise CheckpointError(
            f"'{path}' is not a keras-hub {class_name} config. Received: "
            f"class_name={config.get('class_name')!r}. Expected "
            f"{class_name!r} with a 'config' section."
        )
    return config["config"]


def _dtype_name(dtype):
    """The dtype policy name of a serialized keras-hub `dtype` entry."""
    if dtype is None or isinstance(dtype, str):
        return dtype
    if isinstance(dtype, dict) and dtype.get("class_name") in _FLOAT_POLICIES:
        return dtype.get("config", {}).get("name")
    raise CheckpointError(
        "Only float dtype policies are supported in keras-hub presets. "
        f"Received: dtype={dtype!r}. Quantized presets (DTypePolicyMap, "
        "int8/int4/float8 policies) cannot be loaded; save the keras-hub "
        "model unquantized first."
    )


def backbone_kwargs_from_config(config):
    """Maps a keras-hub `T5GemmaBackbone` config dict to our kwargs.

    Args:
        config: dict. The `"config"` section of keras-hub's `config.json`.

    Returns:
        dict of `keras_encdec.models.T5GemmaBackbone` kwargs, `dtype`
        included.
    """
    known = (
        {f"{side}_{key}" for side in ("encoder", "decoder") for key in _STACK_KEYS}
        | set(_SHARED_STACK_KEYS)
        | set(_MODEL_KEYS)
        | _OTHER_KEYS
    )
    unknown = sorted(set(config) - known)
    if unknown:
        raise CheckpointError(
            f"Unsupported keras-hub T5GemmaBackbone settings: {unknown}. "
            f"Expected only these keys: {sorted(known)}."
        )
    if config.get("attention_bias"):
        raise CheckpointError(
            "attention_bias=True is not supported (no published T5Gemma uses "
            "it). Received: attention_bias=True in the keras-hub config."
        )
    required = ["vocabulary_size"] + [
        f"{side}_{key}" for side in ("encoder", "decoder") for key in _STACK_KEYS
    ]
    missing = [key for key in required if key not in config]
    if missing:
        raise CheckpointError(
            f"The keras-hub T5GemmaBackbone config lacks {missing}."
        )
    config = {**_HUB_DEFAULTS, **config}
    encoder_width = config["encoder_hidden_dim"]
    cross_width = config.get("cross_attention_hidden_size") or encoder_width
    if cross_width != encoder_width:
        raise CheckpointError(
            "Cross-attention keys/values must take the encoder width. "
            f"Received: cross_attention_hidden_size={cross_width}, "
            f"encoder_hidden_dim={encoder_width}. Expected them to be equal."
        )
    kwargs = {}
    for side in ("encoder", "decoder"):
        values = {key: config[f"{side}_{h}"] for h, key in _STACK_KEYS.items()}
        values.update({key: config[h] for h, key in _SHARED_STACK_KEYS.items()})
        kwargs.update(StackConfig(side=side, **values).prefixed())
    for hub_key, key in _MODEL_KEYS.items():
        kwargs[key] = config[hub_key]
    kwargs["dtype"] = _dtype_name(config.get("dtype"))
    return kwargs


class KerasWeightsReader:
    """Reads tensors from a Keras 3 `.weights.h5` file or its shards.

    Tensors are named by their path in the file (e.g.
    `layers/embedding/vars/0`) and read one at a time.

    Args:
        folder: str. A keras-hub preset folder.
    """

    def __init__(self, folder):
        import h5py

        single = os.path.join(folder, WEIGHTS_FILE)
        index = os.path.join(folder, SHARDED_WEIGHTS_FILE)
        if os.path.isfile(single):
            filenames = [WEIGHTS_FILE]
        elif os.path.isfile(index):
            filenames = _shard_filenames(index)
        else:
            raise CheckpointError(
                f"No weights in '{folder}'. Expected '{WEIGHTS_FILE}' (or "
                f"'{SHARDED_WEIGHTS_FILE}' with its shards), as written by "
                "keras-hub's `T5GemmaBackbone.save_to_preset`. Pass "
                "`load_weights=False` to build the model without weights."
            )
        self.files = []
        self.datasets = {}
        for filename in filenames:
            path = os.path.join(folder, filename)
            try:
                file = h5py.File(path, "r")
            except OSError as e:
                self.close()
                raise CheckpointError(
                    f"Cannot read '{path}' as an HDF5 weights file: {e}."
                ) from e
            self.files.append(file)
            file.visititems(self._index)

    def _index(self, name, item):
        import h5py

        if isinstance(item, h5py.Dataset):
            self.datasets[name] = item

    def keys(self):
        """Every tensor name in the file(s)."""
        return list(self.datasets)

    def get(self, name):
        """Loads one tensor as a numpy array (bfloat16 via `ml_dtypes`)."""
        dataset = self.datasets[name]
        value = np.asarray(dataset[()])
        if dataset.attrs.get("dtype") == "bfloat16":
            import ml_dtypes

            value = value.view(ml_dtypes.bfloat16)
        return value

    def close(self):
        for file in self.files:
            file.close()
        self.files = []

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False


def _shard_filenames(index_path):
    try:
        with open(index_path) as f:
            weight_map = json.load(f)["weight_map"]
    except (OSError, json.JSONDecodeError, KeyError, TypeError) as e:
        raise CheckpointError(
            f"Corrupt shard index '{index_path}' ({type(e).__name__}: {e}). "
            "Expected a JSON object with a 'weight_map'."
        ) from e
    names = set()
    for value in weight_map.values():
        names.update(value if isinstance(value, list) else [value])
    return sorted(names)


def _numbered(name, index):
    """Keras 3 numbers repeated layer classes `name`, `name_1`, `name_2`..."""
    return name if index == 0 else f"{name}_{index}"


def weight_map(backbone):
    """Yields `(variable, keras_hub_tensor_name)` for every weight.

    Args:
        backbone: `keras_encdec.models.T5GemmaBackbone`.
    """
    yield backbone.token_embedding.embeddings, "layers/embedding/vars/0"
    embedding = backbone.decoder_token_embedding
    yield embedding.embeddings, "layers/reversible_embedding/vars/0"
    if not backbone.tie_word_embeddings:
        yield embedding.reverse_embeddings, "layers/reversible_embedding/vars/1"
    yield backbone.encoder_norm.scale, "layers/rms_normalization/vars/0"
    yield backbone.decoder_norm.scale, "layers/rms_normalization_1/vars/0"
    for hub_name, layers in (
        (_ENCODER_LAYER, backbone.encoder_layers),
        (_DECODER_LAYER, backbone.decoder_layers),
    ):
        for i, layer in enumerate(layers):
            prefix = f"layers/{_numbered(hub_name, i)}"
            for _, variable, name in named_block_roles(
                layer, BLOCK_TENSORS, "keras-hub T5Gemma"
            ):
                yield variable, f"{prefix}/{name}/vars/0"


def load_keras_hub_weights(backbone, folder):
    """Streams a keras-hub T5Gemma weights file into `backbone`.

    Args:
        backbone: `keras_encdec.models.T5GemmaBackbone` built from the
            folder's config.
        folder: str. A keras-hub preset folder.
    """
    mapping = list(weight_map(backbone))
    with KerasWeightsReader(folder) as reader:
        with WeightAssigner(
            reader.get,
            reader.keys(),
            total=len(mapping),
            description="Loading keras-hub T5Gemma",
        ) as assign:
            for variable, name in mapping:
                assign(variable, name)
    check_all_assigned(backbone.weights, assign)


def load_backbone(cls, folder, load_weights=True, **kwargs):
    """Builds `cls` from a keras-hub `T5GemmaBackbone.save_to_preset` folder.

    Args:
        cls: a `keras_encdec.models.T5GemmaBackbone` class.
        folder: str. The keras-hub preset folder.
        load_weights: bool. Load the weights, or keep a random init.
            Defaults to `True`.
        **kwargs: our backbone kwargs; they override the folder's config
            (e.g. `dtype="bfloat16"`).

    Returns:
        A `cls` instance.

    Examples:

    >>> import tempfile
    >>> import keras_hub
    >>> from keras_encdec.models import T5GemmaBackbone
    >>> folder = tempfile.mkdtemp()
    >>> keras_hub.models.T5GemmaBackbone(
    ...     vocabulary_size=32, encoder_hidden_dim=16,
    ...     encoder_intermediate_dim=32, encoder_num_layers=1,
    ...     encoder_num_attention_heads=2, encoder_num_key_value_heads=1,
    ...     encoder_head_dim=8, encoder_layer_types=["full_attention"],
    ...     decoder_hidden_dim=16, decoder_intermediate_dim=32,
    ...     decoder_num_layers=1, decoder_num_attention_heads=2,
    ...     decoder_num_key_value_heads=1, decoder_head_dim=8,
    ...     decoder_layer_types=["full_attention"],
    ... ).save_to_preset(folder)
    >>> backbone = load_backbone(T5GemmaBackbone, folder)
    >>> backbone.decoder_num_kv_heads
    1
    """
    backbone_kwargs = backbone_kwargs_from_config(read_config(folder))
    backbone_kwargs.update(kwargs)
    logger.info("Building T5GemmaBackbone from keras-hub preset '%s'.", folder)
    backbone = cls(**backbone_kwargs)
    if load_weights:
        load_keras_hub_weights(backbone, folder)
    return backbone
