"""keras-encdec: encoder-decoder Gemma (T5Gemma) for Keras 3.

Public modules: `keras_encdec.models`, `keras_encdec.losses`,
`keras_encdec.ops`, `keras_encdec.adapt`, `keras_encdec.errors`.
"""

from keras_encdec.utils.import_order import preload_triton

# Triton must load before TensorFlow (imported by keras-hub) or the process
# aborts on duplicate LLVM options; this is a no-op off the torch backend.
preload_triton()

from keras_encdec import errors  # noqa: E402
from keras_encdec import losses  # noqa: E402
from keras_encdec import models  # noqa: E402
from keras_encdec import ops  # noqa: E402

__version__ = "0.1.0"
__all__ = ["errors", "losses", "models", "ops", "__version__"]
