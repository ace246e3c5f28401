"""T5Gemma 2 parity with the pinned transformers on tiny random models.

Every case saves a random `T5Gemma2ForConditionalGeneration` (vision tower
included, every weight re-drawn with std 0.3 so norms, the EOI embedding and
the embeddings matter) with `save_pretrained`, loads it through
`T5Gemma2Seq2SeqLM.from_preset(folder)` and compares fp32 logits at every
position, padded ones included: max-abs difference <= 1e-4.
"""

import numpy as np
import pytest
from keras import ops

from keras_encdec import testing
from keras_encdec.convert.safetensors_io import SafetensorsReader
from keras_encdec.models import T5Gemma2Seq2SeqLM

TOLERANCE = 1e-4
EOI = 61
# Windows shorter than the sequences, GQA, linear RoPE scaling on full
# layers, a query scalar that is not the head width.
BASE = dict(
    encoder=dict(sliding_window=4, num_attention_heads=4, num_key_value_heads=1,
                 query_pre_attn_scalar=6),
    decoder=dict(sliding_window=3, num_attention_heads=4, num_key_value_heads=2,
                 layer_types=["sliding_attention", "full_attention",
                              "sliding_attention"],
                 num_hidden_layers=3),
    rope_scaling_factor=4.0,
)
CASES = {
    "final_soft_cap": dict(decoder=dict(final_logit_softcapping=1.5)),
    "no_final_soft_cap": dict(decoder=dict(final_logit_softcapping=None)),
    # transformers ignores attention soft-caps; so do we.
    "attention_soft_cap_ignored": dict(
        encoder=dict(attn_logit_softcapping=2.0),
        decoder=dict(attn_logit_softcapping=2.0),
    ),
}


def _case(name):
    case = {side: dict(BASE[side]) for side in ("encoder", "decoder")}
    for side, values in CASES.get(name, {}).items():
        case[side].update(values)
    return dict(case, rope_scaling_factor=BASE["rope_scaling_factor"])


def _batch(seed, decoder_length=12):
    """Padded ids below the image token, with EOI in both stacks."""
    batch = testing.random_batch(3, 16, decoder_length, 60, padded=True,
                                 seed=seed)
    batch["encoder_token_ids"][0, 5] = EOI
    batch["decoder_token_ids"][1, 2] = EOI
    return batch


def _load_pair(tmp_path, name):
    reference = testing.make_transformers_t5gemma2(seed=1, **_case(name))
    reference.save_pretrained(tmp_path / "hf")
    return reference, T5Gemma2Seq2SeqLM.from_preset(str(tmp_path / "hf"))


@pytest.mark.parametrize("name", sorted(CASES))
def test_logits_match_transformers(tmp_path, name):
    reference, ours = _load_pair(tmp_path, name)
    batch = _batch(seed=1)
    expected = testing.transformers_logits(reference, batch)
    actual = ops.convert_to_numpy(ours(batch))
    assert actual.shape == expected.shape == (3, 12, 64)
    error = np.max(np.abs(actual - expected))
    assert error <= TOLERANCE, f"{name}: max-abs logit error {error:.3g}"
    assert np.std(expected) > 0.1  # Not trivial logits.


def test_eoi_embedding_is_used(tmp_path):
    reference, ours = _load_pair(tmp_path, "no_final_soft_cap")
    batch = _batch(seed=1)
    with_eoi = ops.convert_to_numpy(ours(batch))
    batch["decoder_token_ids"][1, 2] = 7
    without = ops.convert_to_numpy(ours(batch))
    assert np.max(np.abs(with_eoi[1, 2:] - without[1, 2:])) > 0.1
    np.testing.assert_allclose(
        without, testing.transformers_logits(reference, batch), atol=TOLERANCE
    )


