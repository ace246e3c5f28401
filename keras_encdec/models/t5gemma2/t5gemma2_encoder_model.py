"""The T5Gemma 2 encoder alone (text): hidden states and a pooled
embedding."""

from keras_hub.src.utils.python_utils import classproperty

from keras_encdec.api import register
from keras_encdec.models.t5gemma.t5gemma_encoder_model import EncoderOnlyModel
from keras_encdec.models.t5gemma.t5gemma_layers import T5GemmaRMSNormalization
from keras_encdec.models.t5gemma2.t5gemma2_backbone import T5Gemma2Backbone
from keras_encdec.models.t5gemma2.t5gemma2_blocks import T5Gemma2EncoderLayer
from keras_encdec.models.t5gemma2.t5gemma2_config import STACK_ARGS
from keras_encdec.models.t5gemma2.t5gemma2_config import check_positive_int
from keras_encdec.models.t5gemma2.t5gemma2_config import check_stack
from keras_encdec.models.t5gemma2.t5gemma2_config import make_layer
from keras_encdec.models.t5gemma2.t5gemma2_layers import T5Gemma2Embedding
from keras_encdec.models.t5gemma2.t5gemma2_presets import T5GEMMA2_PRESETS

_SHARED_ARGS = (
    "vocabulary_size", "hidden_dim", "rope_local_wavelength",
    "rope_global_wavelength", "rope_scaling_factor", "attention_logit_soft_cap",
    "eoi_token_index", "rms_norm_eps", "hidden_activation", "dropout_rate",
    "attention_dropout", "initializer_range",
)


