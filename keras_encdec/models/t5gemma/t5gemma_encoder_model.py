"""The T5Gemma encoder alone: hidden states and a pooled embedding."""

import keras
from keras import ops
from keras_hub.models import Backbone
from keras_hub.src.utils.python_utils import classproperty

from keras_encdec.api import register
from keras_encdec.stack_config import StackConfig
from keras_encdec.models.t5gemma.t5gemma_backbone import T5GemmaBackbone
from keras_encdec.models.t5gemma.t5gemma_backbone import _make_layers
from keras_encdec.models.t5gemma.t5gemma_block import check_remat
from keras_encdec.models.t5gemma.t5gemma_encoder_layer import T5GemmaEncoderLayer
from keras_encdec.models.t5gemma.t5gemma_layers import T5GemmaRMSNormalization
from keras_encdec.models.t5gemma.t5gemma_layers import kernel_initializer
from keras_encdec.models.t5gemma.t5gemma_presets import T5GEMMA_PRESETS

POOLINGS = ("mean", "max", "first", "last")
ENCODER_INPUT_NAMES = ("token_ids", "padding_mask")


def last_token_index(padding_mask, shift=0, length=None):
    """Index of the rightmost non-pad token of each row (`[batch]`, int32).

    Like transformers' classifiers: `argmax(arange(L) * mask)`, so an
    all-pad row gives 0, and left padding works. `shift=1` (encoder-decoder
    heads, whose decoder input is shifted right) adds one and clamps to
    `length - 1`.
    """
    mask = ops.cast(padding_mask, "int32")
    # `arange` from a cumulative sum: the length may be symbolic.
    positions = ops.cumsum(ops.ones_like(mask), axis=-1) - 1
    index = ops.cast(ops.argmax(positions * mask, axis=-1), "int32")
    if shift:
        index = ops.minimum(index + shift, positions[:, -1])
    return index


def take_positions(hidden_states, index):
    """`hidden_states[b, index[b]]` for every row: `[batch, width]`."""
    index = ops.reshape(ops.cast(index, "int32"), (-1, 1, 1))
    return ops.take_along_axis(hidden_states, index, axis=1)[:, 0, :]


def pool(hidden_states, padding_mask, pooling):
    """Pools `[batch, length, width]` over the non-pad tokens.

    `"mean"` averages the non-pad positions (in float32, cast back), `"max"`
    takes the per-feature maximum over them, `"first"` the first position
    and `"last"` the rightmost non-pad one.
    """
    if pooling == "first":
        return hidden_states[:, 0, :]
    if pooling == "last":
        return take_positions(hidden_states, last_token_index(padding_mask))
    mask = ops.cast(padding_mask, "float32")[:, :, None]
    values = ops.cast(hidden_states, "float32")
    if pooling == "max":
        pooled = ops.max(ops.where(mask > 0, values, -3.0e38), axis=1)
    else:
        count = ops.maximum(ops.sum(mask, axis=1), 1.0)
        pooled = ops.sum(values * mask, axis=1) / count
    return ops.cast(pooled, hidden_states.dtype)


class EncoderOnlyModel(Backbone):
    """What the encoder-only models of both families share.

    A subclass creates `token_embedding`, `encoder_layers` and
    `encoder_norm`, provides `_encode(token_ids, padding_mask)`, then calls
    `build_encoder_model`, which adds the dropouts, builds the functional
    model (`sequence_output` and `pooled_output`) and stores `pooling`,
    `attention_impl` and `remat`.
    """

    def build_encoder_model(
        self, pooling, dropout_rate, attention_impl, remat, dtype, **kwargs
    ):
        """Builds the functional model; see the class docstring.

        Args:
            pooling: str. One of `POOLINGS`.
            dropout_rate: float. Embedding and output dropout.
            attention_impl: str or None. Stored for `get_config`.
            remat: bool. Stored for `get_config` (the blocks hold it).
            dtype: the dtype policy.
            **kwargs: passed to `keras_hub.models.Backbone`.
        """
        if pooling not in POOLINGS:
            raise ValueError(
                f"Unknown `pooling`. Received: pooling={pooling!r}. Expected "
                f"one of {POOLINGS}."
            )
        self.embedding_dropout = keras.layers.Dropout(
            dropout_rate, dtype=dtype, name="embedding_dropout"
        )
        self.output_dropout = keras.layers.Dropout(
            dropout_rate, dtype=dtype, name="output_dropout"
        )
        inputs = {
            name: keras.Input(shape=(None,), dtype="int32", name=name)
            for name in ENCODER_INPUT_NAMES
        }
        sequence_output = self._encode(
            inputs["token_ids"], inputs["padding_mask"]
        )
        pooled_output = pool(sequence_output, inputs["padding_mask"], pooling)
        super().__init__(
            inputs=inputs,
            outputs={
                "sequence_output": sequence_output,
                "pooled_output": pooled_output,
            },
            dtype=dtype,
            **kwargs,
        )
        self.pooling = pooling
        self.attention_impl = attention_impl
        self._remat = remat

    def __call__(self, inputs, *args, **kwargs):
        check_encoder_inputs(inputs)
        return super().__call__(inputs, *args, **kwargs)

    @property
    def remat(self):
        """Whether training recomputes each block's activations (see
        `T5GemmaBackbone.remat`). Set it before `compile()`."""
        return self._remat

    @remat.setter
    def remat(self, value):
        for layer in self.encoder_layers:
            layer.remat = value
        self._remat = check_remat(value)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "pooling": self.pooling,
                "attention_impl": self.attention_impl,
                "remat": self.remat,
            }
        )
        return config


