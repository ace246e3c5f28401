"""Model classes: backbones, tasks, preprocessors and tokenizers.

Examples:

>>> from keras_encdec.models import T5GemmaSeq2SeqLM
>>> lm = T5GemmaSeq2SeqLM.from_preset("t5gemma_tiny_random")  # embedded
"""

from keras_encdec.models.t5gemma.t5gemma_backbone import T5GemmaBackbone
from keras_encdec.models.t5gemma.t5gemma_seq_2_seq_lm import T5GemmaSeq2SeqLM
from keras_encdec.models.t5gemma.t5gemma_seq_2_seq_lm_preprocessor import (
    T5GemmaSeq2SeqLMPreprocessor,
)
from keras_encdec.models.t5gemma.t5gemma_tokenizer import T5GemmaTokenizer
from keras_encdec.models.t5gemma2.t5gemma2_backbone import T5Gemma2Backbone
from keras_encdec.models.t5gemma2.t5gemma2_seq_2_seq_lm import T5Gemma2Seq2SeqLM
from keras_encdec.models.t5gemma2.t5gemma2_seq_2_seq_lm_preprocessor import (
    T5Gemma2Seq2SeqLMPreprocessor,
)
from keras_encdec.models.t5gemma2.t5gemma2_tokenizer import T5Gemma2Tokenizer

__all__ = [
    "T5Gemma2Backbone",
    "T5Gemma2Seq2SeqLM",
    "T5Gemma2Seq2SeqLMPreprocessor",
    "T5Gemma2Tokenizer",
    "T5GemmaBackbone",
    "T5GemmaSeq2SeqLM",
    "T5GemmaSeq2SeqLMPreprocessor",
    "T5GemmaTokenizer",
]
