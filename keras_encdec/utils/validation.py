"""Checks of numeric settings, raising `keras_encdec.errors.ConfigError`.

Examples:

>>> check_positive_int("num_layers", 2)
2
>>> check_positive_number("rms_norm_eps", -1.0)
Traceback (most recent call last):
...
keras_encdec.errors.ConfigError: `rms_norm_eps` must be a finite number > 0. Received: rms_norm_eps=-1.0.
"""

import difflib
import math
import numbers

from keras_encdec.errors import ConfigError


def check_positive_int(name, value):
    """Returns `value` if it is an int >= 1 (not a bool); raises otherwise."""
    if (
        not isinstance(value, numbers.Integral)
        or isinstance(value, bool)
        or value < 1
    ):
        raise ConfigError(
            f"`{name}` must be a positive int. Received: {name}={value!r}."
        )
    return int(value)


def check_positive_number(name, value, allow_none=False):
    """Returns `value` if it is a finite real > 0 (or None when allowed)."""
    if value is None and allow_none:
        return None
    if (
        not isinstance(value, numbers.Real)
        or isinstance(value, bool)
        or not math.isfinite(value)
        or value <= 0
    ):
        expected = "a finite number > 0" + (" or None" if allow_none else "")
        raise ConfigError(
            f"`{name}` must be {expected}. Received: {name}={value!r}."
        )
    return value


def check_rate(name, value):
    """Returns `value` if it is a real in `[0, 1)` (a dropout rate)."""
    if (
        not isinstance(value, numbers.Real)
        or isinstance(value, bool)
        or not 0 <= value < 1
    ):
        raise ConfigError(
            f"`{name}` must be a number in [0, 1). Received: {name}={value!r}."
        )
    return value


def check_known_kwargs(owner, kwargs, known, allowed=("name", "trainable")):
    """Raises a `TypeError` naming every key of `kwargs` not in `allowed`,
    with the closest of `known` (the documented arguments) as a hint, so a
    misspelled keyword (`remt=True`) never passes silently."""
    unknown = sorted(set(kwargs) - set(allowed))
    if not unknown:
        return
    hints = []
    for key in unknown:
        close = difflib.get_close_matches(key, list(known) + list(allowed), n=1)
        if close:
            hints.append(f"`{key}` -> `{close[0]}`?")
    hint = f" Did you mean: {', '.join(hints)}" if hints else ""
    raise TypeError(
        f"{owner} got unexpected keyword arguments. Received: {unknown}."
        f"{hint} Expected only its documented arguments."
    )
