"""Transformers T5Gemma checkpoints to and from keras-encdec.

Import reads a local folder written by
`transformers.T5GemmaForConditionalGeneration.save_pretrained` (config.json
plus safetensors, and tokenizer.model when present). Export writes a folder
that `T5GemmaForConditionalGeneration.from_pretrained` loads with the same
logits. Both stream tensor by tensor with a progress bar; a round trip is
bit-identical. Only JSON and safetensors are read: no code from a checkpoint
is ever run.
"""

import json
import os
import shutil

import numpy as np

from keras_encdec.convert.safetensors_io import CheckpointError
from keras_encdec.convert.safetensors_io import read_json_config
from keras_encdec.convert.safetensors_io import SafetensorsReader
from keras_encdec.convert.safetensors_io import SafetensorsWriter
from keras_encdec.convert.weight_mapping import WeightAssigner
from keras_encdec.convert.weight_mapping import check_all_assigned
from keras_encdec.convert.transformers_blocks import block_weight_map
from keras_encdec.convert.transformers_blocks import identity
from keras_encdec.convert.transformers_blocks import transpose
from keras_encdec.utils import atomic_save

CONFIG_FILE = "config.json"
TOKENIZER_FILE = "tokenizer.model"
MODEL_TYPE = "t5gemma"
LM_HEAD = "lm_head.out_proj.weight"
_ACTIVATIONS = {"gelu_pytorch_tanh": "gelu_approximate"}
_HF_ACTIVATIONS = {v: k for k, v in _ACTIVATIONS.items()}
_DTYPE_NAMES = {"float32": "float32", "bfloat16": "bfloat16", "float16": "float16"}


def read_config(folder):
    """Loads and checks a transformers T5Gemma `config.json`."""
    path, config = read_json_config(folder, CONFIG_FILE)
    if config.get("model_type") != MODEL_TYPE:
        raise CheckpointError(
            f"'{path}' is not a T5Gemma config. Received: "
            f"model_type={config.get('model_type')!r}. Expected {MODEL_TYPE!r}."
        )
    for side in ("encoder", "decoder"):
        if not isinstance(config.get(side), dict):
            raise CheckpointError(f"'{path}' has no '{side}' section.")
    return config


def _rope_theta(module):
    params = module.get("rope_parameters") or {}
    return float(params.get("rope_theta", module.get("rope_theta", 10000.0)))


def backbone_kwargs_from_config(config):
    """Maps a transformers T5Gemma config dict to `T5GemmaBackbone` kwargs."""
    encoder, decoder = config["encoder"], config["decoder"]
    kwargs = {}
    for side, module in (("encoder", encoder), ("decoder", decoder)):
        if module.get("attention_bias"):
            raise CheckpointError(
                "attention_bias=True is not supported (no published T5Gemma "
                f"uses it). Received it in the {side} config."
            )
        kwargs.update(
            {
                f"{side}_hidden_dim": module["hidden_size"],
                f"{side}_intermediate_dim": module["intermediate_size"],
                f"{side}_num_layers": module["num_hidden_layers"],
                f"{side}_num_heads": module["num_attention_heads"],
                f"{side}_num_kv_heads": module["num_key_value_heads"],
                f"{side}_head_dim": module["head_dim"],
                f"{side}_layer_types": list(module["layer_types"]),
                f"{side}_sliding_window": module.get("sliding_window"),
                f"{side}_attention_logit_soft_cap": module.get(
                    "attn_logit_softcapping"
                ),
                f"{side}_query_pre_attn_scalar": module["query_pre_attn_scalar"],
                f"{side}_rope_max_wavelength": _rope_theta(module),
            }
        )
    if encoder["vocab_size"] != decoder["vocab_size"]:
        raise CheckpointError(
            "Encoder and decoder vocabularies differ: "
            f"{encoder['vocab_size']} vs {decoder['vocab_size']}."
        )
    if encoder["rms_norm_eps"] != decoder["rms_norm_eps"]:
        raise CheckpointError("Encoder and decoder rms_norm_eps differ.")
    activation = decoder.get("hidden_activation", "gelu_pytorch_tanh")
    kwargs.update(
        {
            "vocabulary_size": decoder["vocab_size"],
            "final_logit_soft_cap": decoder.get("final_logit_softcapping"),
            "tie_word_embeddings": config.get("tie_word_embeddings", True),
            "rms_norm_eps": decoder["rms_norm_eps"],
            "hidden_activation": _ACTIVATIONS.get(activation, activation),
            "dropout_rate": config.get("dropout_rate", 0.0),
            "attention_dropout": config.get("attention_dropout", 0.0),
            "initializer_range": decoder.get("initializer_range", 0.02),
        }
    )
    return kwargs


