"""Weight roles: every weight of each family has exactly one role, with the
expected shape, and LoRA, the layout map and the converters read them."""

import collections

import keras
import numpy as np
import pytest

from keras_encdec import testing
from keras_encdec.convert.transformers_blocks import block_weight_map
from keras_encdec.models import T5Gemma2Backbone
from keras_encdec.models import T5GemmaBackbone
from keras_encdec.models import T5GemmaSeq2SeqLM
from keras_encdec.training import resolve_lora_targets
from keras_encdec.weight_roles import SHARDING
from keras_encdec.weight_roles import is_projection
from keras_encdec.weight_roles import split_role

pytestmark = pytest.mark.skipif(
    keras.backend.backend() != "jax", reason="backend-independent"
)
VOCAB, ENC, DEC, FFN = 64, 24, 16, 32
VISION = dict(image_size=28, patch_size=7, hidden_dim=16, num_layers=1,
              num_heads=2, intermediate_dim=32)
BLOCK_ROLES = {
    f"{sublayer}.{weight}"
    for sublayer, weights in (
        ("attention", ("query", "key", "value", "output", "pre_norm",
                       "post_norm")),
        ("mlp", ("gate", "up", "down", "pre_norm", "post_norm")),
    )
    for weight in weights
}
CROSS_ROLES = {
    f"cross_attention.{weight}"
    for weight in ("query", "key", "value", "output", "pre_norm", "post_norm")
}
QK_NORM_ROLES = {"attention.query_norm", "attention.key_norm"}


def t5gemma():
    """Unbalanced (encoder 24, decoder 16) and untied: every role appears."""
    return T5GemmaBackbone(
        **testing.tiny_backbone_kwargs(
            encoder_hidden_dim=ENC, decoder_hidden_dim=DEC,
            tie_word_embeddings=False,
        )
    )


def t5gemma2():
    return T5Gemma2Backbone(
        vocabulary_size=VOCAB, hidden_dim=DEC,
        encoder_intermediate_dim=FFN, encoder_num_layers=2,
        encoder_num_heads=2, encoder_num_kv_heads=1, encoder_head_dim=8,
        decoder_intermediate_dim=FFN, decoder_num_layers=2,
        decoder_num_heads=4, decoder_num_kv_heads=2, decoder_head_dim=4,
        eoi_token_index=61, image_token_index=62, mm_tokens_per_image=4,
        vision_config=VISION,
    )


def check_exactly_once(backbone):
    """Returns `{(stack, index, role): variable}` after checking that the
    rows name every weight once and no role twice."""
    rows = backbone.weight_roles()
    counts = collections.Counter(id(row[3]) for row in rows)
    assert set(counts) == {id(v) for v in backbone.weights}
    assert max(counts.values()) == 1
    table = {row[:3]: row[3] for row in rows}
    assert len(table) == len(rows)
    return table


def stack_roles(table, stack, index):
    return {role for (s, i, role) in table if (s, i) == (stack, index)}


def test_t5gemma_roles_cover_every_weight_with_expected_shapes():
    backbone = t5gemma()
    table = check_exactly_once(backbone)
    assert len(table) == len(backbone.weights) == 2 + 1 + 2 + 2 * 11 + 2 * 17
    assert stack_roles(table, "encoder", None) == {"embedding", "final_norm"}
    assert stack_roles(table, "decoder", None) == {
        "embedding", "lm_head", "final_norm"}
    for i in range(2):
        assert stack_roles(table, "encoder", i) == BLOCK_ROLES
        assert stack_roles(table, "decoder", i) == BLOCK_ROLES | CROSS_ROLES
    shape = lambda *key: tuple(table[key].shape)  # noqa: E731
    assert shape("encoder", None, "embedding") == (VOCAB, ENC)
    assert shape("decoder", None, "lm_head") == (DEC, VOCAB)
    assert shape("encoder", 1, "attention.query") == (ENC, 2, 8)
    assert shape("decoder", 0, "attention.key") == (DEC, 1, 8)
    # Cross-attention keys and values read the (wider) encoder output.
    assert shape("decoder", 0, "cross_attention.key") == (ENC, 1, 8)
    assert shape("decoder", 0, "cross_attention.value") == (ENC, 1, 8)
    assert shape("decoder", 1, "cross_attention.output") == (2, 8, DEC)
    assert shape("decoder", 1, "cross_attention.pre_norm") == (DEC,)
    assert shape("encoder", 0, "mlp.gate") == (ENC, FFN)
    assert shape("encoder", 0, "mlp.down") == (FFN, ENC)
    assert table["decoder", 1, "mlp.up"].path == (
        "decoder_layer_1/mlp/ffw_gating_2/kernel")


