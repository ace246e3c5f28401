"""Local transformers `Gemma2ForCausalLM` folders as adaptation sources.

Only `config.json`, the safetensors files (through `SafetensorsReader`,
tensor by tensor) and `tokenizer.model` are read: no checkpoint code runs.
"""

import os

from keras_encdec.adapt.source_types import FULL
from keras_encdec.adapt.source_types import SLIDING
from keras_encdec.adapt.source_types import TOKENIZER_FILE
from keras_encdec.adapt.source_types import AdaptationError
from keras_encdec.adapt.source_types import GemmaSource
from keras_encdec.adapt.source_types import identity
from keras_encdec.adapt.source_types import read_json
from keras_encdec.adapt.source_types import transpose
from keras_encdec.convert.safetensors_io import CheckpointError
from keras_encdec.convert.safetensors_io import SafetensorsReader


def _hf_prefix(reader):
    for prefix in ("model.", ""):
        if f"{prefix}embed_tokens.weight" in reader:
            return prefix
    raise CheckpointError(
        f"'{reader.folder}' has no 'model.embed_tokens.weight': not a "
        "Gemma2ForCausalLM checkpoint."
    )


def from_transformers_folder(folder, config=None):
    """Wraps a local transformers `Gemma2ForCausalLM` folder as a source.

    Reads `config.json` and the safetensors headers now (so a missing or
    truncated file fails early) and each tensor when it is mapped.
    """
    if config is None:
        config = read_json(os.path.join(folder, "config.json"))
    model_type = config.get("model_type")
    if model_type != "gemma2":
        raise AdaptationError(
            f"'{folder}' holds a transformers {model_type!r} model, not "
            "Gemma 2 (model_type 'gemma2'). Only Gemma 2 checkpoints can be "
            "adapted."
        )
    if config.get("use_bidirectional_attention"):
        raise AdaptationError(
            f"'{folder}' sets use_bidirectional_attention=True: it is not a "
            "causal language model."
        )
    if config.get("attention_bias"):
        raise AdaptationError(
            f"'{folder}' sets attention_bias=True, which T5Gemma lacks."
        )
    reader = SafetensorsReader(folder)
    num_layers = config["num_hidden_layers"]
    layer_types = config.get("layer_types") or [
        SLIDING if i % 2 == 0 else FULL for i in range(num_layers)
    ]
    rope = config.get("rope_parameters") or {}
    activation = config.get("hidden_activation", "gelu_pytorch_tanh")
    if activation != "gelu_pytorch_tanh":
        raise AdaptationError(
            f"'{folder}' uses hidden_activation={activation!r}; Gemma 2 uses "
            "'gelu_pytorch_tanh'."
        )
    dtype = config.get("dtype") or config.get("torch_dtype") or "float32"
    arch = {
        "vocabulary_size": config["vocab_size"],
        "hidden_dim": config["hidden_size"],
        "intermediate_dim": config["intermediate_size"],
        "num_layers": num_layers,
        "num_heads": config["num_attention_heads"],
        "num_kv_heads": config["num_key_value_heads"],
        "head_dim": config["head_dim"],
        "layer_types": list(layer_types),
        "sliding_window": config.get("sliding_window"),
        "attention_logit_soft_cap": config.get("attn_logit_softcapping"),
        "final_logit_soft_cap": config.get("final_logit_softcapping"),
        "query_pre_attn_scalar": config["query_pre_attn_scalar"],
        "rope_max_wavelength": float(
            rope.get("rope_theta", config.get("rope_theta", 10000.0))
        ),
        "rms_norm_eps": config.get("rms_norm_eps", 1e-6),
        "hidden_activation": "gelu_approximate",
        "tie_word_embeddings": config.get("tie_word_embeddings", True),
        "dtype": dtype if dtype in ("float32", "bfloat16", "float16")
        else "float32",
    }
    prefix = _hf_prefix(reader)
    num_heads, kv_heads = arch["num_heads"], arch["num_kv_heads"]
    head_dim = arch["head_dim"]

    def heads_in(heads):
        return lambda w: w.T.reshape(w.shape[1], heads, head_dim)

    def heads_out(w):
        return w.T.reshape(num_heads, head_dim, w.shape[0])

    tensors = {
        ("embedding", None): (f"{prefix}embed_tokens.weight", identity),
        ("final_norm", None): (f"{prefix}norm.weight", identity),
    }
    if "lm_head.weight" in reader:
        tensors[("lm_head", None)] = ("lm_head.weight", transpose)
    for i in range(num_layers):
        base = f"{prefix}layers.{i}"
        tensors.update({
            ("query", i): (f"{base}.self_attn.q_proj.weight", heads_in(num_heads)),
            ("key", i): (f"{base}.self_attn.k_proj.weight", heads_in(kv_heads)),
            ("value", i): (f"{base}.self_attn.v_proj.weight", heads_in(kv_heads)),
            ("output", i): (f"{base}.self_attn.o_proj.weight", heads_out),
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
    missing = sorted(name for name, _ in tensors.values() if name not in reader)
    if missing:
        raise CheckpointError(
            f"The checkpoint in '{folder}' lacks tensors its config needs: "
            f"{missing[:6]}{' ...' if len(missing) > 6 else ''}."
        )
    extra = sorted(set(reader.keys()) - {name for name, _ in tensors.values()})
    if extra:
        raise CheckpointError(
            f"The checkpoint in '{folder}' has tensors a Gemma 2 model does "
            f"not: {extra[:6]}. The config does not match the weights."
        )
    proto = None
    path = os.path.join(folder, TOKENIZER_FILE)
    if os.path.isfile(path):
        with open(path, "rb") as f:
            proto = f.read()
    return GemmaSource(
        f"transformers folder '{folder}'", arch, tensors, reader.get, proto
    )