@register
class T5Gemma2EncoderModel(EncoderOnlyModel):
    """The T5Gemma 2 text encoder alone, for embeddings.

    Holds only the encoder's weights (token table with its EOI row, Gemma 3
    blocks, final norm): from a full transformers T5Gemma 2 folder only the
    encoder's tensors are read. Hidden states equal transformers'
    `T5Gemma2Encoder` (text input) and the encoder of `T5Gemma2Backbone`.

    Inputs are a dict with `token_ids` and `padding_mask` (int
    `[batch, length]`). Outputs are a dict with `sequence_output`
    (`[batch, length, hidden_dim]`) and `pooled_output`
    (`[batch, hidden_dim]`, pooled over the non-pad tokens).

    Args:
        vocabulary_size: int. Vocabulary size.
        hidden_dim: int. Model width.
        intermediate_dim: int. MLP width.
        num_layers: int. Number of blocks.
        num_heads: int. Query heads.
        num_kv_heads: int. Key/value heads.
        head_dim: int. Head width.
        layer_types: list of str or None. Per block `"sliding_attention"` or
            `"full_attention"`. Defaults to Gemma 3's 5:1 pattern.
        sliding_window: int or None. Defaults to `4096`.
        query_pre_attn_scalar: float or None. Defaults to the head width.
        rope_local_wavelength: float. Defaults to `10000.0`.
        rope_global_wavelength: float. Defaults to `1000000.0`.
        rope_scaling_factor: float. Defaults to `1.0`.
        attention_logit_soft_cap: float or None. Defaults to `None`.
        eoi_token_index: int. Id of the end-of-image token (its own
            embedding row). Defaults to `256000`.
        rms_norm_eps: float. Defaults to `1e-6`.
        hidden_activation: str. Defaults to `"gelu_approximate"`.
        dropout_rate: float. Defaults to `0.0`.
        attention_dropout: float. Defaults to `0.0`.
        initializer_range: float. Defaults to `0.02`.
        pooling: str. `"mean"`, `"max"`, `"first"` or `"last"`. Defaults to
            `"mean"`.
        attention_impl: str or None. See `T5Gemma2Backbone`. Defaults to
            `None`.
        remat: bool. Gradient checkpointing per block. Defaults to `False`.
        dtype: str or `keras.DTypePolicy`. Weight/compute dtype policy.
        **kwargs: passed to `keras_hub.models.Backbone`.

    Examples:

    >>> import numpy as np
    >>> encoder = T5Gemma2EncoderModel(
    ...     vocabulary_size=64, hidden_dim=16, intermediate_dim=32,
    ...     num_layers=2, num_heads=2, num_kv_heads=1, head_dim=8,
    ...     eoi_token_index=63)
    >>> out = encoder({"token_ids": np.array([[5, 6, 7, 0]]),
    ...                "padding_mask": np.array([[1, 1, 1, 0]])})
    >>> tuple(out["sequence_output"].shape), tuple(out["pooled_output"].shape)
    ((1, 4, 16), (1, 16))
    """

    def __init__(
        self,
        vocabulary_size,
        hidden_dim,
        intermediate_dim,
        num_layers,
        num_heads,
        num_kv_heads,
        head_dim,
        layer_types=None,
        sliding_window=4096,
        query_pre_attn_scalar=None,
        rope_local_wavelength=10000.0,
        rope_global_wavelength=1000000.0,
        rope_scaling_factor=1.0,
        attention_logit_soft_cap=None,
        eoi_token_index=256000,
        rms_norm_eps=1e-6,
        hidden_activation="gelu_approximate",
        dropout_rate=0.0,
        attention_dropout=0.0,
        initializer_range=0.02,
        pooling="mean",
        attention_impl=None,
        remat=False,
        dtype=None,
        **kwargs,
    ):
        check_positive_int("hidden_dim", hidden_dim)
        check_positive_int("vocabulary_size", vocabulary_size)
        local_values = dict(locals())
        stack = check_stack(
            "encoder", {name: local_values[name] for name in STACK_ARGS}
        )
        shared = dict(
            rms_norm_eps=rms_norm_eps,
            hidden_activation=hidden_activation,
            dropout_rate=dropout_rate,
            initializer_range=initializer_range,
            attention_impl=attention_impl,
            remat=remat,
            attention_dropout=attention_dropout,
            dtype=dtype,
        )
        rope = dict(
            local=rope_local_wavelength,
            full=rope_global_wavelength,
            scaling=rope_scaling_factor,
        )

        # === Layers (names as in `T5Gemma2Backbone`) ===
        self.token_embedding = T5Gemma2Embedding(
            vocabulary_size,
            hidden_dim,
            eoi_token_index=eoi_token_index,
            initializer_range=initializer_range,
            dtype=dtype,
            name="token_embedding",
        )
        self.encoder_layers = [
            make_layer(
                T5Gemma2EncoderLayer, stack, i, shared, rope, hidden_dim,
                "encoder",
            )
            for i in range(stack["num_layers"])
        ]
        self.encoder_norm = T5GemmaRMSNormalization(
            epsilon=rms_norm_eps, dtype=dtype, name="encoder_norm"
        )
        self.vision_encoder = None  # text only; read by the converter
        self.build_encoder_model(
            pooling, dropout_rate, attention_impl, remat, dtype, **kwargs
        )

        # === Config ===
        for name in _SHARED_ARGS:
            setattr(self, name, local_values[name])
        for name, value in stack.items():
            setattr(self, name, value)

    # The encoder pass of `T5Gemma2Backbone` (text only).
    _encode = T5Gemma2Backbone._encode
    encode = T5Gemma2Backbone.encode

    @classproperty
    def presets(cls):
        """Preset names -> metadata and hub handles."""
        return dict(T5GEMMA2_PRESETS)

    @classmethod
    def from_preset(cls, preset, load_weights=True, **kwargs):
        """Builds the encoder from a transformers T5Gemma 2 folder (any
        architecture: only the encoder's text tensors are read) or from a
        preset saved from this class. A folder saved by
        sentence-transformers names its pooling in `1_Pooling/config.json`;
        that pooling is used unless `pooling=` is passed.

        Args:
            preset: str. A folder, preset name or hub handle.
            load_weights: bool. Load the weights. Defaults to `True`.
            **kwargs: config overrides, e.g. `pooling`, `dtype`.

        Examples:

        >>> import tempfile
        >>> from keras_encdec.testing import make_transformers_t5gemma2
        >>> folder = tempfile.mkdtemp()
        >>> make_transformers_t5gemma2().save_pretrained(folder)
        >>> encoder = T5Gemma2EncoderModel.from_preset(folder, pooling="last")
        >>> encoder.pooling
        'last'
        """
        from keras_encdec.convert import transformers_t5gemma2_heads as heads

        return heads.load_encoder(cls, preset, load_weights=load_weights, **kwargs)

    def get_config(self):
        config = super().get_config()
        for name in _SHARED_ARGS + STACK_ARGS:
            config[name] = getattr(self, name)
        return config
