"""Parity with the pinned transformers T5Gemma on tiny random models.

Every case saves a random transformers model with `save_pretrained`, loads
it through `T5GemmaSeq2SeqLM.from_preset(folder)` (the real loading code)
and compares fp32 logits: max-abs difference <= 1e-4, at every position,
padded ones included.
"""

import numpy as np
import pytest
from keras import ops

from keras_encdec import testing
from keras_encdec.models import T5GemmaSeq2SeqLM

TOLERANCE = 1e-4

CASES = {
    "sliding_windows": dict(
        encoder=dict(sliding_window=3), decoder=dict(sliding_window=4)
    ),
    "padding": dict(padded=True),
    "gqa": dict(
        encoder=dict(num_attention_heads=4, num_key_value_heads=1),
        decoder=dict(num_attention_heads=4, num_key_value_heads=2),
    ),
    "unbalanced": dict(
        encoder=dict(hidden_size=48, intermediate_size=80, num_hidden_layers=3,
                     layer_types=["sliding_attention", "full_attention",
                                  "sliding_attention"]),
        decoder=dict(hidden_size=24, head_dim=6, query_pre_attn_scalar=6),
    ),
    "soft_caps": dict(
        encoder=dict(attn_logit_softcapping=2.0),
        decoder=dict(attn_logit_softcapping=2.0, final_logit_softcapping=1.5),
    ),
    "no_soft_caps": dict(
        encoder=dict(attn_logit_softcapping=None),
        decoder=dict(attn_logit_softcapping=None, final_logit_softcapping=None),
    ),
    "untied_embeddings": dict(tie_word_embeddings=False),
    "combined": dict(
        encoder=dict(hidden_size=40, head_dim=10, query_pre_attn_scalar=7,
                     num_attention_heads=4, num_key_value_heads=2,
                     sliding_window=2, attn_logit_softcapping=3.0),
        decoder=dict(hidden_size=32, num_attention_heads=4,
                     num_key_value_heads=1, sliding_window=3,
                     attn_logit_softcapping=3.0, final_logit_softcapping=2.0,
                     rope_parameters={"rope_type": "default",
                                      "rope_theta": 500.0}),
        padded=True,
        tie_word_embeddings=False,
    ),
}


def _load_pair(tmp_path, case):
    case = dict(case)
    padded = case.pop("padded", False)
    reference = testing.make_transformers_t5gemma(**case)
    reference.save_pretrained(tmp_path)
    ours = T5GemmaSeq2SeqLM.from_preset(str(tmp_path))
    return reference, ours, padded


@pytest.mark.parametrize("name", sorted(CASES))
def test_logits_match_transformers(tmp_path, name):
    reference, ours, padded = _load_pair(tmp_path, CASES[name])
    batch = testing.random_batch(3, 16, 12, 64, padded=padded, seed=1)
    expected = testing.transformers_logits(reference, batch)
    actual = ops.convert_to_numpy(ours(batch))
    assert actual.shape == expected.shape == (3, 12, 64)
    error = np.max(np.abs(actual - expected))
    assert error <= TOLERANCE, f"{name}: max-abs logit error {error:.3g}"
    # The case must exercise what it names: logits are not trivial.
    assert np.std(expected) > 0.1


def test_greedy_generate_matches_transformers(tmp_path):
    import torch

    reference, ours, _ = _load_pair(tmp_path, CASES["combined"])
    batch = testing.random_batch(3, 10, 1, 64, padded=True, seed=2)
    new_tokens = 14  # Longer than both sliding windows.
    with torch.no_grad():
        expected = reference.generate(
            input_ids=torch.tensor(batch["encoder_token_ids"], dtype=torch.long),
            attention_mask=torch.tensor(batch["encoder_padding_mask"]),
            max_new_tokens=new_tokens,
            do_sample=False,
        ).numpy()
    ours.compile(sampler="greedy")
    out = ours.generate(
        testing.greedy_inputs(  # <bos> 2: transformers' decoder start.
            batch["encoder_token_ids"], new_tokens,
            encoder_padding_mask=batch["encoder_padding_mask"],
        ),
        stop_token_ids=(1,),
    )
    tokens = np.where(out["decoder_padding_mask"], out["decoder_token_ids"], 0)
    tokens = tokens[:, : expected.shape[1]]
    np.testing.assert_array_equal(tokens, expected)
    assert len(np.unique(expected)) > 4  # Not a degenerate repetition.
