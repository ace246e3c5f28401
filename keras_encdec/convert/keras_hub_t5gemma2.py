"""keras-hub T5Gemma 2 presets to keras-encdec.

Reads a folder written by keras-hub's `T5Gemma2Backbone.save_to_preset` (or
a `T5Gemma2Seq2SeqLM` one, whose tokenizer `T5Gemma2Tokenizer.from_preset`
then loads): `config.json` and the Keras 3 weights file(s), read tensor by
tensor with `h5py` (`KerasWeightsReader`). keras-hub classes are never
instantiated and nothing from the folder is executed.

keras-hub stores what this package keeps once twice: an encoder and a
decoder token table, and (with a vision encoder) an encoder and a decoder
EOI row. Both copies must be equal (they are after keras-hub's transformers
conversion; fine-tuning in keras-hub unties them, keras-hub issue 2619):
otherwise loading raises and says which tensors differ and by how much.

Numerics follow transformers, not keras-hub, where the two differ (see
`../shared/ANCHORS.md` section 7):

- keras-hub applies `attn_logit_softcapping`; transformers and this package
  ignore it. A preset with one set loads, with a warning.
- A keras-hub backbone without a vision encoder does no EOI replacement
  (the token's table row is used). Such a preset loads with the EOI row set
  to that scaled table row, so the forward pass is keras-hub's.
- keras-hub skips the EOI replacement in cached decoding; this package
  does not (as transformers).
- keras-hub's full-attention RoPE base is fixed at 1e6 (its converter reads
  only the sliding base): `rope_global_wavelength` is 1e6.

keras-hub places image features with `vision_indices`; this package at the
`image_token_index` tokens, which keras-hub's config does not hold: it is
transformers' default (256001) unless passed to `from_preset`. The config
mapping is in `keras_hub_t5gemma2_config`.
"""

import logging

import numpy as np

from keras_encdec.convert.keras_hub_t5gemma import KerasWeightsReader
from keras_encdec.convert.keras_hub_t5gemma import _numbered
from keras_encdec.convert.keras_hub_t5gemma2_config import (
    backbone_kwargs_from_config,
)
from keras_encdec.convert.keras_hub_t5gemma2_config import read_config
from keras_encdec.convert.weight_mapping import WeightAssigner
from keras_encdec.convert.weight_mapping import check_all_assigned
from keras_encdec.errors import WeightMismatchError

logger = logging.getLogger(__name__)

ENCODER_TABLE = "layers/embedding/vars/0"
DECODER_TABLE = "layers/reversible_embedding/vars/0"
ENCODER_EOI = "vars/0"
DECODER_EOI = "vars/1"
_ENCODER_LAYER = "t5_gemma2_encoder_layer"
_DECODER_LAYER = "t5_gemma2_decoder_layer"
_VISION = "layers/gemma3_vision_encoder/layers"


def _tower_map(tower):
    """`(variable, tensor name)` of keras-hub's `Gemma3VisionEncoderBlock`
    as keras-hub nests it, for our tower (the same class)."""
    base = f"{_VISION}/gemma3_vision_encoder_block"
    embeddings = tower.vision_embeddings
    yield embeddings.patch_embedding.kernel, (
        f"{base}/vision_embeddings/patch_embedding/vars/0"
    )
    yield embeddings.patch_embedding.bias, (
        f"{base}/vision_embeddings/patch_embedding/vars/1"
    )
    yield embeddings.position_embedding.embeddings, (
        f"{base}/vision_embeddings/position_embedding/vars/0"
    )
    for i, block in enumerate(tower.resblocks):
        prefix = f"{base}/resblocks/{_numbered('gemma3_vision_encoder_layer', i)}"
        for layer, name in (
            (block.attn.query_proj, "attn/query_proj"),
            (block.attn.key_proj, "attn/key_proj"),
            (block.attn.value_proj, "attn/value_proj"),
            (block.attn.out_proj, "attn/out_proj"),
            (block.mlp_dense_1, "mlp_dense_1"),
            (block.mlp_dense_2, "mlp_dense_2"),
        ):
            yield layer.kernel, f"{prefix}/{name}/vars/0"
            yield layer.bias, f"{prefix}/{name}/vars/1"
        for norm, name in ((block.layer_norm_1, "layer_norm_1"),
                           (block.layer_norm_2, "layer_norm_2")):
            yield norm.gamma, f"{prefix}/{name}/vars/0"
            yield norm.beta, f"{prefix}/{name}/vars/1"
    norm = tower.encoder_layer_norm
    yield norm.gamma, f"{base}/encoder_layer_norm/vars/0"
    yield norm.beta, f"{base}/encoder_layer_norm/vars/1"


