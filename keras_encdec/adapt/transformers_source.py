"""Local transformers `Gemma2ForCausalLM` / `Gemma3ForCausalLM` folders as
adaptation sources.

Only `config.json`, the safetensors files (through `SafetensorsReader`,
tensor by tensor) and `tokenizer.model` are read: no checkpoint code runs.
"""

import os

from keras_encdec.adapt.source_types import FULL
from keras_encdec.adapt.source_types import GEMMA3
from keras_encdec.adapt.source_types import SLIDING
from keras_encdec.adapt.source_types import TOKENIZER_FILE
from keras_encdec.adapt.source_types import AdaptationError
from keras_encdec.adapt.source_types import GemmaSource
from keras_encdec.adapt.source_types import gemma2_extras
from keras_encdec.adapt.source_types import gemma3_layer_types
from keras_encdec.adapt.source_types import heads_in
from keras_encdec.adapt.source_types import heads_out
from keras_encdec.adapt.source_types import identity
from keras_encdec.adapt.source_types import read_json
from keras_encdec.adapt.source_types import transpose
from keras_encdec.convert.safetensors_io import CheckpointError
from keras_encdec.convert.safetensors_io import SafetensorsReader

MODEL_TYPES = {"gemma2": "Gemma2ForCausalLM", "gemma3_text": "Gemma3ForCausalLM"}


def _hf_prefix(reader):
    for prefix in ("model.", ""):
        if f"{prefix}embed_tokens.weight" in reader:
            return prefix
    raise CheckpointError(
        f"'{reader.folder}' has no 'model.embed_tokens.weight': not a "
        "Gemma2ForCausalLM or Gemma3ForCausalLM checkpoint."
    )


def _rope_factor(parameters, folder):
    """The linear RoPE scaling factor of one `rope_parameters` entry."""
    kind = (parameters or {}).get("rope_type", "default")
    if kind == "default":
        return 1.0
    if kind == "linear":
        return float(parameters["factor"])
    raise AdaptationError(
        f"'{folder}' uses rope_type={kind!r}; only 'default' and 'linear' "
        "RoPE can be adapted."
    )


def _gemma3_rope(config, folder):
    """`(global, local)` as `(wavelength, scaling factor)` pairs, from the
    new (`rope_parameters` keyed by layer type) or the old config format."""
    parameters = config.get("rope_parameters") or {}
    if FULL in parameters or SLIDING in parameters:
        full = parameters.get(FULL) or {}
        sliding = parameters.get(SLIDING) or {}
    else:
        full = dict(config.get("rope_scaling") or {})
        full.setdefault("rope_theta", config.get("rope_theta", 1e6))
        sliding = {"rope_theta": config.get("rope_local_base_freq", 1e4)}
    return (
        (float(full.get("rope_theta", 1e6)), _rope_factor(full, folder)),
        (float(sliding.get("rope_theta", 1e4)), _rope_factor(sliding, folder)),
    )


def _architecture(config, folder):
    """The source config (`CONFIG_KEYS`) of a Gemma 2 or Gemma 3 folder."""
    model_type = config.get("model_type")
    num_layers = config["num_hidden_layers"]
    dtype = config.get("dtype") or config.get("torch_dtype") or "float32"
    arch = {
        "vocabulary_size": config["vocab_size"],
        "hidden_dim": config["hidden_size"],
        "intermediate_dim": config["intermediate_size"],
        "num_layers": num_layers,
        "num_heads": config["num_attention_heads"],
        "num_kv_heads": config["num_key_value_heads"],
        "head_dim": config["head_dim"],
        "attention_logit_soft_cap": config.get("attn_logit_softcapping"),
        "final_logit_soft_cap": config.get("final_logit_softcapping"),
        "rms_norm_eps": config.get("rms_norm_eps", 1e-6),
        "hidden_activation": "gelu_approximate",
        "tie_word_embeddings": config.get("tie_word_embeddings", True),
        "dtype": dtype if dtype in ("float32", "bfloat16", "float16")
        else "float32",
    }
    if model_type == "gemma2":
        rope = config.get("rope_parameters") or {}
        wavelength = float(
            rope.get("rope_theta", config.get("rope_theta", 10000.0))
        )
        arch.update(
            layer_types=list(config.get("layer_types") or [
                SLIDING if i % 2 == 0 else FULL for i in range(num_layers)
            ]),
            sliding_window=config.get("sliding_window"),
            query_pre_attn_scalar=config["query_pre_attn_scalar"],
            rope_max_wavelength=wavelength,
            **gemma2_extras(wavelength),
        )
        return arch
    (wavelength, factor), (local, local_factor) = _gemma3_rope(config, folder)
    arch.update(
        layer_types=list(config.get("layer_types") or gemma3_layer_types(
            num_layers, config.get("sliding_window_pattern", 6)
        )),
        sliding_window=config.get("sliding_window", 4096),
        query_pre_attn_scalar=config.get("query_pre_attn_scalar", 256),
        rope_max_wavelength=wavelength,
        family=GEMMA3,
        use_query_key_norm=True,
        rope_local_max_wavelength=local,
        rope_scaling_factor=factor,
        rope_local_scaling_factor=local_factor,
    )
    return arch


