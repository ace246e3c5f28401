"""`impl="flex"` (torch flex_attention) against `"dense"`.

On CPU torch 2.13 runs flex's forward only (no CPU backward), so gradients
are checked where CUDA is present and the CPU backward is checked to raise
with its reason.
"""

import numpy as np
import pytest

from keras_encdec.ops.attention_testing import BACKEND
from keras_encdec.ops.attention_testing import CASES
from keras_encdec.ops.attention_testing import TOLERANCE
from keras_encdec.ops.attention_testing import case_options
from keras_encdec.ops.attention_testing import impl_factory
from keras_encdec.ops.attention_testing import make_inputs
from keras_encdec.ops.attention_testing import max_errors

pytestmark = pytest.mark.skipif(BACKEND != "torch", reason="torch only")


def _cuda():
    import torch

    return torch.cuda.is_available()


@pytest.mark.parametrize("name", sorted(CASES))
def test_forward_matches_dense(name):
    import torch

    from keras_encdec.ops.attention import dot_product_attention

    case = CASES[name]
    query, key, value, _, mask = make_inputs(**case)
    options = case_options(case)
    with torch.no_grad():
        dense = dot_product_attention(query, key, value, impl="dense",
                                      key_padding_mask=mask, **options)
        flex = dot_product_attention(query, key, value, impl="flex",
                                     key_padding_mask=mask, **options)
    error = np.max(np.abs(dense.cpu().numpy() - flex.cpu().numpy()))
    assert error < TOLERANCE


@pytest.mark.skipif(not _cuda(), reason="flex backward needs CUDA")
@pytest.mark.parametrize("name", sorted(CASES))
def test_gradients_match_dense_on_cuda(name):
    errors = max_errors(CASES[name], impl_factory("flex"))
    assert max(errors.values()) < TOLERANCE, errors


@pytest.mark.skipif(_cuda(), reason="checks the CPU limitation")
def test_cpu_backward_raises_with_reason():
    import torch

    from keras_encdec.ops.attention import dot_product_attention

    x = torch.zeros((1, 4, 2, 8), requires_grad=True)
    with pytest.raises(ValueError, match="no backward on cpu"):
        dot_product_attention(x, x, x, scale=1.0, impl="flex")