def test_greedy_generate_matches_transformers(tmp_path):
    import torch

    reference, ours = _load_pair(tmp_path, "no_final_soft_cap")
    batch = _batch(seed=2)
    new_tokens = 24  # Longer than both sliding windows.
    with torch.no_grad():
        expected = reference.generate(
            input_ids=torch.tensor(batch["encoder_token_ids"], dtype=torch.long),
            attention_mask=torch.tensor(batch["encoder_padding_mask"]),
            max_new_tokens=new_tokens,
            min_new_tokens=new_tokens,
            do_sample=False,
        ).numpy()
    assert expected.shape == (3, new_tokens + 1)
    ours.compile(sampler="greedy")
    out = ours.generate(
        testing.greedy_inputs(  # <bos> 2: transformers' decoder start.
            batch["encoder_token_ids"], new_tokens,
            encoder_padding_mask=batch["encoder_padding_mask"],
        ),
        stop_token_ids=None,
    )
    np.testing.assert_array_equal(
        ops.convert_to_numpy(out["decoder_token_ids"]), expected
    )
    assert len(np.unique(expected)) > 4  # Not a degenerate repetition.


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_export_round_trip_is_bit_identical(tmp_path, dtype):
    import torch
    from transformers import T5Gemma2ForConditionalGeneration

    reference = testing.make_transformers_t5gemma2(**_case("final_soft_cap"))
    reference.to(getattr(torch, dtype)).save_pretrained(tmp_path / "hf")
    lm = T5Gemma2Seq2SeqLM.from_preset(str(tmp_path / "hf"))
    lm.export_to_transformers(str(tmp_path / "back"))
    original = SafetensorsReader(str(tmp_path / "hf"))
    exported = SafetensorsReader(str(tmp_path / "back"))
    assert sorted(exported.keys()) == sorted(original.keys())
    for name in original.keys():
        assert exported.dtype(name) == original.dtype(name), name
        assert exported.get(name).tobytes() == original.get(name).tobytes()
    if dtype == "float32":
        reloaded = T5Gemma2ForConditionalGeneration.from_pretrained(
            str(tmp_path / "back"), attn_implementation="eager"
        ).eval()
        batch = _batch(seed=3)
        np.testing.assert_array_equal(
            testing.transformers_logits(reloaded, batch),
            testing.transformers_logits(reference, batch),
        )


def test_image_tokens_with_pixels_match_transformers(tmp_path):
    import torch

    reference, ours = _load_pair(tmp_path, "final_soft_cap")
    assert ours.backbone.vision_encoder is not None
    batch = _batch(seed=4)
    image_token = 62
    batch["encoder_token_ids"][:, 1:5] = image_token  # 4 tokens per image
    batch["encoder_padding_mask"][:, :6] = 1
    pixels = np.random.default_rng(0).normal(size=(3, 1, 28, 28, 3))
    pixels = pixels.astype("float32")
    with torch.no_grad():
        expected = reference(
            input_ids=torch.tensor(batch["encoder_token_ids"], dtype=torch.long),
            attention_mask=torch.tensor(batch["encoder_padding_mask"]),
            pixel_values=torch.tensor(pixels[:, 0].transpose(0, 3, 1, 2)),
            decoder_input_ids=torch.tensor(
                batch["decoder_token_ids"], dtype=torch.long
            ),
            decoder_attention_mask=torch.tensor(batch["decoder_padding_mask"]),
        ).logits.numpy()
    actual = ops.convert_to_numpy(ours(dict(batch, pixel_values=pixels)))
    error = np.max(np.abs(actual - expected))
    assert error <= TOLERANCE, f"max-abs logit error {error:.3g}"
    # The pixels matter.
    without = testing.transformers_logits(reference, batch)
    assert np.max(np.abs(without - expected)) > 0.1


def test_text_only_load_keeps_no_vision_weights(tmp_path):
    reference, ours = _load_pair(tmp_path, "final_soft_cap")
    text_only = T5Gemma2Seq2SeqLM.from_preset(
        str(tmp_path / "hf"), text_only=True
    )
    assert text_only.backbone.vision_encoder is None
    assert not any("vision" in w.path for w in text_only.backbone.weights)
    batch = _batch(seed=5)
    np.testing.assert_allclose(
        ops.convert_to_numpy(text_only(batch)),
        testing.transformers_logits(reference, batch),
        atol=TOLERANCE,
    )
