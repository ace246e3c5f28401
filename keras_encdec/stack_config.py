"""`StackConfig`: the frozen, self-validating settings of one stack.

An encoder-decoder backbone has two stacks (encoder and decoder), each with
its own width, depth, heads, window, soft-cap, scale and RoPE base. The
backbone takes them as flat `encoder_*` / `decoder_*` arguments (keras-hub's
convention, so `get_config` stays a flat dict); `StackConfig` is the one
place that lists, defaults and validates them. Converters and adaptation use
`StackConfig.names()` instead of their own copies of the list.

Examples:

>>> config = StackConfig(hidden_dim=16, intermediate_dim=32, num_layers=2,
...                      num_heads=2, num_kv_heads=1, head_dim=8,
...                      sliding_window=4)
>>> config.layer_types
('sliding_attention', 'full_attention')
>>> config.prefixed("decoder")["decoder_sliding_window"]
4
>>> StackConfig.from_prefixed(config.prefixed("encoder"), "encoder") == config
True
"""

import dataclasses
import numbers
from typing import Optional

from keras_encdec.errors import ConfigError
from keras_encdec.utils.validation import check_positive_int
from keras_encdec.utils.validation import check_positive_number
from keras_encdec.utils.validation import check_rate

SLIDING_ATTENTION = "sliding_attention"
FULL_ATTENTION = "full_attention"
LAYER_TYPES = (SLIDING_ATTENTION, FULL_ATTENTION)


def alternating_layer_types(num_layers):
    """Gemma 2's pattern: sliding first, then full, alternating."""
    return [LAYER_TYPES[i % 2] for i in range(num_layers)]


@dataclasses.dataclass(frozen=True)
class StackConfig:
    """Settings of one encoder or decoder stack, checked at construction.

    Args:
        hidden_dim: int. Model width.
        intermediate_dim: int. MLP width.
        num_layers: int. Block count.
        num_heads: int. Query heads.
        num_kv_heads: int. Key/value heads; divides `num_heads`.
        head_dim: int. Head width.
        layer_types: sequence of str or None. Per block
            `"sliding_attention"` or `"full_attention"`. Defaults to Gemma
            2's alternation, sliding first.
        sliding_window: int or None. Window of sliding blocks, >= 1 (may be
            None only without sliding blocks). Defaults to `4096`.
        attention_logit_soft_cap: float or None. > 0. Defaults to `50.0`.
        query_pre_attn_scalar: float or None. > 0; attention scales are its
            `-0.5` power. Defaults to `head_dim`.
        rope_max_wavelength: float. RoPE base, > 0. Defaults to `10000.0`.
        side: str. `"encoder"` or `"decoder"`; names the arguments in error
            messages only (not compared, not in `prefixed`). Defaults to
            `"encoder"`.
    """

    hidden_dim: int
    intermediate_dim: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    layer_types: Optional[tuple] = None
    sliding_window: Optional[int] = 4096
    attention_logit_soft_cap: Optional[float] = 50.0
    query_pre_attn_scalar: Optional[float] = None
    rope_max_wavelength: float = 10000.0
    side: str = dataclasses.field(default="encoder", compare=False)

    @classmethod
    def names(cls):
        """The stack argument names, in `__init__` order (without `side`)."""
        return tuple(f.name for f in dataclasses.fields(cls) if f.name != "side")

    @classmethod
    def from_prefixed(cls, kwargs, side):
        """Builds the `side` stack from flat `{side}_{name}` arguments;
        names absent from `kwargs` take their defaults."""
        prefix = f"{side}_"
        values = {
            name: kwargs[prefix + name]
            for name in cls.names()
            if prefix + name in kwargs
        }
        return cls(side=side, **values)

    def prefixed(self, side=None):
        """`{f"{side}_{name}": value}` for every stack argument (JSON-ready:
        `layer_types` as a list)."""
        side = side or self.side
        values = {name: getattr(self, name) for name in self.names()}
        values["layer_types"] = list(values["layer_types"])
        return {f"{side}_{name}": value for name, value in values.items()}

    def __post_init__(self):
        def name(field):
            return f"{self.side}_{field}"

        for field in ("hidden_dim", "intermediate_dim", "num_layers",
                      "num_heads", "num_kv_heads", "head_dim"):
            check_positive_int(name(field), getattr(self, field))
        if self.num_heads % self.num_kv_heads:
            raise ConfigError(
                f"`{name('num_heads')}` must be a multiple of "
                f"`{name('num_kv_heads')}`. Received: {self.num_heads} and "
                f"{self.num_kv_heads}."
            )
        layer_types = self.layer_types
        if layer_types is None:
            layer_types = alternating_layer_types(self.num_layers)
        if isinstance(layer_types, str):
            raise ConfigError(
                f"`{name('layer_types')}` must be a list of str. Received: "
                f"{layer_types!r}."
            )
        layer_types = tuple(layer_types)
        if len(layer_types) != self.num_layers:
            raise ConfigError(
                f"`{name('layer_types')}` needs one entry per layer. "
                f"Received: {len(layer_types)} entries for "
                f"{name('num_layers')}={self.num_layers}."
            )
        bad = sorted(set(layer_types) - set(LAYER_TYPES))
        if bad:
            raise ConfigError(
                f"Unknown `{name('layer_types')}` {bad}. Expected each to be "
                f"one of {LAYER_TYPES}."
            )
        object.__setattr__(self, "layer_types", layer_types)
        if self.sliding_window is not None or SLIDING_ATTENTION in layer_types:
            check_positive_int(name("sliding_window"), self.sliding_window)
        check_positive_number(
            name("attention_logit_soft_cap"),
            self.attention_logit_soft_cap,
            allow_none=True,
        )
        check_positive_number(
            name("query_pre_attn_scalar"),
            self.query_pre_attn_scalar,
            allow_none=True,
        )
        check_positive_number(
            name("rope_max_wavelength"), self.rope_max_wavelength
        )
        if isinstance(self.sliding_window, numbers.Integral):
            object.__setattr__(self, "sliding_window", int(self.sliding_window))


def check_model_settings(**settings):
    """Validates an encoder-decoder's model-wide settings (`StackConfig`
    checks the per-stack ones): `vocabulary_size`, `final_logit_soft_cap`,
    `rms_norm_eps`, `initializer_range`, `dropout_rate`,
    `attention_dropout`, `tie_word_embeddings`."""
    check_positive_int("vocabulary_size", settings["vocabulary_size"])
    check_positive_number(
        "final_logit_soft_cap", settings["final_logit_soft_cap"], allow_none=True
    )
    check_positive_number("rms_norm_eps", settings["rms_norm_eps"])
    check_positive_number("initializer_range", settings["initializer_range"])
    check_rate("dropout_rate", settings["dropout_rate"])
    check_rate("attention_dropout", settings["attention_dropout"])
    if not isinstance(settings["tie_word_embeddings"], bool):
        raise ConfigError(
            "`tie_word_embeddings` must be a bool. Received: "
            f"tie_word_embeddings={settings['tie_word_embeddings']!r}."
        )