def config_from_backbone(backbone, dtype="float32"):
    """Builds a transformers T5Gemma config dict for `backbone`."""
    modules = {}
    for side in ("encoder", "decoder"):
        get = lambda name: getattr(backbone, f"{side}_{name}")  # noqa: E731
        modules[side] = {
            "model_type": "t5_gemma_module",
            "vocab_size": backbone.vocabulary_size,
            "hidden_size": get("hidden_dim"),
            "intermediate_size": get("intermediate_dim"),
            "num_hidden_layers": get("num_layers"),
            "num_attention_heads": get("num_heads"),
            "num_key_value_heads": get("num_kv_heads"),
            "head_dim": get("head_dim"),
            "layer_types": list(get("layer_types")),
            "sliding_window": get("sliding_window"),
            "attn_logit_softcapping": get("attention_logit_soft_cap"),
            "final_logit_softcapping": backbone.final_logit_soft_cap,
            "query_pre_attn_scalar": get("query_pre_attn_scalar")
            or get("head_dim"),
            "rope_parameters": {
                "rope_type": "default",
                "rope_theta": get("rope_max_wavelength"),
            },
            "rms_norm_eps": backbone.rms_norm_eps,
            "hidden_activation": _HF_ACTIVATIONS.get(
                backbone.hidden_activation, backbone.hidden_activation
            ),
            "attention_bias": False,
            "initializer_range": backbone.initializer_range,
            "tie_word_embeddings": backbone.tie_word_embeddings,
            "pad_token_id": 0,
            "eos_token_id": 1,
            "bos_token_id": 2,
        }
    return {
        "architectures": ["T5GemmaForConditionalGeneration"],
        "model_type": MODEL_TYPE,
        "encoder": modules["encoder"],
        "decoder": modules["decoder"],
        "is_encoder_decoder": True,
        "tie_word_embeddings": backbone.tie_word_embeddings,
        "vocab_size": backbone.vocabulary_size,
        "dropout_rate": backbone.dropout_rate,
        "attention_dropout": backbone.attention_dropout,
        "pad_token_id": 0,
        "eos_token_id": 1,
        "bos_token_id": 2,
        "decoder_start_token_id": 2,
        "dtype": dtype,
    }


def set_token_ids(config, tokenizer):
    """Writes the tokenizer's `<pad>`, `<eos>` and `<bos>` ids (and the
    decoder start, `<bos>`) into a transformers config dict."""
    for key, token in (
        ("pad_token_id", "<pad>"),
        ("eos_token_id", "<eos>"),
        ("bos_token_id", "<bos>"),
    ):
        config[key] = tokenizer.token_to_id(token)
    config["decoder_start_token_id"] = config["bos_token_id"]


def write_tokenizer(tokenizer, folder):
    """Writes the SentencePiece model as `folder/tokenizer.model`."""
    target = os.path.join(folder, TOKENIZER_FILE)
    if isinstance(tokenizer.proto, bytes):
        with open(target, "wb") as f:
            f.write(tokenizer.proto)
    else:
        shutil.copyfile(tokenizer.proto, target)


def checkpoint_dtype(folder, config=None):
    """The dtype a checkpoint was saved in (config first, else the file)."""
    config = config or read_config(folder)
    name = config.get("dtype") or config.get("torch_dtype")
    if name in _DTYPE_NAMES:
        return _DTYPE_NAMES[name]
    reader = SafetensorsReader(folder)
    return str(reader.dtype(reader.keys()[0]))


def encoder_weight_map(model, prefix="model.encoder"):
    """Yields `(variable, hf_name, to_keras, to_hf)` for the encoder weights.

    `model` is a `T5GemmaBackbone` or a `T5GemmaEncoderModel` (both hold
    `token_embedding`, `encoder_layers` and `encoder_norm`). `prefix` is
    `"model.encoder"` in task checkpoints and `"encoder"` in a bare
    transformers `T5GemmaEncoderModel`.
    """
    yield model.token_embedding.embeddings, (
        f"{prefix}.embed_tokens.weight"
    ), identity, identity
    yield model.encoder_norm.scale, f"{prefix}.norm.weight", (
        identity
    ), identity
    for i, layer in enumerate(model.encoder_layers):
        yield from block_weight_map(layer, f"{prefix}.layers.{i}")


