"""Adaptation: decoder-only Gemma 2 checkpoints -> T5Gemma encoder-decoder.

`adapt_decoder_only(encoder_source, decoder_source=None, *,
cross_attention_init="auto", dtype=None)` builds a `T5GemmaSeq2SeqLM` from
keras-hub Gemma 2 models or presets, or transformers `Gemma2ForCausalLM`
folders; `CrossAttentionWarmup(steps)` trains the new cross-attention alone
first. From the shell: `python -m keras_encdec adapt --encoder SRC --output
DIR`.
"""

from keras_encdec.adapt.adapt import adapt_decoder_only
from keras_encdec.adapt.source_types import AdaptationError
from keras_encdec.adapt.warmup import CrossAttentionWarmup

__all__ = ["adapt_decoder_only", "CrossAttentionWarmup", "AdaptationError"]
