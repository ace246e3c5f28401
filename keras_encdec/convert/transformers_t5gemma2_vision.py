"""Transformers T5Gemma 2 vision tower: config and weight names.

The SigLIP tower (keras-hub's `Gemma3VisionEncoderBlock`) and our projector
(`T5Gemma2VisionProjector`) against transformers' `vision_tower` and
`multi_modal_projector` keys (5.23 `save_pretrained` layout, without the
`vision_model.` infix; `transformers_t5gemma2.canonical_name` strips it from
published checkpoints). Used by `transformers_t5gemma2`.
"""

import numpy as np

from keras_encdec.convert.safetensors_io import CheckpointError
from keras_encdec.convert.transformers_t5gemma import _identity
from keras_encdec.convert.transformers_t5gemma import _transpose


def vision_kwargs(encoder):
    """`vision_config` and `mm_tokens_per_image` from the encoder section."""
    vision = encoder.get("vision_config")
    if not vision:
        return {}
    if vision.get("vision_use_head"):
        raise CheckpointError(
            "The vision tower has a pooling head (vision_use_head=True); "
            "T5Gemma 2 uses none. Load with text_only=True to skip vision."
        )
    activation = vision.get("hidden_act", "gelu_pytorch_tanh")
    if activation != "gelu_pytorch_tanh":
        raise CheckpointError(
            "The vision tower must use 'gelu_pytorch_tanh' (keras-hub's "
            f"Gemma 3 tower). Received: hidden_act={activation!r}."
        )
    return {
        "vision_config": {
            "image_size": vision["image_size"],
            "patch_size": vision["patch_size"],
            "hidden_dim": vision["hidden_size"],
            "num_layers": vision["num_hidden_layers"],
            "num_heads": vision["num_attention_heads"],
            "intermediate_dim": vision["intermediate_size"],
            "layer_norm_epsilon": vision.get("layer_norm_eps", 1e-6),
        },
        "mm_tokens_per_image": encoder.get("mm_tokens_per_image", 256),
    }


def _conv_in(w):
    """Conv kernel [out, in, h, w] -> [h, w, in, out]."""
    return np.transpose(w, (2, 3, 1, 0))


def _conv_back(w):
    return np.transpose(w, (3, 2, 0, 1))


def vision_weight_map(backbone):
    """Yields `(variable, hf_name, to_keras, to_hf)` for the SigLIP tower
    (keras-hub's `Gemma3VisionEncoderBlock`) and our projector."""
    tower = backbone.vision_encoder.tower
    base = "model.encoder.vision_tower"
    embeddings = tower.vision_embeddings
    yield embeddings.patch_embedding.kernel, (
        f"{base}.embeddings.patch_embedding.weight"
    ), _conv_in, _conv_back
    yield embeddings.patch_embedding.bias, (
        f"{base}.embeddings.patch_embedding.bias"
    ), _identity, _identity
    yield embeddings.position_embedding.embeddings, (
        f"{base}.embeddings.position_embedding.weight"
    ), _identity, _identity
    for i, block in enumerate(tower.resblocks):
        prefix = f"{base}.encoder.layers.{i}"
        for norm, name in ((block.layer_norm_1, "layer_norm1"),
                           (block.layer_norm_2, "layer_norm2")):
            yield norm.gamma, f"{prefix}.{name}.weight", _identity, _identity
            yield norm.beta, f"{prefix}.{name}.bias", _identity, _identity
        for dense, name in (
            (block.attn.query_proj, "self_attn.q_proj"),
            (block.attn.key_proj, "self_attn.k_proj"),
            (block.attn.value_proj, "self_attn.v_proj"),
            (block.attn.out_proj, "self_attn.out_proj"),
            (block.mlp_dense_1, "mlp.fc1"),
            (block.mlp_dense_2, "mlp.fc2"),
        ):
            yield dense.kernel, f"{prefix}.{name}.weight", _transpose, _transpose
            yield dense.bias, f"{prefix}.{name}.bias", _identity, _identity
    norm = tower.encoder_layer_norm
    yield norm.gamma, f"{base}.post_layernorm.weight", _identity, _identity
    yield norm.beta, f"{base}.post_layernorm.bias", _identity, _identity
    projector = backbone.vision_encoder.projector
    base = "model.encoder.multi_modal_projector"
    yield projector.norm.scale, f"{base}.mm_soft_emb_norm.weight", (
        _identity
    ), _identity
    yield projector.projection, f"{base}.mm_input_projection_weight", (
        _identity
    ), _identity
