"""Loading `T5GemmaEncoderModel` from any T5Gemma preset, encoder only.

From a full encoder-decoder preset only the encoder's tensors are read:
transformers safetensors tensor by tensor, and from our own
`model.weights.h5` only the groups of the encoder's layers. The decoder
never reaches memory.
"""

import json
import os

from keras_encdec.convert import preset_loader
from keras_encdec.convert import transformers_t5gemma as hf
from keras_encdec.convert import transformers_t5gemma_heads as heads
from keras_encdec.convert.safetensors_io import CheckpointError
from keras_encdec.convert.safetensors_io import SafetensorsReader
from keras_encdec.models.t5gemma.t5gemma_backbone import T5GemmaBackbone
from keras_encdec.models.t5gemma.t5gemma_presets import T5GEMMA_PRESETS

WEIGHTS_FILE = "model.weights.h5"
FULL_BACKBONE = "T5GemmaBackbone"
_SHARED_ARGS = (
    "vocabulary_size", "rms_norm_eps", "hidden_activation", "dropout_rate",
    "attention_dropout", "initializer_range", "attention_impl", "dtype",
)


def load_encoder(cls, preset, load_weights=True, **kwargs):
    """`cls.from_preset` for `T5GemmaEncoderModel` (see its docstring)."""
    fmt, folder = preset_loader.resolve(preset, T5GEMMA_PRESETS)
    if fmt == preset_loader.TRANSFORMERS:
        config = hf.read_config(folder)
        if load_weights:
            SafetensorsReader(folder)  # Fail on missing files before building.
        encoder_kwargs = heads.encoder_kwargs_from_config(config)
        pooling = heads.checkpoint_pooling(folder)
        if pooling is not None:
            encoder_kwargs["pooling"] = pooling
        encoder_kwargs.update(kwargs)
        if encoder_kwargs.get("dtype") is None:
            encoder_kwargs["dtype"] = hf.checkpoint_dtype(folder, config)
        model = cls(**encoder_kwargs)
        if load_weights:
            heads.load_encoder_weights(model, folder)
        return model
    if fmt == preset_loader.KERAS_ENCDEC:
        with open(os.path.join(folder, "config.json")) as f:
            saved = json.load(f)
        if saved.get("class_name") != FULL_BACKBONE:
            # Our own encoder preset: keras-hub's loader.
            from keras_hub.models import Backbone

            return Backbone.from_preset.__func__(
                cls, folder, load_weights=load_weights, **kwargs
            )
        encoder_kwargs = encoder_kwargs_from_backbone_config(saved["config"])
        encoder_kwargs.update(kwargs)
        model = cls(**encoder_kwargs)
        if load_weights:
            load_encoder_from_backbone_weights(model, folder, saved["config"])
        return model
    raise CheckpointError(
        f"'{folder}' is a keras-hub T5GemmaBackbone preset. Load the encoder "
        "from a transformers folder or a keras-encdec preset instead (convert "
        "it once with `T5GemmaSeq2SeqLM.from_preset(folder).save_to_preset("
        "new_folder)`)."
    )


def encoder_kwargs_from_backbone_config(config):
    """`T5GemmaEncoderModel` kwargs from a `T5GemmaBackbone` config dict."""
    kwargs = {
        key.removeprefix("encoder_"): value
        for key, value in config.items()
        if key.startswith("encoder_")
    }
    kwargs.update({name: config[name] for name in _SHARED_ARGS if name in config})
    kwargs["remat"] = config.get("remat", False)
    return kwargs


def backbone_layer_paths(config):
    """Where each top-level encoder layer of a saved `T5GemmaBackbone` sits
    in its `model.weights.h5`: `(embedding, [block paths], norm)`.

    Keras names the groups by class name and position in `model.layers`, so
    a skeleton backbone with the same block counts and minimal widths
    (built in microseconds) gives the exact paths.
    """
    from keras.src.saving import saving_lib
    from keras.src.utils import naming

    sizes = {}
    for side in ("encoder", "decoder"):
        sizes.update(
            {
                f"{side}_num_layers": config[f"{side}_num_layers"],
                f"{side}_layer_types": config.get(f"{side}_layer_types"),
                f"{side}_hidden_dim": 2,
                f"{side}_intermediate_dim": 2,
                f"{side}_num_heads": 1,
                f"{side}_num_kv_heads": 1,
                f"{side}_head_dim": 2,
            }
        )
    skeleton = T5GemmaBackbone(
        vocabulary_size=2,
        tie_word_embeddings=config.get("tie_word_embeddings", True),
        **sizes,
    )
    used, paths = {}, {}
    for layer in skeleton.layers:
        name = naming.to_snake_case(layer.__class__.__name__)
        paths[id(layer)] = "layers/" + saving_lib._get_unique_name(name, used)
    return (
        paths[id(skeleton.token_embedding)],
        [paths[id(layer)] for layer in skeleton.encoder_layers],
        paths[id(skeleton.encoder_norm)],
    )


def load_encoder_from_backbone_weights(model, folder, config):
    """Reads only the encoder's groups of a saved `T5GemmaBackbone`."""
    from keras.src.saving import saving_lib

    path = os.path.join(folder, WEIGHTS_FILE)
    if not os.path.isfile(path):
        raise CheckpointError(
            f"'{folder}' has no {WEIGHTS_FILE} (sharded keras-hub weights are "
            "not read encoder-only). Load it with `T5GemmaBackbone.from_preset` "
            "and pass `backbone.encode` outputs, or save it unsharded."
        )
    embedding, blocks, norm = backbone_layer_paths(config)
    pairs = [(model.token_embedding, embedding), (model.encoder_norm, norm)]
    pairs += list(zip(model.encoder_layers, blocks))
    store = saving_lib.H5IOStore(path, mode="r")
    try:
        for layer, inner_path in pairs:
            try:
                saving_lib._load_state(
                    layer, store, None, inner_path, visited_saveables=set()
                )
            except ValueError as e:
                raise CheckpointError(
                    f"'{path}' does not fit the encoder at '{inner_path}' "
                    f"({layer.name}): {e}"
                ) from e
    finally:
        store.close()
