"""The preset registry: published T5Gemma checkpoints and embedded presets.

Each `presets/t5gemma/<name>.json` file holds one published preset: its
metadata, its transformers (`hf://`) and keras-hub (`kaggle://`) handles and
its backbone config. Folders under `presets/` that hold a `config.json` are
embedded presets that load offline by name. Parameter counts are computed
from the configs (`count_parameters`) when the registry loads, never typed.
"""

import json
import os

PRESETS_DIR = os.environ.get(
    "KERAS_ENCDEC_PRESETS_DIR",
    os.path.join(os.path.dirname(__file__), "..", "..", "..", "presets"),
)
PUBLISHED_DIR = "t5gemma"
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


def _read_json(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, json.JSONDecodeError) as e:
        raise ValueError(f"Unreadable preset file '{path}': {e}.") from e


def _load_registry(root):
    """Reads every preset under `root`; adds computed `metadata["params"]`."""
    registry = {}
    root = os.path.abspath(root)
    if not os.path.isdir(root):
        return registry
    published = os.path.join(root, PUBLISHED_DIR)
    if os.path.isdir(published):
        for file_name in sorted(os.listdir(published)):
            if file_name.endswith(".json"):
                entry = _read_json(os.path.join(published, file_name))
                entry.setdefault("metadata", {})["params"] = count_parameters(
                    entry["config"]
                )
                registry[file_name.removesuffix(".json")] = entry
    for name in sorted(os.listdir(root)):
        folder = os.path.join(root, name)
        config_path = os.path.join(folder, "config.json")
        if name == PUBLISHED_DIR or not os.path.isfile(config_path):
            continue
        metadata_path = os.path.join(folder, "metadata.json")
        metadata = {}
        if os.path.isfile(metadata_path):
            metadata = _read_json(metadata_path)
        metadata["params"] = count_parameters(
            _read_json(config_path)["config"]
        )
        registry[name] = {"metadata": metadata, "path": folder}
    return registry


T5GEMMA_PRESETS = _load_registry(PRESETS_DIR)
