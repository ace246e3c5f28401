"""`from_preset` for the text and token classifiers of both families.

Accepts a transformers `T5GemmaFor{Sequence,Token}Classification` folder
(head included), any other transformers T5Gemma folder, our own task or
backbone presets and (encoder-decoder only) keras-hub `T5GemmaBackbone`
presets. A saved head is restored when `num_classes` is omitted or equal to
the saved one; otherwise the head starts random, as in keras-hub.
"""

import importlib
import json
import logging
import os

from keras_encdec.convert import preset_loader
from keras_encdec.convert.safetensors_io import SafetensorsReader

logger = logging.getLogger(__name__)
TASK_CONFIG = "task.json"
TASK_WEIGHTS = "task.weights.h5"
BACKBONE_ARGS = ("dtype", "remat", "attention_impl", "pooling")
TASK_ARGS = ("activation", "dropout", "decoder_start_token_id")


def _read_json(folder, name):
    path = os.path.join(folder, name)
    if not os.path.isfile(path):
        return None
    with open(path) as f:
        return json.load(f)


def converter(cls):
    """The transformers head converter module of a classifier class
    (`cls.transformers_converter`, a module name): it provides
    `read_task_config`, `load_task_weights` and `export_task`."""
    return importlib.import_module(cls.transformers_converter)


def _saved_task(cls, fmt, folder):
    """`(saved head (num_classes, encoder_only) or None, default
    encoder_only, task kwargs)` read from the preset."""
    if fmt == preset_loader.TRANSFORMERS:
        config, is_encoder_decoder, num_labels = converter(cls).read_task_config(
            folder
        )
        architecture = (config.get("architectures") or [None])[0]
        saved = None
        if num_labels is not None and architecture == cls.transformers_architecture:
            saved = (num_labels, not is_encoder_decoder)
        elif num_labels is not None:
            logger.warning(
                "'%s' holds a %s head; %s starts a random head.",
                folder, architecture, cls.__name__,
            )
        task_kwargs = {
            "dropout": config.get("classifier_dropout_rate", 0.0),
            "decoder_start_token_id": config["decoder"].get("bos_token_id", 2),
        }
        return saved, not is_encoder_decoder, task_kwargs
    if fmt == preset_loader.KERAS_HUB:
        return None, False, {}
    task = _read_json(folder, TASK_CONFIG) or {}
    backbone = _read_json(folder, "config.json")
    encoder_cls = cls.encoder_model_cls
    encoder_only = encoder_cls is not None and (
        backbone.get("class_name") == encoder_cls.__name__
    )
    if task.get("class_name") != cls.__name__:
        return None, encoder_only, {}
    config = task["config"]
    task_kwargs = {name: config[name] for name in TASK_ARGS if name in config}
    return (config["num_classes"], config["encoder_only"]), encoder_only, (
        task_kwargs
    )


def load_classifier(cls, preset, load_weights=True, **kwargs):
    """Builds `cls` (a T5Gemma or T5Gemma 2 classifier task) from `preset`.

    The family comes from the class: `presets`, `backbone_cls`,
    `encoder_model_cls` (None: encoder-decoder only), `backbone_preset_kwargs`
    and `transformers_converter`."""
    fmt, folder = preset_loader.resolve(preset, cls.presets)
    num_classes = kwargs.pop("num_classes", None)
    encoder_only = kwargs.pop("encoder_only", None)
    preprocessor = kwargs.pop("preprocessor", "auto")
    backbone_kwargs = {n: kwargs.pop(n) for n in BACKBONE_ARGS if n in kwargs}
    saved, default_encoder_only, task_kwargs = _saved_task(cls, fmt, folder)
    if encoder_only is None:
        encoder_only = saved[1] if saved else default_encoder_only
    load_head = saved is not None and num_classes in (None, saved[0])
    if load_head and saved[1] != encoder_only:
        mode = "encoder-only" if saved[1] else "encoder-decoder"
        raise ValueError(
            f"'{folder}' holds a head trained {mode}, but encoder_only="
            f"{encoder_only} was requested. Omit `encoder_only`, or pass "
            "`num_classes` to start a new head."
        )
    if num_classes is None:
        if saved is None:
            raise ValueError(
                f"'{folder}' has no {cls.__name__} head, so `num_classes` is "
                f"needed: `{cls.__name__}.from_preset(preset, num_classes=N)`."
            )
        num_classes = saved[0]
    if encoder_only and fmt == preset_loader.KERAS_HUB:
        raise ValueError(
            "Encoder-only heads load from transformers or keras-encdec "
            f"presets; '{folder}' is a keras-hub preset. Pass "
            "`encoder_only=False`, or convert it first."
        )
    if encoder_only and cls.encoder_model_cls is None:
        raise ValueError(
            f"{cls.__name__} runs encoder-decoder only (transformers' "
            f"{cls.transformers_architecture} requires is_encoder_decoder="
            f"True). Received: encoder_only={encoder_only}."
        )
    backbone_cls = cls.encoder_model_cls if encoder_only else cls.backbone_cls
    if not encoder_only:
        backbone_kwargs.pop("pooling", None)
    from_transformers = fmt == preset_loader.TRANSFORMERS
    if from_transformers and load_weights:
        SafetensorsReader(folder)  # Fail on missing files before building.
    backbone = backbone_cls.from_preset(
        folder,
        load_weights=load_weights and not from_transformers,
        **cls.backbone_preset_kwargs,
        **backbone_kwargs,
    )
    if preprocessor == "auto":
        preprocessor = None
        if tokenizer_file(folder):
            preprocessor = cls.preprocessor_cls.from_preset(folder)
        else:
            logger.warning(
                "No tokenizer in '%s': the model has no preprocessor and "
                "takes token-id dicts.", folder,
            )
    task_kwargs.update(kwargs)
    task = cls(
        backbone=backbone,
        num_classes=num_classes,
        preprocessor=preprocessor,
        encoder_only=encoder_only,
        **task_kwargs,
    )
    if load_weights and from_transformers:
        converter(cls).load_task_weights(task, folder, with_head=load_head)
    elif load_weights and load_head:
        task.load_task_weights(os.path.join(folder, TASK_WEIGHTS))
    return task


def export(task, path, max_shard_bytes):
    """`export_to_transformers` of both classifiers."""
    converter(type(task)).export_task(
        task, path, task.transformers_architecture, max_shard_bytes
    )
    logger.info("Exported %s to '%s'.", task.transformers_architecture, path)


def tokenizer_file(folder):
    """The SentencePiece model of any preset folder, or None."""
    fmt = preset_loader.detect_format(folder)
    if fmt == preset_loader.TRANSFORMERS:
        return preset_loader.foreign_tokenizer_file(fmt, folder)
    return preset_loader.foreign_tokenizer_file(preset_loader.KERAS_HUB, folder)

