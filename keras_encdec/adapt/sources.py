"""Decoder-only Gemma 2 and Gemma 3 checkpoints, read through one interface.

`open_source(x)` accepts a keras-hub `GemmaBackbone` / `GemmaCausalLM` (with
Gemma 2 settings) or `Gemma3Backbone` / `Gemma3CausalLM` (text), a keras-hub
preset name or folder, a local transformers `Gemma2ForCausalLM` /
`Gemma3ForCausalLM` folder (config.json + safetensors), or a Gemma 3 GGUF
file, and returns a `GemmaSource`:

- `config`: the architecture, as a dict with the keys of `CONFIG_KEYS`
  (already in `T5GemmaBackbone` terms: real FFN width, query scalar, ...);
- `tensor(role, layer)`: `(name, transform)`, the source tensor holding one
  weight and the layout change that brings it to keras-encdec's layout;
- `names()` / `read(name)`: every tensor name, and one tensor as numpy;
  `read_role(role, layer)`: one weight in keras-encdec's layout;
- `tokenizer_proto`: the SentencePiece model (bytes) or None.

Which model is "the source": a keras-hub object is taken as the network it
actually computes. keras-hub 0.32's `GemmaDecoderBlock` hard-codes
`query_head_dim_normalize=True` for its attention, so the attention scale is
`head_dim ** -0.5` whatever the backbone flag says; we read the flag from the
attention layers, so the adapted model computes what the source computes.
keras-hub's sliding window keeps keys with `|q - k| <= W - 1` on top of its
causal mask, i.e. `q - W < k <= q`: the same keys as transformers' Gemma 2
(`k > q - W`), so both source kinds map `W` to our `sliding_window` as is.
Only JSON, safetensors, GGUF and keras-hub's own classes are loaded: no code
from a checkpoint is run. The readers live in `keras_hub_source`,
`transformers_source` and `gguf_source`.
"""
import os

from keras_encdec.adapt.gguf_source import from_gguf
from keras_encdec.adapt.gguf_source import is_gguf_file
from keras_encdec.adapt.keras_hub_source import from_keras_hub
from keras_encdec.adapt.keras_hub_source import from_keras_hub_preset
from keras_encdec.adapt.source_types import AdaptationError  # noqa: F401
from keras_encdec.adapt.source_types import GemmaSource
from keras_encdec.adapt.source_types import read_json
from keras_encdec.adapt.transformers_source import from_transformers_folder
from keras_encdec.convert.safetensors_io import CheckpointError


def open_source(source):
    """Returns a `GemmaSource` for any accepted source value.

    Args:
        source: a keras-hub `GemmaBackbone` / `GemmaCausalLM` (Gemma 2) or
            `Gemma3Backbone` / `Gemma3CausalLM`, a keras-hub preset name or
            folder, a transformers `Gemma2ForCausalLM` / `Gemma3ForCausalLM`
            folder, a Gemma 3 `.gguf` file, or a `GemmaSource`.

    Examples:

    >>> import keras_hub
    >>> backbone = keras_hub.models.GemmaBackbone(
    ...     vocabulary_size=32, num_layers=2, num_query_heads=2,
    ...     num_key_value_heads=1, hidden_dim=16, intermediate_dim=64,
    ...     head_dim=8, use_post_ffw_norm=True, use_post_attention_norm=True,
    ...     attention_logit_soft_cap=50.0, final_logit_soft_cap=30.0,
    ...     use_sliding_window_attention=True, sliding_window_size=4)
    >>> open_source(backbone).config["intermediate_dim"]
    32
    """
    if isinstance(source, GemmaSource):
        return source
    import keras_hub

    if isinstance(source, keras_hub.models.CausalLM):
        tokenizer = getattr(source.preprocessor, "tokenizer", None)
        return from_keras_hub(source.backbone, tokenizer, type(source).__name__)
    if isinstance(source, keras_hub.models.Backbone):
        return from_keras_hub(source, None, type(source).__name__)
    if not isinstance(source, (str, os.PathLike)):
        raise TypeError(
            "A source must be a keras-hub Gemma 2 or Gemma 3 backbone or "
            "causal LM, a keras-hub preset name or folder, a transformers "
            "Gemma2/Gemma3ForCausalLM folder or a Gemma 3 GGUF file. "
            f"Received: {type(source).__name__}."
        )
    source = os.fspath(source)
    if is_gguf_file(source):
        return from_gguf(source)
    if os.path.isfile(source):
        raise CheckpointError(
            f"'{source}' is a file but not a GGUF file (no 'GGUF' magic "
            "bytes). Expected a .gguf file or a checkpoint folder."
        )
    if os.path.isdir(source):
        config = read_json(os.path.join(source, "config.json"))
        if "model_type" in config:
            return from_transformers_folder(source, config)
        return from_keras_hub_preset(source, config)
    known = set(keras_hub.models.GemmaBackbone.presets) | set(
        keras_hub.models.Gemma3Backbone.presets
    )
    if os.path.sep in source or source.startswith(".") or (
        "://" not in source and source not in known
    ):
        raise CheckpointError(
            f"Source {source!r} is not an existing folder or file, and not a "
            "keras-hub Gemma preset name. Expected a keras-hub preset name "
            "(e.g. 'gemma2_2b_en', 'gemma3_270m'), a keras-hub preset folder, "
            "a transformers Gemma2/Gemma3ForCausalLM folder or a Gemma 3 "
            ".gguf file."
        )
    return from_keras_hub_preset(source, None)
