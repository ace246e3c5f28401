"""T5Gemma 2 vision: keras-hub's Gemma 3 SigLIP tower plus our projector.

The tower is `keras_hub`'s `Gemma3VisionEncoderBlock` (patch embedding,
SigLIP blocks, post layer norm; no head), reused as is. The projector
average-pools the patch grid to `mm_tokens_per_image` tokens (keras-hub's
`Gemma3VisionAveragePooling`), applies an RMS norm (`x * (1 + w)`) and a
`[vision_dim, hidden_dim]` matmul, as transformers'
`T5Gemma2MultiModalProjector` does.
"""

import keras
from keras import ops
from keras_hub.src.models.gemma3.gemma3_vision_encoder import (
    Gemma3VisionAveragePooling,
)
from keras_hub.src.models.gemma3.gemma3_vision_encoder import (
    Gemma3VisionEncoderBlock,
)

from keras_encdec.api import register
from keras_encdec.models.t5gemma.t5gemma_layers import T5GemmaRMSNormalization

VISION_KEYS = (
    "image_size",
    "patch_size",
    "hidden_dim",
    "num_layers",
    "num_heads",
    "intermediate_dim",
    "layer_norm_epsilon",
)


def check_vision_config(vision_config, mm_tokens_per_image):
    """Validates a vision config dict; returns a copy with every key."""
    if not isinstance(vision_config, dict):
        raise TypeError(
            "`vision_config` must be a dict or None. Received: "
            f"{type(vision_config).__name__}."
        )
    config = dict(vision_config)
    config.setdefault("layer_norm_epsilon", 1e-6)
    missing = sorted(set(VISION_KEYS) - set(config))
    extra = sorted(set(config) - set(VISION_KEYS))
    if missing or extra:
        raise ValueError(
            f"`vision_config` needs exactly the keys {list(VISION_KEYS)}. "
            f"Missing: {missing}. Unknown: {extra}."
        )
    patches_per_side = config["image_size"] // config["patch_size"]
    tokens_per_side = int(round(mm_tokens_per_image**0.5))
    if (
        tokens_per_side**2 != mm_tokens_per_image
        or patches_per_side % tokens_per_side
    ):
        raise ValueError(
            "`mm_tokens_per_image` must be a square whose side divides the "
            f"patch grid side ({patches_per_side}). Received: "
            f"mm_tokens_per_image={mm_tokens_per_image}."
        )
    return config


@register
class T5Gemma2VisionProjector(keras.layers.Layer):
    """Patch features `[n, patches, vision_dim]` -> image tokens
    `[n, mm_tokens_per_image, hidden_dim]`.

    Args:
        image_size: int. Image side in pixels.
        patch_size: int. Patch side in pixels.
        mm_tokens_per_image: int. Tokens per image (a square).
        hidden_dim: int. Text model width.
        epsilon: float. RMS norm epsilon. Defaults to `1e-6`.
        **kwargs: passed to `keras.layers.Layer`.

    Examples:

    >>> import numpy as np
    >>> projector = T5Gemma2VisionProjector(28, 7, 4, hidden_dim=8)
    >>> tuple(projector(np.ones((2, 16, 16), "float32")).shape)
    (2, 4, 8)
    """

    def __init__(
        self,
        image_size,
        patch_size,
        mm_tokens_per_image,
        hidden_dim,
        epsilon=1e-6,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.image_size = image_size
        self.patch_size = patch_size
        self.mm_tokens_per_image = mm_tokens_per_image
        self.hidden_dim = hidden_dim
        self.epsilon = epsilon
        tokens_per_side = int(round(mm_tokens_per_image**0.5))
        self.pooling = Gemma3VisionAveragePooling(
            image_size=image_size,
            patch_size=patch_size,
            pool_size=(image_size // patch_size) // tokens_per_side,
            dtype=self.dtype_policy,
            name="pooling",
        )
        self.norm = T5GemmaRMSNormalization(
            epsilon=epsilon, dtype=self.dtype_policy, name="soft_embedding_norm"
        )

    def build(self, input_shape):
        vision_dim = input_shape[-1]
        self.pooling.build(input_shape)
        self.norm.build((vision_dim,))
        self.projection = self.add_weight(
            name="projection", shape=(vision_dim, self.hidden_dim),
            initializer="zeros",
        )

    def call(self, patch_features):
        x = self.norm(self.pooling(patch_features))
        return ops.matmul(x, ops.cast(self.projection, x.dtype))

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.mm_tokens_per_image, self.hidden_dim)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "image_size": self.image_size,
                "patch_size": self.patch_size,
                "mm_tokens_per_image": self.mm_tokens_per_image,
                "hidden_dim": self.hidden_dim,
                "epsilon": self.epsilon,
            }
        )
        return config


