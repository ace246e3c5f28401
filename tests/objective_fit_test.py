"""`fit` trains with the default objective: one SGD step equals transformers'.

A tiny random transformers T5Gemma is loaded into ours; both take one SGD
step on the same padded batch (transformers: its own loss with -100 on
padding; ours: `compile()`, i.e. `TokenCrossEntropy`, the chunked loss from
hidden states).
Our updated weights, exported back to transformers, must equal transformers'
updated weights, and the reported losses must agree.
"""

import numpy as np
import pytest
from keras import ops

import keras
from keras_encdec import testing
from keras_encdec.convert.safetensors_io import SafetensorsReader
from keras_encdec.models import T5GemmaSeq2SeqLM
from keras_encdec.objectives import TokenCrossEntropy

LEARNING_RATE = 0.5


@pytest.mark.parametrize("tied", [True, False])
def test_one_sgd_step_matches_transformers(tmp_path, tied):
    import torch

    reference = testing.make_transformers_t5gemma(
        tie_word_embeddings=tied,
        encoder=dict(sliding_window=3),
        decoder=dict(sliding_window=2, final_logit_softcapping=2.0),
    )
    reference.save_pretrained(tmp_path / "before")
    batch = testing.random_batch(3, 9, 8, 64, padded=True, seed=6)
    rng = np.random.default_rng(7)
    labels = rng.integers(3, 64, size=(3, 8)).astype("int32")
    weights = batch["decoder_padding_mask"]

    # transformers: HF loss (token mean over labels != -100), one SGD step.
    reference.train()
    hf_labels = torch.tensor(np.where(weights > 0, labels, -100), dtype=torch.long)
    out = reference(
        input_ids=torch.tensor(batch["encoder_token_ids"], dtype=torch.long),
        attention_mask=torch.tensor(batch["encoder_padding_mask"]),
        decoder_input_ids=torch.tensor(batch["decoder_token_ids"], dtype=torch.long),
        decoder_attention_mask=torch.tensor(weights),
        labels=hf_labels,
    )
    out.loss.backward()
    with torch.no_grad():
        for parameter in reference.parameters():
            parameter -= LEARNING_RATE * parameter.grad
    expected = {k: v.detach().numpy() for k, v in reference.state_dict().items()}

    # Ours: default compile = chunked loss from hidden states.
    lm = T5GemmaSeq2SeqLM.from_preset(str(tmp_path / "before"))
    lm.compile(optimizer=keras.optimizers.SGD(LEARNING_RATE))
    assert isinstance(lm.objective, TokenCrossEntropy)
    loss = lm.train_on_batch(batch, labels, sample_weight=weights)
    assert abs(float(loss) - float(out.loss)) <= 1e-5

    lm.export_to_transformers(str(tmp_path / "after"))
    exported = SafetensorsReader(str(tmp_path / "after"))
    worst = max(
        float(np.max(np.abs(exported.get(name) - expected[name])))
        for name in exported.keys()
    )
    moved = max(
        float(np.max(np.abs(exported.get(name) - SafetensorsReader(
            str(tmp_path / "before")).get(name))))
        for name in exported.keys()
    )
    assert worst <= 1e-5, worst
    assert moved > 1e-3  # The step really changed the weights.


def test_training_step_builds_no_vocabulary_sized_logits():
    """The training forward returns hidden states, not logits; evaluate
    reports the same loss as the training objective."""
    lm = T5GemmaSeq2SeqLM.from_preset("t5gemma_tiny_random", preprocessor=None)
    lm.compile(optimizer=keras.optimizers.SGD(0.0))
    batch = testing.random_batch(2, 6, 5, 384, padded=True, seed=8)
    width = lm.backbone.decoder_hidden_dim
    assert tuple(lm(batch, training=True).shape) == (2, 5, width)
    assert tuple(lm(batch, training=False).shape) == (2, 5, 384)
    labels = np.random.default_rng(9).integers(3, 384, (2, 5)).astype("int32")
    train_loss = float(lm.train_on_batch(batch, labels, sample_weight=batch[
        "decoder_padding_mask"]))
    eval_loss = float(lm.test_on_batch(batch, labels, sample_weight=batch[
        "decoder_padding_mask"]))
    assert abs(train_loss - eval_loss) <= 1e-5
    # A Keras loss opts out: logits are built and accuracy is reported.
    lm.compile(
        optimizer="sgd",
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    assert lm.objective is None
    metrics = lm.evaluate(batch, labels, return_dict=True, verbose=0)
    assert "sparse_categorical_accuracy" in metrics
    assert ops.convert_to_numpy(lm(batch)).shape == (2, 5, 384)


def test_objective_and_loss_together_raise():
    lm = T5GemmaSeq2SeqLM.from_preset("t5gemma_tiny_random", preprocessor=None)
    with pytest.raises(ValueError, match="either `objective=`.*not both"):
        lm.compile(objective=TokenCrossEntropy(), loss="mse")
    with pytest.raises(TypeError, match="TrainingObjective"):
        lm.compile(objective="ce")
    with pytest.raises(ValueError, match="Unknown loss `impl`"):
        TokenCrossEntropy(impl="cuda")