def test_t5gemma2_roles_cover_text_and_vision_weights():
    backbone = t5gemma2()
    table = check_exactly_once(backbone)
    # The one table is listed once, under the decoder (it is the LM head).
    assert stack_roles(table, "encoder", None) == {"final_norm"}
    assert stack_roles(table, "decoder", None) == {
        "embedding", "embedding.eoi", "final_norm"}
    for stack in ("encoder", "decoder"):  # The merged attention: no cross.
        assert stack_roles(table, stack, 1) == BLOCK_ROLES | QK_NORM_ROLES
    assert table["decoder", 0, "attention.query"].path == (
        "decoder_layer_0/merged_attention/query/kernel")
    shape = lambda *key: tuple(table[key].shape)  # noqa: E731
    assert shape("decoder", None, "embedding") == (VOCAB, DEC)
    assert shape("decoder", None, "embedding.eoi") == (DEC,)
    assert shape("decoder", 0, "attention.query") == (DEC, 4, 4)
    assert shape("decoder", 0, "attention.query_norm") == (4,)
    assert shape("encoder", 0, "attention.key_norm") == (8,)
    assert shape("vision", None, "patch_embedding") == (7, 7, 3, 16)
    assert shape("vision", None, "position_embedding") == (16, 16)
    assert shape("vision", None, "projection") == (16, DEC)
    assert shape("vision", 0, "mlp.up") == (16, 32)
    assert shape("vision", 0, "mlp.up.bias") == (32,)
    assert len(stack_roles(table, "vision", 0)) == 16


def test_lora_groups_and_layout_read_the_roles():
    mesh = keras.distribution.DeviceMesh(
        (1, 1), ["batch", "model"], keras.distribution.list_devices()[:1])
    for backbone in (t5gemma(), t5gemma2()):
        rows = [r for r in backbone.weight_roles() if r[0] != "vision"]
        projections = {
            r[3].path.rsplit("/", 1)[0]: r[2] for r in rows
            if is_projection(r[2])
        }
        attention = sorted(
            p for p, role in projections.items()
            if split_role(role)[0] != "mlp")
        assert resolve_lora_targets(backbone, "attention") == attention
        assert resolve_lora_targets(backbone, "all") == sorted(projections)
        assert resolve_lora_targets(backbone, "decoder") == sorted(
            p for p in projections if p.startswith("decoder_"))
        layout_map = type(backbone).get_layout_map(mesh)
        rename = {"data": "batch"}
        for _, _, role, variable in rows:
            weight = split_role(role)[1]
            if weight in SHARDING:
                axes = tuple(rename.get(a, a) for a in SHARDING[weight])
                assert layout_map[variable.path].axes == axes, role


def test_converter_names_every_role_and_refuses_unknown_ones():
    backbone = t5gemma()
    block = backbone.decoder_layers[1]
    names = [name for _, name, _, _ in block_weight_map(block, "p")]
    assert len(names) == len(set(names)) == 17
    assert "p.cross_attn.k_proj.weight" in names
    assert "p.post_feedforward_layernorm.weight" in names
    roles = block.weight_roles()
    block.weight_roles = lambda: {**roles, "attention.sink": roles["mlp.up"]}
    with pytest.raises(ValueError, match=r"'attention.sink'"):
        list(block_weight_map(block, "p"))


def test_export_refuses_unmerged_lora(tmp_path):
    lm = T5GemmaSeq2SeqLM(t5gemma())
    lm.backbone.enable_lora(2, target="decoder.cross_attention")
    with pytest.raises(ValueError, match="merge_lora"):
        lm.export_to_transformers(str(tmp_path / "out"))
    lm.backbone.merge_lora()
    lm.export_to_transformers(str(tmp_path / "out"))
    from keras_encdec.convert.safetensors_io import SafetensorsReader

    reader = SafetensorsReader(str(tmp_path / "out"))
    kernel = lm.backbone.decoder_layers[0].cross_attention.value_dense.kernel
    exported = reader.get("model.decoder.layers.0.cross_attn.v_proj.weight")
    # [kv_heads * head_dim, encoder width], bit-equal to the merged kernel.
    value = keras.ops.convert_to_numpy(kernel)
    np.testing.assert_array_equal(exported, value.reshape(ENC, -1).T)