def weight_map(backbone):
    """Yields `(variable, keras-hub tensor name)` for every weight but the
    token table and EOI row (handled by `load_keras_hub_weights`)."""
    yield backbone.encoder_norm.scale, "layers/rms_normalization/vars/0"
    yield backbone.decoder_norm.scale, "layers/rms_normalization_1/vars/0"
    for hub_name, attention_name, layers in (
        (_ENCODER_LAYER, "self_attn", backbone.encoder_layers),
        (_DECODER_LAYER, "merged_attn", backbone.decoder_layers),
    ):
        for i, layer in enumerate(layers):
            prefix = f"layers/{_numbered(hub_name, i)}"
            attention = layer.self_attention
            for name, part in (
                ("query_dense", attention.query_dense.kernel),
                ("key_dense", attention.key_dense.kernel),
                ("value_dense", attention.value_dense.kernel),
                ("output_dense", attention.output_dense.kernel),
                ("query_norm", attention.query_norm.scale),
                ("key_norm", attention.key_norm.scale),
            ):
                yield part, f"{prefix}/{attention_name}/{name}/vars/0"
            for name, norm in (
                ("pre_self_attn_layernorm", layer.pre_self_attention_norm),
                ("post_self_attn_layernorm", layer.post_self_attention_norm),
                ("pre_feedforward_layernorm", layer.pre_ffw_norm),
                ("post_feedforward_layernorm", layer.post_ffw_norm),
            ):
                yield norm.scale, f"{prefix}/{name}/vars/0"
            for name, dense in (
                ("gate_proj", layer.mlp.gating),
                ("up_proj", layer.mlp.gating_2),
                ("down_proj", layer.mlp.linear),
            ):
                yield dense.kernel, f"{prefix}/mlp/{name}/vars/0"
    if backbone.vision_encoder is not None:
        yield from _tower_map(backbone.vision_encoder.tower)
        projector = backbone.vision_encoder.projector
        output = f"{_VISION}/gemma3_vision_output"
        yield projector.norm.scale, f"{output}/vision_soft_embedding_norm/vars/0"
        yield projector.projection, f"{output}/vision_input_projection/vars/0"


def check_same(reader, first, second, what):
    """Raises `WeightMismatchError` unless tensors `first` and `second` are
    equal, saying by how much they differ."""
    a = reader.get(first).astype("float32")
    b = reader.get(second).astype("float32")
    if a.shape != b.shape or not np.array_equal(a, b):
        detail = f"shapes {a.shape} and {b.shape}"
        if a.shape == b.shape:
            diff = np.abs(a - b)
            rows = int(np.sum(np.any(diff.reshape(len(diff), -1) > 0, axis=-1)))
            detail = (
                f"max-abs difference {float(diff.max()):.6g}, "
                f"{rows} of {len(diff)} rows differ"
                if a.ndim > 1
                else f"max-abs difference {float(diff.max()):.6g}"
            )
        raise WeightMismatchError(
            f"The keras-hub preset's encoder and decoder {what} differ "
            f"('{first}' vs '{second}': {detail}). keras-encdec's T5Gemma 2 "
            "keeps one (as transformers); it will not pick one silently. "
            "Tie them in keras-hub before saving (copy one into the other) "
            "or load a checkpoint whose copies are equal."
        )


def _scaled_row(index, width):
    """The keras-hub text-only EOI: table row `index` times `sqrt(width)`,
    rounded to the table's dtype (as the forward pass computes it)."""

    def transform(table):
        if index is None or not 0 <= index < len(table):
            return np.zeros((width,), table.dtype)
        scale = np.asarray(width**0.5).astype(table.dtype)
        return (table[index] * scale).astype(table.dtype)

    return transform


