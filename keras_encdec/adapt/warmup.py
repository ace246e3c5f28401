"""`CrossAttentionWarmup`: train only cross-attention for the first steps.

How it freezes: toggling `trainable` mid-`fit` does not work on every
backend (the JAX trainer threads a fixed list of trainable variables and
optimizer slots through its compiled step). Instead the callback wraps the
optimizer's `apply` for the duration of `fit`: each optimizer step
snapshots the non-cross-attention weights, lets the optimizer update
everything, then puts the snapshot back while `optimizer.iterations <
steps`. The condition is evaluated inside the compiled train step from the
optimizer's own step counter, so it is exact on JAX, PyTorch and
TensorFlow, and it also undoes weight decay. Gradients of all weights are
still computed during warm-up (as with any mask-based freeze), and
optimizer moments of the frozen weights keep accumulating, so Adam resumes
them warmed up. The snapshot costs one transient copy of the frozen
weights per step.
"""

import logging

import keras
from keras import ops

from keras_encdec.adapt.mapping import cross_attention_variables

logger = logging.getLogger(__name__)


class CrossAttentionWarmup(keras.callbacks.Callback):
    """Trains only cross-attention for the first `steps` optimizer steps.

    The paper's recipe for unbalanced pairs: the fresh cross-attention is
    warmed up alone, everything else frozen, then all weights train. Steps
    count optimizer steps (`optimizer.iterations`), so a warm-up spans
    several `fit` calls when needed.

    Args:
        steps: int. Number of optimizer steps during which only
            cross-attention weights (projections and their pre/post norms)
            change.

    Examples:

    >>> import numpy as np, keras_hub
    >>> from keras_encdec.adapt import adapt_decoder_only
    >>> gemma2 = keras_hub.models.GemmaBackbone(
    ...     vocabulary_size=32, num_layers=2, num_query_heads=2,
    ...     num_key_value_heads=1, hidden_dim=16, intermediate_dim=64,
    ...     head_dim=8, use_post_ffw_norm=True, use_post_attention_norm=True,
    ...     attention_logit_soft_cap=50.0, final_logit_soft_cap=30.0,
    ...     use_sliding_window_attention=True, sliding_window_size=4)
    >>> lm = adapt_decoder_only(gemma2, cross_attention_init="random")
    >>> lm.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    >>> ids = np.ones((2, 4), "int32")
    >>> x = {"encoder_token_ids": ids, "encoder_padding_mask": ids,
    ...      "decoder_token_ids": ids, "decoder_padding_mask": ids}
    >>> history = lm.fit(x, ids, epochs=1, verbose=0,
    ...                  callbacks=[CrossAttentionWarmup(steps=1)])
    """

    def __init__(self, steps):
        super().__init__()
        if not isinstance(steps, int) or isinstance(steps, bool) or steps < 0:
            raise ValueError(
                f"steps must be a non-negative int. Received: steps={steps!r}."
            )
        self.steps = steps
        self._optimizer = None

    def on_train_begin(self, logs=None):
        backbone = getattr(self.model, "backbone", self.model)
        if not hasattr(backbone, "decoder_layers"):
            raise ValueError(
                "CrossAttentionWarmup needs a T5Gemma model (a backbone with "
                f"decoder layers). Received: {type(self.model).__name__}."
            )
        optimizer = self.model.optimizer
        if optimizer is None:
            raise ValueError("Compile the model before fitting it.")
        # A LossScaleOptimizer (mixed precision) delegates to its inner
        # optimizer on every backend (JAX bypasses the outer `apply`).
        optimizer = getattr(optimizer, "inner_optimizer", optimizer)
        cross = {id(v) for v in cross_attention_variables(backbone)}
        steps = self.steps
        original_apply = optimizer.apply

        def apply(grads, trainable_variables=None):
            variables = (
                optimizer._trainable_variables
                if trainable_variables is None
                else list(trainable_variables)
            )
            frozen = [v for v in variables if id(v) not in cross]
            warming_up = ops.less(optimizer.iterations, steps)
            snapshot = [ops.copy(v.value) for v in frozen]
            result = original_apply(grads, trainable_variables)
            for variable, old in zip(frozen, snapshot):
                variable.assign(ops.where(warming_up, old, variable.value))
            return result

        optimizer.apply = apply
        self._optimizer = optimizer
        # The train function may already be traced with the plain optimizer.
        self.model.make_train_function(force=True)
        logger.info(
            "Cross-attention warm-up: %d of %d trainable weights train for "
            "the first %d optimizer steps.",
            len(cross), len(self.model.trainable_weights), steps,
        )

    def on_train_end(self, logs=None):
        if self._optimizer is not None:
            del self._optimizer.apply  # Back to the class method.
            self._optimizer = None
            self.model.make_train_function(force=True)
