"""Adaptation: decoder-only Gemma checkpoints -> encoder-decoder models.

`adapt_decoder_only(encoder_source, decoder_source=None, *,
cross_attention_init="auto", dtype=None)` builds a `T5GemmaSeq2SeqLM` from
Gemma 2 (keras-hub models or presets, transformers `Gemma2ForCausalLM`
folders) or a `T5Gemma2Seq2SeqLM` from Gemma 3 (keras-hub `Gemma3Backbone`
/ `Gemma3CausalLM` or presets, transformers `Gemma3ForCausalLM` folders,
GGUF files); `CrossAttentionWarmup(steps)` trains T5Gemma's new
cross-attention alone first; `to_keras_hub_gemma3(source)` loads any Gemma 3
source (e.g. a GGUF file) as a keras-hub `Gemma3CausalLM`. From the shell:
`python -m keras_encdec adapt --encoder SRC --output DIR`.
"""

from keras_encdec.adapt.adapt import adapt_decoder_only
from keras_encdec.adapt.keras_hub_gemma3 import to_keras_hub_gemma3
from keras_encdec.adapt.source_types import AdaptationError
from keras_encdec.adapt.warmup import CrossAttentionWarmup

__all__ = [
    "adapt_decoder_only", "CrossAttentionWarmup", "AdaptationError",
    "to_keras_hub_gemma3",
]
