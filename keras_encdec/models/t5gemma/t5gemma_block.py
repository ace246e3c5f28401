"""What T5Gemma encoder and decoder blocks share: arguments, the self-
attention sublayer, the MLP, the sandwich norms and the residual dropout."""

import keras

from keras_encdec.stack_config import FULL_ATTENTION  # noqa: F401
from keras_encdec.stack_config import LAYER_TYPES
from keras_encdec.stack_config import SLIDING_ATTENTION
from keras_encdec.models.t5gemma.t5gemma_attention import T5GemmaAttention
from keras_encdec.models.t5gemma.t5gemma_layers import T5GemmaMLP
from keras_encdec.models.t5gemma.t5gemma_layers import T5GemmaRMSNormalization
from keras_encdec.weight_roles import ATTENTION
from keras_encdec.weight_roles import MLP
from keras_encdec.weight_roles import sandwich_roles
from keras_encdec.weight_roles import sublayer_roles
from keras_encdec.utils.sublayer import call_sublayer


def check_layer_type(layer_type, sliding_window):
    """Validates a layer type and returns the window this layer uses."""
    if layer_type not in LAYER_TYPES:
        raise ValueError(
            f"Unknown layer type. Received: layer_type={layer_type!r}. "
            f"Expected one of {LAYER_TYPES}."
        )
    if layer_type == SLIDING_ATTENTION:
        if sliding_window is None or sliding_window < 1:
            raise ValueError(
                "A 'sliding_attention' layer needs a positive "
                f"sliding_window. Received: sliding_window={sliding_window}."
            )
        return sliding_window
    return None


