"""`fit` on every backend: mixed_bfloat16 + LoRA, gradient accumulation,
and LoRA on an int8-quantized base (QLoRA)."""

import keras
import numpy as np
import pytest

from keras_encdec.models import T5GemmaBackbone
from keras_encdec.models import T5GemmaSeq2SeqLM
from keras_encdec.testing import random_batch

VOCAB = 64


def tiny_lm(seed=0, **overrides):
    keras.utils.set_random_seed(seed)
    config = dict(vocabulary_size=VOCAB)
    for side in ("encoder", "decoder"):
        config.update(
            {
                f"{side}_hidden_dim": 32,
                f"{side}_intermediate_dim": 48,
                f"{side}_num_layers": 2,
                f"{side}_num_heads": 4,
                f"{side}_num_kv_heads": 2,
                f"{side}_head_dim": 8,
            }
        )
    config.update(overrides)
    return T5GemmaSeq2SeqLM(T5GemmaBackbone(**config))


def batch(size=4, seed=1):
    x = random_batch(size, 10, 8, VOCAB, padded=True, seed=seed)
    y = np.roll(x["decoder_token_ids"], -1, axis=1)
    return x, y, x["decoder_padding_mask"]


def dense_loss():
    return keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def weights_of(model):
    return {v.path: keras.ops.convert_to_numpy(v).astype("float32")
            for v in model.weights}


def max_diff(a, b):
    return max(float(np.abs(a[k] - b[k]).max()) for k in a)


def test_mixed_bfloat16_lora_fit_with_accumulation_learns():
    lm = tiny_lm(dtype="mixed_bfloat16")
    lm.backbone.enable_lora(4, target="attention+mlp")
    lm.compile(
        optimizer=keras.optimizers.Adam(2e-2, gradient_accumulation_steps=2),
        loss=dense_loss(),
    )
    x, y, w = batch(8)
    history = lm.fit(x, y, sample_weight=w, batch_size=4, epochs=6,
                     shuffle=False, verbose=0)
    losses = history.history["loss"]
    assert np.all(np.isfinite(losses))
    assert losses[-1] < 0.95 * losses[0], losses
    assert str(lm.backbone.compute_dtype) == "bfloat16"
    assert {str(v.dtype) for v in lm.trainable_weights} == {"float32"}
    # 6 epochs x 2 batches = 12 micro-steps = 6 optimizer updates.
    assert int(keras.ops.convert_to_numpy(lm.optimizer.iterations)) == 6


def test_accumulating_two_micro_batches_equals_one_big_step():
    x, y, w = batch(4)

    def one_epoch(batch_size, accumulation):
        lm = tiny_lm()
        lm.compile(
            optimizer=keras.optimizers.SGD(
                0.5, gradient_accumulation_steps=accumulation
            ),
            loss=dense_loss(),
        )
        lm.fit(x, y, sample_weight=w, batch_size=batch_size, epochs=1,
               shuffle=False, verbose=0)
        return weights_of(lm)

    initial = weights_of(tiny_lm())
    big = one_epoch(4, None)
    accumulated = one_epoch(2, 2)
    assert max_diff(big, initial) > 1e-3  # the step moved the weights
    assert max_diff(accumulated, big) <= 1e-5


# Keras 3.15 int8 EinsumDense + LoRA, per backend.
INT8_LORA_BACKENDS = ("jax", "torch", "tensorflow")


def test_qlora_int8_base_fits_and_merges():
    lm = tiny_lm()
    x, y, w = batch(4)
    float_logits = keras.ops.convert_to_numpy(lm(x))
    # QLoRA: quantize the projections (not the embeddings / LM head).
    lm.quantize("int8", filters=r"(query|key|value|attention_output|ffw_)")
    kernels = [v for v in lm.weights if v.path.endswith("/kernel")]
    assert kernels and {str(v.dtype) for v in kernels} == {"int8"}
    quant_logits = keras.ops.convert_to_numpy(lm(x))
    assert np.abs(quant_logits - float_logits).max() < 0.05
    if keras.backend.backend() not in INT8_LORA_BACKENDS:
        with pytest.raises((NotImplementedError, ValueError)):
            lm.backbone.enable_lora(4)
        return
    lm.backbone.enable_lora(4, target="attention+mlp")
    assert {str(v.dtype) for v in lm.trainable_weights} == {"float32"}
    lm.compile(optimizer=keras.optimizers.Adam(2e-2), loss=dense_loss())
    history = lm.fit(x, y, sample_weight=w, batch_size=4, epochs=5,
                     verbose=0)
    losses = history.history["loss"]
    assert losses[-1] < 0.95 * losses[0], losses
    assert {str(v.dtype) for v in kernels} == {"int8"}  # base untouched
    tuned = keras.ops.convert_to_numpy(lm(x))
    lm.backbone.merge_lora()  # dequantize, add, requantize
    merged = keras.ops.convert_to_numpy(lm(x))
    assert {str(v.dtype) for v in kernels} == {"int8"}
    # Requantizing the merged kernel costs int8 rounding only.
    assert np.abs(merged - tuned).max() < 0.05
