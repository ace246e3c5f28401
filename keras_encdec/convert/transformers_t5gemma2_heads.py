"""Transformers T5Gemma 2 classification checkpoints and the encoder alone.

Covers `T5Gemma2ForSequenceClassification` and
`T5Gemma2ForTokenClassification` (always encoder-decoder: transformers
rejects `is_encoder_decoder=False` for T5Gemma 2), and any other T5Gemma 2
folder as a starting point for a new head. Weights are the text stacks of
`transformers_t5gemma2.weight_map` plus `score.out_proj.{weight,bias}`;
the vision tower of a checkpoint is skipped (the heads are text-only).
Export writes the same names and dtypes, so the text and head tensors of a
round trip are bit-identical.
"""

import json
import os

from keras_encdec.convert import preset_loader
from keras_encdec.convert import transformers_t5gemma as hf
from keras_encdec.convert import transformers_t5gemma2 as hf2
from keras_encdec.convert import transformers_t5gemma_heads as heads
from keras_encdec.convert.safetensors_io import CheckpointError
from keras_encdec.convert.safetensors_io import SafetensorsReader

SEQUENCE_CLASSIFICATION = "T5Gemma2ForSequenceClassification"
TOKEN_CLASSIFICATION = "T5Gemma2ForTokenClassification"


def read_task_config(folder):
    """`(config, is_encoder_decoder, num_labels)` of a T5Gemma 2 folder;
    `num_labels` is None when the folder has no classification head."""
    config = hf2.read_config(folder)
    keys = {hf2.canonical_name(key) for key in SafetensorsReader(folder).keys()}
    num_labels = None
    if heads.HEAD_KERNEL in keys:
        num_labels = len(config.get("id2label") or {}) or config.get(
            "num_labels", 2
        )
    return config, True, num_labels


def task_weight_map(task):
    """Every weight of a T5Gemma 2 classifier, in transformers names."""
    return list(hf2.weight_map(task.backbone)) + heads.head_weight_map(task.score)


def load_task_weights(task, folder, with_head):
    """Loads a transformers T5Gemma 2 folder into `task` (text stacks, and
    the head when `with_head`); the vision tower, the LM head and an unused
    classification head are never read."""
    hf2.load_transformers_weights(
        task.backbone,
        folder,
        extra_mapping=heads.head_weight_map(task.score) if with_head else (),
        model=task if with_head else None,
        skip=() if with_head else (heads.HEAD_KERNEL, heads.HEAD_BIAS),
    )


def task_config(task, architecture, dtype):
    """A transformers config dict for a T5Gemma 2 classifier task."""
    config = hf2.config_from_backbone(task.backbone, dtype)
    config["architectures"] = [architecture]
    config["classifier_dropout_rate"] = task.dropout
    config["id2label"] = {str(i): f"LABEL_{i}" for i in range(task.num_classes)}
    config["label2id"] = {f"LABEL_{i}": i for i in range(task.num_classes)}
    if task.preprocessor is not None:
        hf.set_token_ids(config, task.preprocessor.tokenizer)
    # transformers pools with the top-level pad id and shifts right with
    # the decoder's bos id.
    config["decoder_start_token_id"] = task.decoder_start_token_id
    for module in (config["encoder"]["text_config"], config["decoder"]):
        for key in ("pad_token_id", "eos_token_id", "bos_token_id"):
            module[key] = config[key]
    config["decoder"]["bos_token_id"] = task.decoder_start_token_id
    return config


def export_task(task, path, architecture, max_shard_bytes=2 * 1024**3):
    """Writes `task` as a transformers T5Gemma 2 classification folder."""
    heads.write_task_folder(
        task, path, task_config, task_weight_map, architecture, max_shard_bytes
    )


def encoder_kwargs_from_config(config):
    """`T5Gemma2EncoderModel` kwargs from a transformers T5Gemma 2 config."""
    kwargs = hf2.backbone_kwargs_from_config(config, text_only=True)
    encoder = {
        key.removeprefix("encoder_"): value
        for key, value in kwargs.items()
        if key.startswith("encoder_")
    }
    for key in list(kwargs):
        if key.startswith("decoder_") or key in (
            "final_logit_soft_cap", "image_token_index",
        ):
            kwargs.pop(key)
        elif key.startswith("encoder_"):
            kwargs.pop(key)
    kwargs.update(encoder)
    return kwargs


def load_encoder(cls, preset, load_weights=True, **kwargs):
    """`T5Gemma2EncoderModel.from_preset`: a transformers T5Gemma 2 folder
    (only the encoder's text tensors are read) or a preset saved from
    `cls`."""
    fmt, folder = preset_loader.resolve(preset, cls.presets)
    if fmt == preset_loader.KERAS_ENCDEC:
        with open(os.path.join(folder, "config.json")) as f:
            class_name = json.load(f).get("class_name")
        if class_name != cls.__name__:
            raise CheckpointError(
                f"'{folder}' is a keras-encdec {class_name} preset; "
                f"{cls.__name__} loads transformers T5Gemma 2 folders and "
                f"{cls.__name__} presets. Export the backbone with "
                "`export_to_transformers` and load that folder."
            )
        from keras_hub.models import Backbone

        return Backbone.from_preset.__func__(
            cls, folder, load_weights=load_weights, **kwargs
        )
    if fmt != preset_loader.TRANSFORMERS:
        raise CheckpointError(
            f"'{folder}' is a {fmt} preset; {cls.__name__} loads transformers "
            "T5Gemma 2 folders."
        )
    config = hf2.read_config(folder)
    reader = SafetensorsReader(folder) if load_weights else None
    encoder_kwargs = encoder_kwargs_from_config(config)
    pooling = heads.checkpoint_pooling(folder)  # sentence-transformers
    if pooling is not None:
        encoder_kwargs["pooling"] = pooling
    encoder_kwargs.update(kwargs)
    if encoder_kwargs.get("dtype") is None:
        encoder_kwargs["dtype"] = hf.checkpoint_dtype(folder, config)
    model = cls(**encoder_kwargs)
    if load_weights:
        keep = {name for _, name, _, _ in hf2.weight_map(model)}
        skip = [
            hf2.canonical_name(key)
            for key in reader.keys()
            if hf2.canonical_name(key) not in keep
        ]
        hf2.load_transformers_weights(model, folder, skip=skip)
    return model