class T5GemmaBlock(keras.layers.Layer):
    """Base of `T5GemmaEncoderLayer` and `T5GemmaDecoderLayer`.

    Creates `self_attention` (causal when the subclass sets `causal`), its
    pre/post norms, `mlp` with `pre_ffw_norm`/`post_ffw_norm`, and
    `residual_dropout`; stores every argument for `get_config`. Subclasses
    add their own sublayers (`self.attention_options` holds the attention
    arguments they share) and `call`.

    Args: see `T5GemmaEncoderLayer`.
    """

    causal = False

    def __init__(
        self,
        hidden_dim,
        intermediate_dim,
        num_heads,
        num_kv_heads,
        head_dim,
        layer_type,
        sliding_window=None,
        query_pre_attn_scalar=None,
        attention_logit_soft_cap=None,
        rope_max_wavelength=10000.0,
        rms_norm_eps=1e-6,
        hidden_activation="gelu_approximate",
        dropout_rate=0.0,
        attention_dropout=0.0,
        initializer_range=0.02,
        attention_impl=None,
        remat=False,
        **kwargs,
    ):
        super().__init__(**kwargs)
        window = check_layer_type(layer_type, sliding_window)
        self.config_values = dict(
            hidden_dim=hidden_dim,
            intermediate_dim=intermediate_dim,
            num_heads=num_heads,
            num_kv_heads=num_kv_heads,
            head_dim=head_dim,
            layer_type=layer_type,
            sliding_window=sliding_window,
            query_pre_attn_scalar=query_pre_attn_scalar,
            attention_logit_soft_cap=attention_logit_soft_cap,
            rope_max_wavelength=rope_max_wavelength,
            rms_norm_eps=rms_norm_eps,
            hidden_activation=hidden_activation,
            dropout_rate=dropout_rate,
            attention_dropout=attention_dropout,
            initializer_range=initializer_range,
            attention_impl=attention_impl,
        )
        self.remat = remat
        self.attention_options = dict(
            hidden_dim=hidden_dim,
            num_heads=num_heads,
            num_kv_heads=num_kv_heads,
            head_dim=head_dim,
            query_pre_attn_scalar=query_pre_attn_scalar,
            logit_soft_cap=attention_logit_soft_cap,
            dropout_rate=attention_dropout,
            initializer_range=initializer_range,
            attention_impl=attention_impl,
            dtype=self.dtype_policy,
        )
        self.self_attention = self.make_self_attention(window, rope_max_wavelength)
        self.pre_self_attention_norm, self.post_self_attention_norm = (
            self.sandwich_norms("self_attention")
        )
        self.mlp = T5GemmaMLP(
            hidden_dim,
            intermediate_dim,
            hidden_activation=hidden_activation,
            dropout_rate=dropout_rate,
            initializer_range=initializer_range,
            dtype=self.dtype_policy,
            name="mlp",
        )
        self.pre_ffw_norm, self.post_ffw_norm = self.sandwich_norms("ffw")
        self.residual_dropout = keras.layers.Dropout(
            dropout_rate, dtype=self.dtype_policy, name="residual_dropout"
        )

    def make_self_attention(self, window, rope_max_wavelength):
        """Creates the `self_attention` sublayer (a hook for subclasses,
        e.g. T5Gemma 2's QK-normed attention)."""
        return T5GemmaAttention(
            attention_type="self",
            causal=self.causal,
            sliding_window=window,
            rope_max_wavelength=rope_max_wavelength,
            name="self_attention",
            **self.attention_options,
        )

    def sandwich_norms(self, prefix):
        """Creates the pre/post RMS norms around one sublayer."""
        return tuple(
            T5GemmaRMSNormalization(
                epsilon=self.config_values["rms_norm_eps"],
                dtype=self.dtype_policy,
                name=f"{position}_{prefix}_norm",
            )
            for position in ("pre", "post")
        )

    def weight_roles(self):
        """`{role: variable}` of every weight of this block.

        `attention.*` (the self- or, in a T5Gemma 2 decoder, merged
        attention: projections, QK norms when present, `pre_norm` and
        `post_norm`) and `mlp.*` (`gate`, `up`, `down` and its norms); see
        `keras_encdec.weight_roles`.

        Returns:
            dict of role name -> `keras.Variable`.
        """
        roles = sublayer_roles(ATTENTION, self.self_attention.weight_roles())
        roles.update(
            sandwich_roles(
                ATTENTION,
                self.pre_self_attention_norm,
                self.post_self_attention_norm,
            )
        )
        roles.update(sublayer_roles(MLP, self.mlp.weight_roles()))
        roles.update(sandwich_roles(MLP, self.pre_ffw_norm, self.post_ffw_norm))
        return roles

    def residual(self, hidden_states, update, training):
        """`hidden_states + dropout(update)`."""
        return hidden_states + call_sublayer(
            self.residual_dropout, update, training=training
        )

    def feed_forward(self, hidden_states, training):
        """The sandwich-normed MLP sublayer with its residual."""
        x = call_sublayer(self.pre_ffw_norm, hidden_states)
        x = call_sublayer(self.mlp, x, training=training)
        x = call_sublayer(self.post_ffw_norm, x)
        return self.residual(hidden_states, x, training)

    def rematerialized(self, function, training, **inputs):
        """Runs `function(**inputs, training=training)`, recomputed in the
        backward pass when `self.remat` is set and `training` is true.

        Only the block's input tensors are kept for the backward pass; its
        activations are recomputed from them (`keras.remat`: `jax.checkpoint`,
        `torch.utils.checkpoint`, `tf.recompute_grad`). Non-float inputs
        (`None`, padding masks) are closed over and the outputs flattened, so
        the checkpointed function takes and returns float tensors only.
        """
        if not (self.remat and training):
            return function(**inputs, training=training)
        names = [name for name, value in inputs.items() if _is_float(value)]
        fixed = {k: v for k, v in inputs.items() if k not in names}
        structure = []

        def run(*tensors):
            outputs = function(
                **fixed, **dict(zip(names, tensors)), training=training
            )
            structure[:] = [outputs]
            return tuple(keras.tree.flatten(outputs))

        flat = keras.remat(run)(*[inputs[name] for name in names])
        return keras.tree.pack_sequence_as(structure[0], list(flat))

    @property
    def remat(self):
        """Whether training recomputes this block in the backward pass."""
        return self._remat

    @remat.setter
    def remat(self, value):
        value = check_remat(value)
        rates = {
            name: self.config_values[name]
            for name in ("dropout_rate", "attention_dropout")
        }
        if value and any(rates.values()):
            raise ValueError(
                f"Layer '{self.name}': `remat=True` recomputes the block in "
                "the backward pass, where Keras dropout would draw different "
                "masks and give wrong gradients. Received: "
                + ", ".join(f"{k}={v}" for k, v in rates.items())
                + ". Expected both 0.0 with remat=True (or remat=False)."
            )
        self._remat = value

    def get_config(self):
        config = super().get_config()
        config.update(self.config_values)
        config["remat"] = self.remat
        return config


def _is_float(value):
    if value is None:
        return False
    return "float" in keras.backend.standardize_dtype(value.dtype)


def check_remat(remat):
    """Validates a `remat` switch (a Python bool)."""
    if not isinstance(remat, bool):
        raise ValueError(
            f"`remat` must be a bool. Received: remat={remat!r} "
            f"(of type {type(remat).__name__})."
        )
    return remat
