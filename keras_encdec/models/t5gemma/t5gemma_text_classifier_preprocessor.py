"""Preprocessor of T5Gemma's text and token classifiers."""

import json
import os

import keras
from keras_hub.models import TextClassifierPreprocessor
from keras_hub.src.utils.python_utils import classproperty

from keras_encdec.api import register
from keras_encdec.convert import classifier_preset
from keras_encdec.convert import preset_loader
from keras_encdec.models.t5gemma.t5gemma_backbone import T5GemmaBackbone
from keras_encdec.models.t5gemma.t5gemma_presets import T5GEMMA_PRESETS
from keras_encdec.models.t5gemma.t5gemma_tokenizer import T5GemmaTokenizer

PREPROCESSOR_CONFIG = "preprocessor.json"


@register
class T5GemmaTextClassifierPreprocessor(TextClassifierPreprocessor):
    """Tokenizes and packs raw strings for T5Gemma classifiers.

    Each example becomes `<bos> text <eos>`, truncated and right-padded with `<pad>` to `sequence_length`. Returns a dict with
    `token_ids` and `padding_mask`, plus `y` and `sample_weight` unchanged,
    as keras-hub's `TextClassifierPreprocessor` does (without its
    `segment_ids`, which T5Gemma does not take).

    Args:
        tokenizer: `keras_encdec.models.T5GemmaTokenizer`.
        sequence_length: int. Packed length. Defaults to `512`.
        truncate: str. `"round_robin"` or `"waterfall"` (how pairs are
            truncated). Defaults to `"round_robin"`.
        **kwargs: passed to `keras_hub.models.TextClassifierPreprocessor`.

    Examples:

    >>> preprocessor = T5GemmaTextClassifierPreprocessor.from_preset(
    ...     "t5gemma_tiny_random", sequence_length=8)
    >>> x = preprocessor(["hi"])
    >>> sorted(x), int(x["token_ids"][0][0])
    (['padding_mask', 'token_ids'], 2)
    >>> int(x["token_ids"][0][-1]), bool(x["padding_mask"][0][-1])
    (0, False)
    """

    backbone_cls = T5GemmaBackbone
    tokenizer_cls = T5GemmaTokenizer

    def call(self, x, y=None, sample_weight=None):
        if not isinstance(x, (str, list, tuple)) and not hasattr(x, "dtype"):
            raise TypeError(
                "T5GemmaTextClassifierPreprocessor takes strings: a string or "
                f"a list or tensor of strings. Received: {type(x).__name__}."
            )
        output = super().call(x, y, sample_weight)
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(output)
        x = {"token_ids": x["token_ids"], "padding_mask": x["padding_mask"]}
        return keras.utils.pack_x_y_sample_weight(x, y, sample_weight)

    @classproperty
    def presets(cls):
        """Preset names -> metadata and hub handles."""
        return dict(T5GEMMA_PRESETS)

    @classmethod
    def from_preset(cls, preset, **kwargs):
        """Builds the preprocessor around the tokenizer of any preset.

        Reads the SentencePiece model of a transformers folder
        (`tokenizer.model`) or of a keras-encdec / keras-hub preset
        (`assets/tokenizer/vocabulary.spm`), and the saved settings
        (`sequence_length`, `truncate`) of a preset saved with this class.

        Args:
            preset: str. A preset name, folder or hub handle.
            **kwargs: settings that override the saved ones.

        Examples:

        >>> preprocessor = T5GemmaTextClassifierPreprocessor.from_preset(
        ...     "t5gemma_tiny_random", sequence_length=8)
        >>> tuple(preprocessor(["hello"])["token_ids"].shape)
        (1, 8)
        """
        _, folder = preset_loader.resolve(preset, cls.presets)
        proto = classifier_preset.tokenizer_file(folder)
        if proto is None:
            raise FileNotFoundError(
                f"No tokenizer in '{folder}'. Expected 'tokenizer.model' or "
                "'assets/tokenizer/vocabulary.spm' (a SentencePiece model)."
            )
        settings = {}
        path = os.path.join(folder, PREPROCESSOR_CONFIG)
        if os.path.isfile(path):
            with open(path) as f:
                saved = json.load(f)
            if saved.get("class_name") == cls.__name__:
                config = saved["config"]
                settings = {
                    name: config[name]
                    for name in ("sequence_length", "truncate")
                    if name in config
                }
        settings.update(kwargs)
        return cls(tokenizer=cls.tokenizer_cls(proto=proto), **settings)