def _check_config(config, folder):
    model_type = config.get("model_type")
    if model_type not in MODEL_TYPES:
        hint = ""
        if model_type == "gemma3":
            hint = (
                " That is the multimodal Gemma3ForConditionalGeneration; "
                "save its language model as a Gemma3ForCausalLM first."
            )
        raise AdaptationError(
            f"'{folder}' holds a transformers {model_type!r} model, not "
            "Gemma 2 or Gemma 3 text (model_type 'gemma2' or 'gemma3_text')."
            f"{hint} Only these checkpoints can be adapted."
        )
    if config.get("use_bidirectional_attention"):
        raise AdaptationError(
            f"'{folder}' sets use_bidirectional_attention=True: it is not a "
            "causal language model."
        )
    if config.get("attention_bias"):
        raise AdaptationError(
            f"'{folder}' sets attention_bias=True, which Gemma lacks."
        )
    activation = config.get("hidden_activation", "gelu_pytorch_tanh")
    if activation != "gelu_pytorch_tanh":
        raise AdaptationError(
            f"'{folder}' uses hidden_activation={activation!r}; Gemma uses "
            "'gelu_pytorch_tanh'."
        )


def from_transformers_folder(folder, config=None):
    """Wraps a local transformers `Gemma2ForCausalLM` or `Gemma3ForCausalLM`
    folder as a source.

    Reads `config.json` and the safetensors headers now (so a missing or
    truncated file fails early) and each tensor when it is mapped.
    """
    if config is None:
        config = read_json(os.path.join(folder, "config.json"))
    _check_config(config, folder)
    arch = _architecture(config, folder)
    reader = SafetensorsReader(folder)
    prefix = _hf_prefix(reader)
    num_heads, kv_heads = arch["num_heads"], arch["num_kv_heads"]
    head_dim = arch["head_dim"]

    tensors = {
        ("embedding", None): (f"{prefix}embed_tokens.weight", identity),
        ("final_norm", None): (f"{prefix}norm.weight", identity),
    }
    if "lm_head.weight" in reader:
        tensors[("lm_head", None)] = ("lm_head.weight", transpose)
    query_in = heads_in(num_heads, head_dim)
    kv_in = heads_in(kv_heads, head_dim)
    output_in = heads_out(num_heads, head_dim)
    for i in range(arch["num_layers"]):
        base = f"{prefix}layers.{i}"
        tensors.update({
            ("query", i): (f"{base}.self_attn.q_proj.weight", query_in),
            ("key", i): (f"{base}.self_attn.k_proj.weight", kv_in),
            ("value", i): (f"{base}.self_attn.v_proj.weight", kv_in),
            ("output", i): (f"{base}.self_attn.o_proj.weight", output_in),
            ("pre_attention_norm", i): (f"{base}.input_layernorm.weight", identity),
            ("post_attention_norm", i): (
                f"{base}.post_attention_layernorm.weight", identity),
            ("pre_ffw_norm", i): (
                f"{base}.pre_feedforward_layernorm.weight", identity),
            ("post_ffw_norm", i): (
                f"{base}.post_feedforward_layernorm.weight", identity),
            ("gate", i): (f"{base}.mlp.gate_proj.weight", transpose),
            ("up", i): (f"{base}.mlp.up_proj.weight", transpose),
            ("down", i): (f"{base}.mlp.down_proj.weight", transpose),
        })
        if arch["use_query_key_norm"]:
            tensors[("query_norm", i)] = (
                f"{base}.self_attn.q_norm.weight", identity)
            tensors[("key_norm", i)] = (
                f"{base}.self_attn.k_norm.weight", identity)
    missing = sorted(name for name, _ in tensors.values() if name not in reader)
    if missing:
        raise CheckpointError(
            f"The checkpoint in '{folder}' lacks tensors its config needs: "
            f"{missing[:6]}{' ...' if len(missing) > 6 else ''}."
        )
    extra = sorted(set(reader.keys()) - {name for name, _ in tensors.values()})
    if extra:
        raise CheckpointError(
            f"The checkpoint in '{folder}' has tensors a "
            f"{MODEL_TYPES[config['model_type']]} does not: {extra[:6]}. The "
            "config does not match the weights."
        )
    proto = None
    path = os.path.join(folder, TOKENIZER_FILE)
    if os.path.isfile(path):
        with open(path, "rb") as f:
            proto = f.read()
    return GemmaSource(
        f"transformers folder '{folder}'", arch, tensors, reader.get, proto
    )