@register
class T5Gemma2VisionEncoder(keras.layers.Layer):
    """Pixels `[batch, num_images, H, W, 3]` -> image tokens
    `[batch, num_images * mm_tokens_per_image, hidden_dim]`.

    `tower` is keras-hub's Gemma 3 SigLIP `Gemma3VisionEncoderBlock`;
    `projector` is `T5Gemma2VisionProjector`.

    Args:
        vision_config: dict. See `T5Gemma2Backbone`'s `vision_config`.
        mm_tokens_per_image: int. Tokens per image.
        hidden_dim: int. Text model width.
        **kwargs: passed to `keras.layers.Layer`.

    Examples:

    >>> import numpy as np
    >>> encoder = T5Gemma2VisionEncoder(
    ...     dict(image_size=28, patch_size=7, hidden_dim=16, num_layers=1,
    ...          num_heads=2, intermediate_dim=32), 4, hidden_dim=8)
    >>> tuple(encoder(np.zeros((2, 3, 28, 28, 3), "float32")).shape)
    (2, 12, 8)
    """

    def __init__(self, vision_config, mm_tokens_per_image, hidden_dim, **kwargs):
        super().__init__(**kwargs)
        config = check_vision_config(vision_config, mm_tokens_per_image)
        self.vision_config = config
        self.mm_tokens_per_image = mm_tokens_per_image
        self.hidden_dim = hidden_dim
        self.tower = Gemma3VisionEncoderBlock(
            patch_size=config["patch_size"],
            image_size=config["image_size"],
            hidden_dim=config["hidden_dim"],
            num_layers=config["num_layers"],
            num_heads=config["num_heads"],
            intermediate_dim=config["intermediate_dim"],
            layer_norm_epsilon=config["layer_norm_epsilon"],
            dtype=self.dtype_policy,
            name="tower",
        )
        self.projector = T5Gemma2VisionProjector(
            config["image_size"],
            config["patch_size"],
            mm_tokens_per_image,
            hidden_dim,
            epsilon=config["layer_norm_epsilon"],
            dtype=self.dtype_policy,
            name="projector",
        )

    def build(self, pixel_values_shape):
        self.tower.build(pixel_values_shape)
        patches = (self.vision_config["image_size"]
                   // self.vision_config["patch_size"]) ** 2
        self.projector.build((None, patches, self.vision_config["hidden_dim"]))

    def weight_roles(self):
        """`{role: variable}` of the weights outside the tower's blocks:
        patch and position embeddings, the tower's final layer norm and the
        projector (`projector_norm`, `projection`)."""
        tower = self.tower
        embeddings = tower.vision_embeddings
        return {
            "patch_embedding": embeddings.patch_embedding.kernel,
            "patch_embedding.bias": embeddings.patch_embedding.bias,
            "position_embedding": embeddings.position_embedding.embeddings,
            "final_norm": tower.encoder_layer_norm.gamma,
            "final_norm.bias": tower.encoder_layer_norm.beta,
            "projector_norm": self.projector.norm.scale,
            "projection": self.projector.projection,
        }

    def block_weight_roles(self):
        """One `{role: variable}` per SigLIP block of the tower, in the
        block vocabulary of `keras_encdec.weight_roles` (`.bias`
        for biases and layer-norm offsets)."""
        tables = []
        for block in self.tower.resblocks:
            roles = {}
            for role, layer in (
                ("attention.pre_norm", block.layer_norm_1),
                ("mlp.pre_norm", block.layer_norm_2),
            ):
                roles[role], roles[f"{role}.bias"] = layer.gamma, layer.beta
            for role, dense in (
                ("attention.query", block.attn.query_proj),
                ("attention.key", block.attn.key_proj),
                ("attention.value", block.attn.value_proj),
                ("attention.output", block.attn.out_proj),
                ("mlp.up", block.mlp_dense_1),
                ("mlp.down", block.mlp_dense_2),
            ):
                roles[role], roles[f"{role}.bias"] = dense.kernel, dense.bias
            tables.append(roles)
        return tables

    def call(self, pixel_values):
        batch = ops.shape(pixel_values)[0]
        tokens = self.projector(self.tower(pixel_values))  # [b * n, T, D]
        return ops.reshape(tokens, (batch, -1, self.hidden_dim))

    def compute_output_shape(self, pixel_values_shape):
        images = pixel_values_shape[1]
        length = None if images is None else images * self.mm_tokens_per_image
        return (pixel_values_shape[0], length, self.hidden_dim)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "vision_config": self.vision_config,
                "mm_tokens_per_image": self.mm_tokens_per_image,
                "hidden_dim": self.hidden_dim,
            }
        )
        return config


def merge_image_features(embeddings, token_ids, image_features, image_token_index):
    """Puts image tokens in place of the `image_token_index` embeddings.

    Args:
        embeddings: `[batch, length, hidden]` scaled token embeddings.
        token_ids: int `[batch, length]`.
        image_features: `[batch, num_images * tokens, hidden]`; row `b`'s
            `k`-th image token takes `image_features[b, k]` (unscaled), so
            each row must hold exactly `num_images * tokens` image tokens
            (the preprocessor's layout; transformers raises otherwise).
        image_token_index: int. The placeholder id.

    Returns:
        `[batch, length, hidden]`.
    """
    is_image = ops.equal(ops.cast(token_ids, "int32"), image_token_index)
    order = ops.cumsum(ops.cast(is_image, "int32"), axis=1) - 1
    order = ops.where(is_image, order, 0)  # [batch, length]
    gathered = ops.take_along_axis(
        image_features, ops.expand_dims(order, -1), axis=1
    )
    gathered = ops.cast(gathered, embeddings.dtype)
    return ops.where(ops.expand_dims(is_image, -1), gathered, embeddings)