def load_keras_hub_weights(backbone, folder):
    """Streams a keras-hub T5Gemma 2 weights file into `backbone`."""
    mapping = list(weight_map(backbone))
    embedding = backbone.token_embedding
    with KerasWeightsReader(folder) as reader:
        keys = set(reader.keys())
        check_same(reader, ENCODER_TABLE, DECODER_TABLE, "token tables")
        hub_vision = ENCODER_EOI in keys
        ignored = [DECODER_TABLE] if hub_vision else []
        if hub_vision:
            check_same(reader, ENCODER_EOI, DECODER_EOI, "EOI embeddings")
            ignored.append(DECODER_EOI)
            if backbone.vision_encoder is None:  # text_only=True
                ignored += [k for k in keys if k.startswith(_VISION)]
        with WeightAssigner(
            reader.get,
            keys,
            total=len(mapping) + 2,
            description="Loading keras-hub T5Gemma 2",
            ignored_sources=ignored,
        ) as assign:
            assign(embedding.embeddings, ENCODER_TABLE)
            if hub_vision:
                assign(embedding.eoi_embedding, ENCODER_EOI)
            else:
                logger.info(
                    "keras-hub T5Gemma 2 without vision does no EOI "
                    "replacement: the EOI row is set to the scaled table "
                    "row of token %s, which gives keras-hub's outputs.",
                    backbone.eoi_token_index,
                )
                assign(
                    embedding.eoi_embedding,
                    DECODER_TABLE,
                    _scaled_row(backbone.eoi_token_index, backbone.hidden_dim),
                )
            for variable, name in mapping:
                assign(variable, name)
    check_all_assigned(backbone.weights, assign)


def load_backbone(cls, folder, load_weights=True, text_only=False, **kwargs):
    """Builds `cls` from a keras-hub `T5Gemma2Backbone.save_to_preset` folder.

    Args:
        cls: `keras_encdec.models.T5Gemma2Backbone` (or a subclass).
        folder: str. The keras-hub preset folder.
        load_weights: bool. Load the weights, or keep a random init.
            Defaults to `True`.
        text_only: bool. Skip the preset's vision encoder. Defaults to
            `False`.
        **kwargs: backbone kwargs overriding the folder's config (e.g.
            `dtype`, `image_token_index`).

    Returns:
        A `cls` instance.

    Examples:

    >>> import tempfile
    >>> import keras_hub
    >>> from keras_encdec.models import T5Gemma2Backbone
    >>> folder = tempfile.mkdtemp()
    >>> hub = keras_hub.models.T5Gemma2Backbone(
    ...     vocabulary_size=32, encoder_hidden_dim=16,
    ...     encoder_intermediate_dim=32, encoder_num_layers=1,
    ...     encoder_num_attention_heads=2, encoder_num_key_value_heads=1,
    ...     encoder_head_dim=8, encoder_layer_types=["full_attention"],
    ...     decoder_hidden_dim=16, decoder_intermediate_dim=32,
    ...     decoder_num_layers=1, decoder_num_attention_heads=2,
    ...     decoder_num_key_value_heads=1, decoder_head_dim=8,
    ...     decoder_layer_types=["full_attention"], eoi_token_index=30)
    >>> # One token table, as in the released checkpoints (a new keras-hub
    >>> # backbone draws two).
    >>> table = hub.token_embedding.embeddings
    >>> _ = hub.decoder_token_embedding.embeddings.assign(table)
    >>> hub.save_to_preset(folder)
    >>> backbone = load_backbone(T5Gemma2Backbone, folder)
    >>> backbone.decoder_num_kv_heads
    1
    """
    backbone_kwargs = backbone_kwargs_from_config(read_config(folder), text_only)
    backbone_kwargs.update(kwargs)
    logger.info("Building T5Gemma2Backbone from keras-hub preset '%s'.", folder)
    backbone = cls(**backbone_kwargs)
    if load_weights:
        load_keras_hub_weights(backbone, folder)
    return backbone
