"""Model classes: backbones, tasks, preprocessors and tokenizers.

Examples:

>>> from keras_encdec.models import T5GemmaSeq2SeqLM
>>> lm = T5GemmaSeq2SeqLM.from_preset("t5gemma_tiny_random")  # embedded
"""

from keras_encdec.models.t5gemma.t5gemma_backbone import T5GemmaBackbone
from keras_encdec.models.t5gemma.t5gemma_encoder_model import T5GemmaEncoderModel
from keras_encdec.models.t5gemma.t5gemma_seq_2_seq_lm import T5GemmaSeq2SeqLM
from keras_encdec.models.t5gemma.t5gemma_seq_2_seq_lm_preprocessor import (
    T5GemmaSeq2SeqLMPreprocessor,
)
from keras_encdec.models.t5gemma.t5gemma_text_classifier import (
    T5GemmaTextClassifier,
)
from keras_encdec.models.t5gemma.t5gemma_text_classifier_preprocessor import (
    T5GemmaTextClassifierPreprocessor,
)
from keras_encdec.models.t5gemma.t5gemma_token_classifier import (
    T5GemmaTokenClassifier,
)
from keras_encdec.models.t5gemma.t5gemma_token_classifier_preprocessor import (
    T5GemmaTokenClassifierPreprocessor,
)
from keras_encdec.models.t5gemma.t5gemma_tokenizer import T5GemmaTokenizer
from keras_encdec.models.t5gemma2.t5gemma2_backbone import T5Gemma2Backbone
from keras_encdec.models.t5gemma2.t5gemma2_image_converter import (
    T5Gemma2ImageConverter,
)
from keras_encdec.models.t5gemma2.t5gemma2_seq_2_seq_lm import T5Gemma2Seq2SeqLM
from keras_encdec.models.t5gemma2.t5gemma2_seq_2_seq_lm_preprocessor import (
    T5Gemma2Seq2SeqLMPreprocessor,
)
from keras_encdec.models.t5gemma2.t5gemma2_encoder_model import (
    T5Gemma2EncoderModel,
)
from keras_encdec.models.t5gemma2.t5gemma2_text_classifier import (
    T5Gemma2TextClassifier,
)
from keras_encdec.models.t5gemma2.t5gemma2_classifier_preprocessor import (
    T5Gemma2TextClassifierPreprocessor,
)
from keras_encdec.models.t5gemma2.t5gemma2_token_classifier import (
    T5Gemma2TokenClassifier,
)
from keras_encdec.models.t5gemma2.t5gemma2_classifier_preprocessor import (
    T5Gemma2TokenClassifierPreprocessor,
)
from keras_encdec.models.t5gemma2.t5gemma2_tokenizer import T5Gemma2Tokenizer

__all__ = [
    "T5Gemma2Backbone",
    "T5Gemma2EncoderModel",
    "T5Gemma2ImageConverter",
    "T5Gemma2Seq2SeqLM",
    "T5Gemma2Seq2SeqLMPreprocessor",
    "T5Gemma2TextClassifier",
    "T5Gemma2TextClassifierPreprocessor",
    "T5Gemma2TokenClassifier",
    "T5Gemma2TokenClassifierPreprocessor",
    "T5Gemma2Tokenizer",
    "T5GemmaBackbone",
    "T5GemmaEncoderModel",
    "T5GemmaSeq2SeqLM",
    "T5GemmaSeq2SeqLMPreprocessor",
    "T5GemmaTextClassifier",
    "T5GemmaTextClassifierPreprocessor",
    "T5GemmaTokenClassifier",
    "T5GemmaTokenClassifierPreprocessor",
    "T5GemmaTokenizer",
]
