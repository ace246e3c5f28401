"""Pretraining objectives: the data side (T5 span corruption, UL2, PrefixLM,
packing) and the training side (`TokenCrossEntropy`, `PrefixLMDistillation`,
passed to `task.compile(objective=...)`)."""

from keras_encdec.objectives.base import Objective
from keras_encdec.objectives.denoisers import UL2
from keras_encdec.objectives.distillation import TEACHER_KEYS
from keras_encdec.objectives.distillation import PrefixLMDistillation
from keras_encdec.objectives.denoisers import UL2_DENOISERS
from keras_encdec.objectives.denoisers import Denoiser
from keras_encdec.objectives.denoisers import PrefixLM
from keras_encdec.objectives.denoisers import gemma_special_ids
from keras_encdec.objectives.packing import pack_examples
from keras_encdec.objectives.packing import pad_example
from keras_encdec.objectives.span_corruption import GEMMA2_UNUSED_IDS
from keras_encdec.objectives.span_corruption import GEMMA3_UNUSED_IDS
from keras_encdec.objectives.span_corruption import noise_counts
from keras_encdec.objectives.span_corruption import random_spans_noise_mask
from keras_encdec.objectives.span_corruption import span_corruption
from keras_encdec.objectives.span_corruption import span_corruption_inverse
from keras_encdec.objectives.training import TokenCrossEntropy
from keras_encdec.objectives.training import TrainingObjective

__all__ = [
    "Denoiser",
    "GEMMA2_UNUSED_IDS",
    "GEMMA3_UNUSED_IDS",
    "Objective",
    "PrefixLM",
    "PrefixLMDistillation",
    "TEACHER_KEYS",
    "UL2",
    "UL2_DENOISERS",
    "gemma_special_ids",
    "noise_counts",
    "pack_examples",
    "pad_example",
    "random_spans_noise_mask",
    "span_corruption",
    "span_corruption_inverse",
    "TokenCrossEntropy",
    "TrainingObjective",
]
