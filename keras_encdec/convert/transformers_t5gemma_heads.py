"""Transformers T5Gemma encoder and classification checkpoints.

Covers `T5GemmaEncoderModel` (weights `encoder.*`),
`T5GemmaForSequenceClassification` and `T5GemmaForTokenClassification`
(weights `model.encoder.*`, plus `model.decoder.*` in encoder-decoder mode,
and the head `score.out_proj.{weight,bias}`), and the encoder of any other
T5Gemma checkpoint. Loading reads only the tensors the model holds; export
writes the same names and dtypes, so a round trip is bit-identical.
"""

import json
import os
import types

from keras_encdec.convert import transformers_t5gemma as hf
from keras_encdec.convert.transformers_blocks import identity
from keras_encdec.convert.transformers_blocks import transpose
from keras_encdec.convert.safetensors_io import CheckpointError
from keras_encdec.convert.safetensors_io import SafetensorsReader
from keras_encdec.stack_config import StackConfig

HEAD_KERNEL = "score.out_proj.weight"
HEAD_BIAS = "score.out_proj.bias"
SEQUENCE_CLASSIFICATION = "T5GemmaForSequenceClassification"
TOKEN_CLASSIFICATION = "T5GemmaForTokenClassification"
ENCODER_MODEL = "T5GemmaEncoderModel"
POOLING_FILE = os.path.join("1_Pooling", "config.json")
# sentence-transformers pooling flags -> `T5GemmaEncoderModel` pooling.
_POOLING_MODES = {
    "pooling_mode_mean_tokens": "mean",
    "pooling_mode_max_tokens": "max",
    "pooling_mode_cls_token": "first",
    "pooling_mode_lasttoken": "last",
}
_SHARED_ARGS = (
    "vocabulary_size", "rms_norm_eps", "hidden_activation", "dropout_rate",
    "attention_dropout", "initializer_range",
)


def encoder_kwargs_from_config(config):
    """`T5GemmaEncoderModel` kwargs from a transformers T5Gemma config."""
    kwargs = hf.backbone_kwargs_from_config(config)
    encoder = {
        key.removeprefix("encoder_"): value
        for key, value in kwargs.items()
        if key.startswith("encoder_")
    }
    encoder.update({name: kwargs[name] for name in _SHARED_ARGS})
    return encoder


def encoder_prefix(folder):
    """`"model.encoder"` (task checkpoints) or `"encoder"` (bare encoder or
    `T5GemmaModel`), from the tensor names in `folder`."""
    names = SafetensorsReader(folder).keys()
    for prefix in ("model.encoder", "encoder"):
        if f"{prefix}.embed_tokens.weight" in names:
            return prefix
    raise CheckpointError(
        f"'{folder}' holds no T5Gemma encoder: expected a tensor named "
        "'model.encoder.embed_tokens.weight' or 'encoder.embed_tokens.weight'."
    )


def checkpoint_pooling(folder):
    """The pooling a sentence-transformers folder names, or None."""
    path = os.path.join(folder, POOLING_FILE)
    if not os.path.isfile(path):
        return None
    with open(path) as f:
        flags = json.load(f)
    modes = [mode for key, mode in _POOLING_MODES.items() if flags.get(key)]
    if len(modes) != 1:
        raise CheckpointError(
            f"'{path}' must enable exactly one of {sorted(_POOLING_MODES)}. "
            f"Received: {modes or 'none'}."
        )
    return modes[0]


def load_encoder_weights(encoder_model, folder):
    """Streams only the encoder tensors of `folder` into `encoder_model`."""
    prefix = encoder_prefix(folder)
    mapping = list(hf.encoder_weight_map(encoder_model, prefix))
    hf.load_mapping(
        encoder_model,
        mapping,
        folder,
        ignored=lambda name: not name.startswith(prefix + "."),
        description="Loading the transformers T5Gemma encoder",
    )


def head_weight_map(dense):
    """`(variable, hf_name, to_keras, to_hf)` of a `score.out_proj` head."""
    return [
        (dense.kernel, HEAD_KERNEL, transpose, transpose),
        (dense.bias, HEAD_BIAS, identity, identity),
    ]


