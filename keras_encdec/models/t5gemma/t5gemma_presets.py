"""The T5Gemma preset registry: published checkpoints and embedded presets.

Published presets come from `keras_encdec/presets/t5gemma/t5gemma_<pair>.json`
(one backbone config per size pair, four variants each); embedded presets
are folders under `keras_encdec/presets/` whose backbone is a
`T5GemmaBackbone`. See `keras_encdec.models.preset_registry`. Parameter
counts are computed from the configs (`count_parameters`), never typed.
"""

from keras_encdec.models.preset_registry import load_registry

EMBEDDED_PRESET = "t5gemma_tiny_random"


def _attention_parameters(query_dim, kv_input_dim, num_heads, num_kv_heads,
                          head_dim):
    query_and_output = 2 * query_dim * num_heads * head_dim
    key_and_value = 2 * kv_input_dim * num_kv_heads * head_dim
    return query_and_output + key_and_value


def count_parameters(config):
    """Counts the weights of a `T5GemmaBackbone` config, analytically.

    The count matches `T5GemmaBackbone(**config).count_params()`: encoder
    and decoder embeddings are counted separately (as keras-hub does), plus
    a separate LM head `[decoder_width, vocab]` when embeddings are untied.
    Per encoder block: self-attention, gated MLP (gate, up, down) and 4 RMS
    norm scales. Per decoder block: self-attention, cross-attention (keys and
    values read the encoder width), gated MLP and 6 norm scales. Plus one
    final norm per stack. Nothing is built or allocated.

    Args:
        config: dict. `T5GemmaBackbone` keyword arguments, e.g. a preset's
            `"config"` or `backbone.get_config()`. Keys other than the sizes
            are ignored.

    Returns:
        int. The number of parameters.

    Examples:

    >>> count_parameters({
    ...     "vocabulary_size": 256000,
    ...     "encoder_hidden_dim": 512, "encoder_intermediate_dim": 1024,
    ...     "encoder_num_layers": 8, "encoder_num_heads": 8,
    ...     "encoder_num_kv_heads": 8, "encoder_head_dim": 64,
    ...     "decoder_hidden_dim": 512, "decoder_intermediate_dim": 1024,
    ...     "decoder_num_layers": 8, "decoder_num_heads": 8,
    ...     "decoder_num_kv_heads": 8, "decoder_head_dim": 64,
    ... })
    312517632
    """
    vocab = config["vocabulary_size"]
    enc = {k[len("encoder_"):]: v for k, v in config.items()
           if k.startswith("encoder_")}
    dec = {k[len("decoder_"):]: v for k, v in config.items()
           if k.startswith("decoder_")}

    def mlp(side):
        return 3 * side["hidden_dim"] * side["intermediate_dim"]

    def self_attention(side):
        return _attention_parameters(
            side["hidden_dim"], side["hidden_dim"], side["num_heads"],
            side["num_kv_heads"], side["head_dim"],
        )

    encoder_block = self_attention(enc) + mlp(enc) + 4 * enc["hidden_dim"]
    cross_attention = _attention_parameters(
        dec["hidden_dim"], enc["hidden_dim"], dec["num_heads"],
        dec["num_kv_heads"], dec["head_dim"],
    )
    decoder_block = (
        self_attention(dec) + cross_attention + mlp(dec) + 6 * dec["hidden_dim"]
    )
    embeddings = vocab * (enc["hidden_dim"] + dec["hidden_dim"])
    if not config.get("tie_word_embeddings", True):
        embeddings += vocab * dec["hidden_dim"]
    final_norms = enc["hidden_dim"] + dec["hidden_dim"]
    return (
        embeddings
        + enc["num_layers"] * encoder_block
        + dec["num_layers"] * decoder_block
        + final_norms
    )


T5GEMMA_PRESETS = load_registry(
    "t5gemma",
    "T5GemmaBackbone",
    count_parameters,
    official_name="T5Gemma",
    hf_prefix="google/t5gemma-",
    kaggle_model="keras/t5-gemma",
)
