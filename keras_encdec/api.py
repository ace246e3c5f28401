"""Registration helper so saved configs resolve to keras-encdec classes."""

import keras

PACKAGE = "keras_encdec"


def register(cls):
    """Registers `cls` for Keras serialization under the `keras_encdec`
    package name, so `keras.saving` and presets find it by name."""
    return keras.saving.register_keras_serializable(package=PACKAGE)(cls)
