"""Losses computed from hidden states without materializing the logits."""

from keras_encdec.losses.linear_cross_entropy import BF16_FILTER_EPS
from keras_encdec.losses.linear_cross_entropy import IMPLS
from keras_encdec.losses.linear_cross_entropy import PALLAS_INTERPRET_ENV
from keras_encdec.losses.linear_cross_entropy import REDUCTIONS
from keras_encdec.losses.linear_cross_entropy import linear_cross_entropy
from keras_encdec.losses.linear_kl_divergence import KL_IMPLS
from keras_encdec.losses.linear_kl_divergence import linear_distillation_loss
from keras_encdec.losses.linear_kl_divergence import linear_kl_divergence

__all__ = [
    "BF16_FILTER_EPS",
    "IMPLS",
    "KL_IMPLS",
    "PALLAS_INTERPRET_ENV",
    "REDUCTIONS",
    "linear_cross_entropy",
    "linear_distillation_loss",
    "linear_kl_divergence",
]
