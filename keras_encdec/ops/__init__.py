"""Backend-agnostic tensor operations shared by the models."""

from keras_encdec.ops.attention import ATTENTION_IMPLS, dot_product_attention
from keras_encdec.ops.mask_rule import KeyWindow, t5gemma2_encoder_window
from keras_encdec.ops.merged_attention import merged_dot_product_attention
from keras_encdec.ops.attention import attention_mask
from keras_encdec.ops.rotary import apply_rotary_embedding

__all__ = [
    "ATTENTION_IMPLS",
    "apply_rotary_embedding",
    "attention_mask",
    "dot_product_attention",
    "KeyWindow",
    "merged_dot_product_attention",
    "t5gemma2_encoder_window",
]