def task_weight_map(task):
    """Every weight of a classifier task, in transformers names."""
    backbone = task.backbone
    if task.encoder_only:
        mapping = list(hf.encoder_weight_map(backbone))
    else:
        mapping = list(hf.weight_map(backbone))
    return mapping + head_weight_map(task.score)


def read_task_config(folder):
    """`(config, is_encoder_decoder, num_labels)` of a classification folder;
    `num_labels` is None when the folder has no classification head."""
    config = hf.read_config(folder)
    has_head = HEAD_KERNEL in SafetensorsReader(folder).keys()
    num_labels = None
    if has_head:
        num_labels = len(config.get("id2label") or {}) or config.get(
            "num_labels", 2
        )
    return config, bool(config.get("is_encoder_decoder", True)), num_labels


def load_task_weights(task, folder, with_head):
    """Loads a transformers classification (or plain T5Gemma) folder into
    `task`, its head too when `with_head`. Tensors the task does not hold
    (the decoder of an encoder-only task, an LM head) are never read."""
    mapping = list(hf.encoder_weight_map(task.backbone, encoder_prefix(folder)))
    if not task.encoder_only:
        mapping = list(hf.weight_map(task.backbone))
    if with_head:
        mapping += head_weight_map(task.score)
    keep = {name for _, name, _, _ in mapping}
    hf.load_mapping(
        task.backbone if not with_head else task,
        mapping,
        folder,
        ignored=lambda name: name not in keep,
        description="Loading transformers T5Gemma",
    )


def task_config(task, architecture, dtype):
    """A transformers config dict for a classifier task."""
    backbone = task.backbone
    if task.encoder_only:
        # transformers keeps a decoder section even in encoder-only mode;
        # it mirrors the encoder and builds nothing.
        view = {"final_logit_soft_cap": None, "tie_word_embeddings": True}
        for name in _SHARED_ARGS:
            view[name] = getattr(backbone, name)
        for name in StackConfig.names():
            for side in ("encoder", "decoder"):
                view[f"{side}_{name}"] = getattr(backbone, name)
        backbone = types.SimpleNamespace(**view)
    config = hf.config_from_backbone(backbone, dtype)
    config["architectures"] = [architecture]
    config["is_encoder_decoder"] = not task.encoder_only
    config["classifier_dropout_rate"] = task.dropout
    config["id2label"] = {str(i): f"LABEL_{i}" for i in range(task.num_classes)}
    config["label2id"] = {f"LABEL_{i}": i for i in range(task.num_classes)}
    if task.preprocessor is not None:
        hf.set_token_ids(config, task.preprocessor.tokenizer)
    # transformers pools with the top-level pad id and shifts right with
    # the decoder's bos id.
    config["decoder_start_token_id"] = task.decoder_start_token_id
    for module in (config["encoder"], config["decoder"]):
        for key in ("pad_token_id", "eos_token_id", "bos_token_id"):
            module[key] = config[key]
    config["decoder"]["bos_token_id"] = task.decoder_start_token_id
    return config


def export_task(task, path, architecture, max_shard_bytes=2 * 1024**3):
    """Writes `task` as a transformers classification folder."""
    write_task_folder(
        task, path, task_config, task_weight_map, architecture, max_shard_bytes
    )


def write_task_folder(
    task, path, make_config, make_weight_map, architecture, max_shard_bytes
):
    """Writes a classifier folder: `make_config(task, architecture, dtype)`
    as config.json, `make_weight_map(task)` as safetensors, and the
    tokenizer when the task has one. Shared by both families."""
    os.makedirs(path, exist_ok=True)
    dtype = str(task.backbone.token_embedding.embeddings.dtype)
    config = make_config(task, architecture, dtype)
    with open(os.path.join(path, hf.CONFIG_FILE), "w") as f:
        json.dump(config, f, indent=2)
    hf.write_mapping(make_weight_map(task), path, max_shard_bytes)
    if task.preprocessor is not None:
        hf.write_tokenizer(task.preprocessor.tokenizer, path)
