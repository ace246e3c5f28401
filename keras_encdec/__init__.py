"""keras-encdec: encoder-decoder Gemma (T5Gemma) for Keras 3.

Public modules: `keras_encdec.models`, `keras_encdec.losses`,
`keras_encdec.ops`, `keras_encdec.adapt`.
"""

from keras_encdec.utils.import_order import preload_triton
from keras_encdec.utils.quiet import native_stderr_filter

# keras-hub imports TensorFlow, whose C++ start-up lines are dropped here
# (real warnings and errors still pass; see `keras_encdec.utils.quiet`).
with native_stderr_filter():
    # Triton must load before TensorFlow or the process aborts on duplicate
    # LLVM options. Only where the Triton kernel can run (torch on CUDA, or
    # TRITON_INTERPRET=1); elsewhere triton is not imported.
    preload_triton()
    from keras_encdec import losses  # noqa: E402
    from keras_encdec import models  # noqa: E402
    from keras_encdec import ops  # noqa: E402

__version__ = "0.1.0"
__all__ = ["losses", "models", "ops", "__version__"]
