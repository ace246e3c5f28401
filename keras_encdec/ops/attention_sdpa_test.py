"""`impl="sdpa"` (torch `scaled_dot_product_attention`) against `"dense"`:
outputs and gradients on every mask case without a soft-cap, including rows
that see no key (dense gives them the mean of the values)."""

import numpy as np
import pytest

from keras_encdec.ops.attention import dot_product_attention
from keras_encdec.ops.attention import resolve_impl
from keras_encdec.ops.attention_testing import BACKEND
from keras_encdec.ops.attention_testing import CASES
from keras_encdec.ops.attention_testing import TOLERANCE
from keras_encdec.ops.attention_testing import impl_factory
from keras_encdec.ops.attention_testing import max_errors

UNCAPPED = sorted(name for name, case in CASES.items()
                  if case.get("soft_cap") is None)


@pytest.mark.skipif(BACKEND != "torch", reason="torch only")
@pytest.mark.parametrize("name", UNCAPPED)
def test_forward_and_gradients_match_dense(name):
    errors = max_errors(CASES[name], impl_factory("sdpa"))
    assert max(errors.values()) < TOLERANCE, errors


def test_none_picks_sdpa_on_torch_without_soft_cap_or_dropout():
    query = np.zeros((1, 64, 4, 8), "float32")
    key = np.zeros((1, 64, 2, 8), "float32")
    want = "sdpa" if BACKEND == "torch" else "dense"
    assert resolve_impl(None, query, key) == want
    assert resolve_impl(None, query, key, soft_cap=50.0) == "dense"
    assert resolve_impl(None, query, key, lambda p: p) == "dense"
    assert resolve_impl(None, query.astype("float16"), key) == "dense"


@pytest.mark.parametrize(
    "kwargs, match",
    [(dict(soft_cap=2.0), "no logit soft-cap"),
     (dict(probabilities_dropout=lambda p: p), "probabilities_dropout")],
)
def test_named_sdpa_that_cannot_run_raises_with_reason(kwargs, match):
    query = np.zeros((1, 4, 2, 8), "float32")
    if BACKEND != "torch":
        match = f"this process runs {BACKEND}"
    with pytest.raises(ValueError, match=match):
        dot_product_attention(query, query, query, scale=1.0, impl="sdpa",
                              **kwargs)
