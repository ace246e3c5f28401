"""`T5Gemma2Backbone`'s presets, `from_preset` and `get_config`.

Kept apart from the layers and the forward pass in `t5gemma2_backbone.py`:
`T5Gemma2Backbone` mixes this class in before `T5GemmaBackbone`.
"""

from keras_hub.models import Backbone
from keras_hub.src.utils.python_utils import classproperty

from keras_encdec.convert import preset_loader
from keras_encdec.models.t5gemma2.t5gemma2_config import STACK_ARGS
from keras_encdec.models.t5gemma2.t5gemma2_presets import T5GEMMA2_PRESETS


class T5Gemma2BackboneConfigMixin:
    """Preset loading and config of `T5Gemma2Backbone` (see there)."""

    @classproperty
    def presets(cls):
        """Preset names -> metadata and hub handles."""
        return dict(T5GEMMA2_PRESETS)

    @classmethod
    def from_preset(cls, preset, load_weights=True, text_only=False, **kwargs):
        """Builds the backbone from a preset name, folder or hub handle.

        Accepts a keras-encdec preset name or folder, a local transformers
        T5Gemma 2 checkpoint folder (keys as transformers 5.23 writes them
        or with the `vision_model.` infix of published checkpoints), a
        keras-hub `T5Gemma2Backbone` / `T5Gemma2Seq2SeqLM` preset folder
        (see `keras_encdec.convert.keras_hub_t5gemma2`), or an `hf://` /
        `kaggle://` handle.

        Args:
            preset: str. The preset to load.
            load_weights: bool. Load the weights, or keep a random init.
                Defaults to `True`.
            text_only: bool. Skip a transformers or keras-hub checkpoint's
                vision tower (no vision weights are kept). Defaults to
                `False`.
            **kwargs: backbone config overrides, e.g. `dtype`.

        Examples:

        >>> from keras_encdec.models import T5Gemma2Backbone
        >>> backbone = T5Gemma2Backbone.from_preset("t5gemma2_tiny_random")
        >>> backbone.vocabulary_size > 0
        True
        """
        fmt, folder = preset_loader.resolve(preset, T5GEMMA2_PRESETS)
        if fmt == preset_loader.KERAS_ENCDEC:
            return Backbone.from_preset.__func__(
                cls, folder, load_weights=load_weights, **kwargs
            )
        if fmt == preset_loader.KERAS_HUB:
            from keras_encdec.convert import keras_hub_t5gemma2

            return keras_hub_t5gemma2.load_backbone(
                cls, folder, load_weights=load_weights, text_only=text_only,
                **kwargs
            )
        from keras_encdec.convert import transformers_t5gemma2 as hf

        return hf.load_backbone(
            cls, folder, load_weights=load_weights, text_only=text_only, **kwargs
        )

    def get_config(self):
        config = Backbone.get_config(self)
        config["vocabulary_size"] = self.vocabulary_size
        config["hidden_dim"] = self.hidden_dim
        for side in ("encoder", "decoder"):
            for name in STACK_ARGS:
                config[f"{side}_{name}"] = getattr(self, f"{side}_{name}")
        for name in (
            "rope_local_wavelength",
            "rope_global_wavelength",
            "rope_scaling_factor",
            "final_logit_soft_cap",
            "attention_logit_soft_cap",
            "eoi_token_index",
            "image_token_index",
            "rms_norm_eps",
            "hidden_activation",
            "dropout_rate",
            "attention_dropout",
            "initializer_range",
            "vision_config",
            "mm_tokens_per_image",
            "attention_impl",
            "remat",
        ):
            config[name] = getattr(self, name)
        return config