@register
class T5GemmaEncoderModel(EncoderOnlyModel):
    """The T5Gemma encoder alone, for embeddings and encoder-only heads.

    Holds only the encoder's weights (embedding, blocks, final norm): a
    full encoder-decoder preset loads into it without the decoder ever
    reaching memory. Numerics equal the encoder of `T5GemmaBackbone` and of
    transformers' `T5GemmaEncoderModel` (two-sided windows `|q - k| <= W`).

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
            `"full_attention"`. Defaults to Gemma 2's alternation.
        sliding_window: int or None. Window of sliding blocks. Defaults to
            `4096`.
        attention_logit_soft_cap: float or None. Defaults to `50.0`.
        query_pre_attn_scalar: float or None. Defaults to the head width.
        rope_max_wavelength: float. Defaults to `10000.0`.
        rms_norm_eps: float. Defaults to `1e-6`.
        hidden_activation: str. Defaults to `"gelu_approximate"`.
        dropout_rate: float. Defaults to `0.0`.
        attention_dropout: float. Defaults to `0.0`.
        initializer_range: float. Defaults to `0.02`.
        pooling: str. `"mean"`, `"max"`, `"first"` or `"last"` (rightmost
            non-pad token). Defaults to `"mean"`.
        attention_impl: str or None. See `T5GemmaBackbone`. Defaults to
            `None`.
        remat: bool. Gradient checkpointing per block. Defaults to `False`.
        dtype: str or `keras.DTypePolicy`. Weight/compute dtype policy.
        **kwargs: passed to `keras_hub.models.Backbone`.

    Examples:

    >>> import numpy as np
    >>> encoder = T5GemmaEncoderModel(
    ...     vocabulary_size=64, hidden_dim=16, intermediate_dim=32,
    ...     num_layers=2, num_heads=2, num_kv_heads=1, head_dim=8)
    >>> out = encoder({"token_ids": np.array([[5, 6, 7, 0]]),
    ...                "padding_mask": np.array([[1, 1, 1, 0]])})
    >>> tuple(out["sequence_output"].shape), tuple(out["pooled_output"].shape)
    ((1, 4, 16), (1, 16))
    >>> encoder = T5GemmaEncoderModel.from_preset("t5gemma_tiny_random")
    >>> len(encoder.weights) < len(T5GemmaBackbone.from_preset(
    ...     "t5gemma_tiny_random").weights)
    True
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
        attention_logit_soft_cap=50.0,
        query_pre_attn_scalar=None,
        rope_max_wavelength=10000.0,
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
        stack = StackConfig(
            hidden_dim=hidden_dim, intermediate_dim=intermediate_dim,
            num_layers=num_layers, num_heads=num_heads,
            num_kv_heads=num_kv_heads, head_dim=head_dim,
            layer_types=layer_types, sliding_window=sliding_window,
            attention_logit_soft_cap=attention_logit_soft_cap,
            query_pre_attn_scalar=query_pre_attn_scalar,
            rope_max_wavelength=rope_max_wavelength, side="encoder",
        )
        shared = dict(
            rms_norm_eps=rms_norm_eps,
            hidden_activation=hidden_activation,
            dropout_rate=dropout_rate,
            attention_dropout=attention_dropout,
            initializer_range=initializer_range,
            attention_impl=attention_impl,
            remat=remat,
            dtype=dtype,
        )

        # === Layers (names as in `T5GemmaBackbone`, so LoRA targets, layout
        # maps and converters address them the same way) ===
        self.token_embedding = keras.layers.Embedding(
            vocabulary_size,
            hidden_dim,
            embeddings_initializer=kernel_initializer(initializer_range),
            dtype=dtype,
            name="encoder_token_embedding",
        )
        self.encoder_layers = _make_layers(T5GemmaEncoderLayer, stack, shared)
        self.encoder_norm = T5GemmaRMSNormalization(
            epsilon=rms_norm_eps, dtype=dtype, name="encoder_norm"
        )
        self.build_encoder_model(
            pooling, dropout_rate, attention_impl, remat, dtype, **kwargs
        )

        # === Config ===
        self.vocabulary_size = vocabulary_size
        for name in StackConfig.names():
            value = getattr(stack, name)
            setattr(self, name, list(value) if name == "layer_types" else value)
        self.rms_norm_eps = rms_norm_eps
        self.hidden_activation = hidden_activation
        self.dropout_rate = dropout_rate
        self.attention_dropout = attention_dropout
        self.initializer_range = initializer_range

    # Same encoder pass as `T5GemmaBackbone` (its `_encode` reads only the
    # attributes above), and the same LoRA helpers.
    _encode = T5GemmaBackbone._encode
    encode = T5GemmaBackbone.encode
    enable_lora = T5GemmaBackbone.enable_lora
    save_lora_weights = T5GemmaBackbone.save_lora_weights
    load_lora_weights = T5GemmaBackbone.load_lora_weights
    merge_lora = T5GemmaBackbone.merge_lora
    get_layout_map = staticmethod(T5GemmaBackbone.get_layout_map)

    @classproperty
    def presets(cls):
        """Preset names -> metadata and hub handles."""
        return dict(T5GEMMA_PRESETS)

    @classmethod
    def from_preset(cls, preset, load_weights=True, **kwargs):
        """Builds the encoder from any preset `T5GemmaBackbone` accepts.

        A full encoder-decoder preset (our own, or a transformers T5Gemma
        folder of any architecture) yields its encoder; only the encoder's
        tensors are read. A transformers folder saved by sentence-transformers
        names its pooling in `1_Pooling/config.json`; that pooling is used
        unless `pooling=` is passed.

        Args:
            preset: str. A preset name, folder or hub handle.
            load_weights: bool. Load the weights. Defaults to `True`.
            **kwargs: config overrides, e.g. `pooling`, `dtype`, `remat`.

        Examples:

        >>> encoder = T5GemmaEncoderModel.from_preset(
        ...     "t5gemma_tiny_random", pooling="last")
        >>> encoder.pooling
        'last'
        """
        from keras_encdec.models.t5gemma import t5gemma_encoder_preset

        return t5gemma_encoder_preset.load_encoder(
            cls, preset, load_weights=load_weights, **kwargs
        )

    def get_config(self):
        config = super().get_config()
        config["vocabulary_size"] = self.vocabulary_size
        for name in StackConfig.names():
            config[name] = getattr(self, name)
        config.update(
            {
                "rms_norm_eps": self.rms_norm_eps,
                "hidden_activation": self.hidden_activation,
                "dropout_rate": self.dropout_rate,
                "attention_dropout": self.attention_dropout,
                "initializer_range": self.initializer_range,
            }
        )
        return config


def check_encoder_inputs(inputs):
    """Raises a clear error unless `inputs` holds exactly `token_ids` and
    `padding_mask`, each an integer (or boolean mask) `[batch, length]`."""
    if not isinstance(inputs, dict) or set(inputs) != set(ENCODER_INPUT_NAMES):
        received = sorted(inputs) if isinstance(inputs, dict) else (
            type(inputs).__name__
        )
        raise ValueError(
            "T5Gemma encoder models take a dict with keys "
            f"{list(ENCODER_INPUT_NAMES)}. Received: {received}."
        )
    for name in ENCODER_INPUT_NAMES:
        value = inputs[name]
        dtype = str(getattr(value, "dtype", type(value).__name__))
        allowed = ("int", "bool") if name == "padding_mask" else ("int",)
        if not any(part in dtype for part in allowed):
            raise TypeError(
                f"`{name}` must be an integer tensor"
                + (" or a boolean mask" if name == "padding_mask" else "")
                + f". Received: dtype={dtype}."
            )
        shape = tuple(getattr(value, "shape", ()))
        if len(shape) != 2:
            raise ValueError(
                f"`{name}` must have shape [batch, length]. Received: "
                f"shape={shape}."
            )