def weight_map(backbone):
    """Yields `(variable, hf_name, to_keras, to_hf)` for every weight.

    The tied LM head is not listed (transformers stores it once, as the
    decoder embedding); an untied head maps to the reverse embedding.
    """
    yield from encoder_weight_map(backbone)
    yield backbone.decoder_token_embedding.embeddings, (
        "model.decoder.embed_tokens.weight"
    ), identity, identity
    if not backbone.tie_word_embeddings:
        yield backbone.decoder_token_embedding.reverse_embeddings, LM_HEAD, (
            transpose
        ), transpose
    yield backbone.decoder_norm.scale, "model.decoder.norm.weight", (
        identity
    ), identity
    for i, layer in enumerate(backbone.decoder_layers):
        yield from block_weight_map(layer, f"model.decoder.layers.{i}")


def load_transformers_weights(backbone, folder):
    """Streams a transformers T5Gemma checkpoint into `backbone`."""
    ignored = [LM_HEAD] if backbone.tie_word_embeddings else []
    load_mapping(backbone, list(weight_map(backbone)), folder, ignored)


def load_mapping(model, mapping, folder, ignored=(), description=None):
    """Assigns every `(variable, hf_name, to_keras, _)` of `mapping` from the
    safetensors in `folder`; every other tensor must be in `ignored` (names
    or a predicate), and every weight of `model` must be assigned. Tensors
    are read one at a time, so only the mapped ones reach memory."""
    reader = SafetensorsReader(folder)
    if callable(ignored):
        ignored = [name for name in reader.keys() if ignored(name)]
    with WeightAssigner(
        reader.get,
        reader.keys(),
        total=len(mapping),
        description=description or "Loading transformers T5Gemma",
        ignored_sources=ignored,
    ) as assign:
        for variable, name, to_keras, _ in mapping:
            assign(variable, name, to_keras)
    check_all_assigned(model.weights, assign)


def export_task(lm, path, max_shard_bytes=2 * 1024**3, overwrite=False):
    """Writes `lm` (a `T5GemmaSeq2SeqLM` or subclass) as a transformers folder,
    atomically (see `T5GemmaSeq2SeqLM.export_to_transformers`)."""
    adapted = [
        layer.path
        for layer in lm.backbone._flatten_layers(include_self=False)
        if getattr(layer, "lora_enabled", False)
    ]
    if adapted:
        raise ValueError(
            f"LoRA is enabled on {len(adapted)} projections (e.g. "
            f"{adapted[0]!r}); transformers checkpoints hold plain kernels. "
            "Call `backbone.merge_lora()` first, then export."
        )
    needed = atomic_save.variables_nbytes(lm.backbone.weights)
    with atomic_save.atomic_folder(path, overwrite, needed) as staging:
        _write_task(lm, staging, max_shard_bytes)


def _write_task(lm, path, max_shard_bytes):
    # The task's family converter (T5Gemma or T5Gemma 2) writes the model.
    converter = lm.transformers_converter
    dtype = str(lm.backbone.token_embedding.embeddings.dtype)
    config = converter.config_from_backbone(lm.backbone, dtype)
    tokenizer = None if lm.preprocessor is None else lm.preprocessor.tokenizer
    if tokenizer is not None:
        set_token_ids(config, tokenizer)
    with open(os.path.join(path, "config.json"), "w") as f:
        json.dump(config, f, indent=2)
    converter.export_transformers_weights(
        lm.backbone, path, max_shard_bytes=max_shard_bytes
    )
    if tokenizer is not None:
        write_tokenizer(tokenizer, path)


def export_transformers_weights(backbone, folder, max_shard_bytes=2 * 1024**3):
    """Streams `backbone`'s weights into transformers safetensors shards."""
    write_mapping(list(weight_map(backbone)), folder, max_shard_bytes)


def write_mapping(mapping, folder, max_shard_bytes=2 * 1024**3):
    """Streams every `(variable, hf_name, _, to_hf)` of `mapping` into
    safetensors shards in `folder`, keeping each variable's dtype."""
    from tqdm.auto import tqdm

    with SafetensorsWriter(folder, max_shard_bytes) as writer:
        for variable, name, _, to_hf in tqdm(
            mapping, desc="Exporting to transformers", unit="tensor", leave=False
        ):
            value = np.asarray(_to_numpy(variable))
            writer.add(name, to_hf(value))


def _to_numpy(variable):
    from keras import ops

    value = ops.convert_to_numpy(variable.value)
    if str(variable.dtype) == "bfloat16":
        import ml_dtypes

        value = value.astype(ml_dtypes.bfloat16)
    return value
