"""Invariants 1-3: the adapted model still holds its Gemma 2 source."""

import numpy as np
import pytest
from keras import ops

from keras_encdec.adapt import adapt_decoder_only
from keras_encdec.adapt.conftest import ADAPT_SEED
from keras_encdec.adapt.conftest import FINAL_CAP
from keras_encdec.adapt.conftest import LENGTH
from keras_encdec.adapt.conftest import WINDOW
from keras_encdec.adapt.conftest import token_batch
from keras_encdec.adapt.verify import causal_encoder_hidden_states
from keras_encdec.adapt.verify import max_abs_difference
from keras_encdec.testing import seq2seq_inputs

TOLERANCE = 1e-5


@pytest.fixture(scope="module")
def adapted_zeros(gemma2_lm):
    return adapt_decoder_only(gemma2_lm, cross_attention_init="zeros")


def test_window_shorter_than_sequence(gemma2_lm):
    assert WINDOW < LENGTH
    assert gemma2_lm.backbone.use_sliding_window_attention


def test_encoder_run_causally_reproduces_keras_hub_source(
    gemma2_lm, adapted_zeros
):
    backbone = adapted_zeros.backbone
    assert backbone.encoder_sliding_window == WINDOW
    assert not backbone.encoder_layers[0].self_attention.causal
    ids, mask = token_batch(backbone.vocabulary_size)
    source = gemma2_lm.backbone({"token_ids": ids, "padding_mask": mask})
    ours = causal_encoder_hidden_states(backbone, ids, mask)
    error = max_abs_difference(ours, source)
    print(f"invariant 1 (keras-hub) max-abs: {error:.3g}")
    assert error <= TOLERANCE
    # Bidirectional, the encoder is a different function of the same weights.
    bidirectional = backbone.encode(ids, mask)
    assert max_abs_difference(bidirectional, source) > 1e-2


def test_zeros_init_decoder_reproduces_keras_hub_logits(
    gemma2_lm, adapted_zeros
):
    ids, mask = token_batch(adapted_zeros.backbone.vocabulary_size, seed=1)
    source = gemma2_lm({"token_ids": ids, "padding_mask": mask})
    ours = adapted_zeros(seq2seq_inputs(ids, mask))
    error = max_abs_difference(ours, source)
    print(f"invariant 2 (keras-hub) max-abs: {error:.3g}")
    assert error <= TOLERANCE
    # The final soft-cap is active: some logits sit near the cap.
    assert np.abs(ops.convert_to_numpy(source)).max() > 0.5 * FINAL_CAP


def test_transformers_gemma2_folder(hf_gemma2_folder, hf_adapted):
    import torch

    _, model = hf_gemma2_folder
    lm = hf_adapted
    backbone = lm.backbone
    assert backbone.decoder_query_pre_attn_scalar == 12
    assert backbone.decoder_rope_max_wavelength == 500.0
    ids, mask = token_batch(backbone.vocabulary_size, seed=2)
    with torch.no_grad():
        input_ids = torch.tensor(ids, dtype=torch.long)
        logits = model(input_ids=input_ids).logits.float().numpy()
        hidden = model.model(input_ids=input_ids).last_hidden_state.numpy()
    encoder_error = max_abs_difference(
        causal_encoder_hidden_states(backbone, ids, mask), hidden
    )
    logits_error = max_abs_difference(lm(seq2seq_inputs(ids, mask)), logits)
    print(
        f"invariant 3 (transformers) max-abs: encoder {encoder_error:.3g}, "
        f"logits {logits_error:.3g}"
    )
    assert encoder_error <= TOLERANCE
    assert logits_error <= TOLERANCE
    assert lm.preprocessor is not None  # Text generation: see cli_test.


def test_keras_hub_preset_folder_matches_in_memory_source(
    gemma2_lm, tmp_path
):
    import keras

    gemma2_lm.save_to_preset(str(tmp_path))
    keras.utils.set_random_seed(ADAPT_SEED)
    from_folder = adapt_decoder_only(
        str(tmp_path), cross_attention_init="zeros"
    )
    keras.utils.set_random_seed(ADAPT_SEED)
    in_memory = adapt_decoder_only(gemma2_lm, cross_attention_init="zeros")
    assert from_folder.preprocessor is not None
    ids, mask = token_batch(from_folder.backbone.vocabulary_size, seed=3)
    mask[1, 6:] = 0  # A padded batch: row 1 has 6 real tokens.
    inputs = seq2seq_inputs(ids, mask)
    folder_logits = from_folder(inputs)
    pair_error = max_abs_difference(folder_logits, in_memory(inputs))
    source = gemma2_lm({"token_ids": ids, "padding_mask": mask})
    # Padded queries whose window holds only padding are fully masked, which
    # keras-hub and we resolve differently: compare at real tokens only.
    real = mask.astype(bool)
    source_error = max_abs_difference(
        ops.convert_to_numpy(folder_logits)[real],
        ops.convert_to_numpy(source)[real],
    )
    print(
        f"keras-hub preset folder max-abs: vs in-memory {pair_error:.3g}, "
        f"vs source {source_error:.3g}"
    )
    assert pair_error == 0
    assert source_error <= TOLERANCE
