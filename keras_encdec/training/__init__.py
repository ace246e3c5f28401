"""Training helpers: the continued-pretraining recipe (`pretrain`), LoRA,
sharding layouts, resumable checkpoints, and the saved-for-backward memory
of a JAX step.

The LoRA and layout functions are also reachable as `T5GemmaBackbone`
methods (`enable_lora`, `save_lora_weights`, `load_lora_weights`,
`merge_lora`, `get_layout_map`).
"""

from keras_encdec.training.backup_and_restore import AtomicBackupAndRestore
from keras_encdec.models.layout_map import get_layout_map
from keras_encdec.models.lora import enable_lora
from keras_encdec.models.lora import load_lora_weights
from keras_encdec.models.lora import merge_lora
from keras_encdec.models.lora import resolve_lora_targets
from keras_encdec.models.lora import save_lora_weights
from keras_encdec.training.memory import saved_activation_bytes
from keras_encdec.training.memory import saved_residuals
from keras_encdec.training.pretraining import pretrain

__all__ = [
    "AtomicBackupAndRestore",
    "enable_lora",
    "get_layout_map",
    "load_lora_weights",
    "merge_lora",
    "pretrain",
    "resolve_lora_targets",
    "save_lora_weights",
    "saved_activation_bytes",
    "saved_residuals",
]
