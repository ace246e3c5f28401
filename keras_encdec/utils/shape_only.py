"""Parameter counts of a model built without allocating its weights."""

import math


def count_parameters_shape_only(model_cls, config):
    """`count_params()` of `model_cls(**config)`, with no weight allocated.

    The model is built inside `keras.StatelessScope(
    initialize_variables=False)`: Keras then defers every variable (shape
    and initializer only). A plain `keras.StatelessScope()` initializes the
    deferred variables when it exits, which allocates the whole model. The
    deferred variables are dropped from Keras' pending list afterwards, so
    no later scope initializes them.

    Args:
        model_cls: a Keras model or layer class (or any callable that
            builds one from `**config`), e.g. `T5Gemma2Backbone`.
        config: dict. Its keyword arguments.

    Returns:
        int. The number of parameters.

    Examples:

    >>> from keras_encdec.models import T5Gemma2Backbone
    >>> from keras_encdec.models.t5gemma2.t5gemma2_presets import (
    ...     T5GEMMA2_PRESETS, count_parameters)
    >>> config = T5GEMMA2_PRESETS["t5gemma2_270m_270m"]["config"]
    >>> n = count_parameters_shape_only(T5Gemma2Backbone, config)
    >>> n == count_parameters(config)
    True
    """
    import keras
    from keras.src.backend.common import global_state

    key = "uninitialized_variables"
    pending = list(global_state.get_global_attribute(key) or [])
    try:
        with keras.StatelessScope(initialize_variables=False):
            model = model_cls(**config)
        return sum(math.prod(w.shape) for w in model.weights)
    finally:
        global_state.set_global_attribute(key, pending)
