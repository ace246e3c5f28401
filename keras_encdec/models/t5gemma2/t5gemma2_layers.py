"""T5Gemma 2 embeddings: one scaled table with a learned end-of-image row."""

import keras
from keras import ops

from keras_encdec.api import register
from keras_encdec.models.t5gemma.t5gemma_backbone import scale_embeddings
from keras_encdec.models.t5gemma.t5gemma_layers import kernel_initializer


@register
class T5Gemma2Embedding(keras.layers.ReversibleEmbedding):
    """The token table shared by the encoder, the decoder and the LM head.

    Forward: `table[ids] * sqrt(output_dim)` (the scale rounded to the
    compute dtype first), then positions holding `eoi_token_index` take the
    learned, unscaled `eoi_embedding`. `reverse=True` maps hidden states to
    logits with the same table (tied head).

    Args:
        input_dim: int. Vocabulary size.
        output_dim: int. Model width.
        eoi_token_index: int or None. The end-of-image token; None disables
            the replacement. Defaults to `None`.
        initializer_range: float. Std of the table's init. Defaults to
            `0.02`.
        **kwargs: passed to `keras.layers.ReversibleEmbedding`.

    Examples:

    >>> import numpy as np
    >>> layer = T5Gemma2Embedding(8, 4, eoi_token_index=5)
    >>> x = ops.convert_to_numpy(layer(np.array([[1, 5]])))
    >>> float(np.abs(x[0, 1]).sum())  # eoi_embedding starts at 0
    0.0
    """

    def __init__(
        self,
        input_dim,
        output_dim,
        eoi_token_index=None,
        initializer_range=0.02,
        **kwargs,
    ):
        kwargs.pop("tie_weights", None)
        kwargs.setdefault(
            "embeddings_initializer", kernel_initializer(initializer_range)
        )
        super().__init__(input_dim, output_dim, tie_weights=True, **kwargs)
        self.eoi_token_index = eoi_token_index
        self.initializer_range = initializer_range

    def build(self, input_shape=None):
        super().build(input_shape)
        self.eoi_embedding = self.add_weight(
            name="eoi_embedding", shape=(self.output_dim,), initializer="zeros"
        )

    def weight_roles(self):
        """`{"embedding": table, "embedding.eoi": eoi_embedding}` (the
        table is tied: it is also the LM head)."""
        return {"embedding": self.embeddings, "embedding.eoi": self.eoi_embedding}

    @property
    def variable_serialization_spec(self):
        # The saved variables in order: the table's, then the EOI row.
        spec = super().variable_serialization_spec
        return {mode: list(names) + ["eoi_embedding"] for mode, names in spec.items()}

    def call(self, inputs, reverse=False):
        if reverse:
            return super().call(inputs, reverse=True)
        x = scale_embeddings(super().call(inputs), self.output_dim)
        if self.eoi_token_index is None:
            return x
        is_eoi = ops.equal(ops.cast(inputs, "int32"), self.eoi_token_index)
        eoi = ops.cast(self.eoi_embedding, x.dtype)
        return ops.where(is_eoi[..., None], eoi, x)

    def get_config(self):
        config = super().get_config()
        config.pop("tie_weights", None)
        config.update(
            {
                "eoi_token_index": self.eoi_token_index,
                "initializer_range": self.initializer_range,
            }
        )
        return config
