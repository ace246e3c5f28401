"""T5Gemma 2 fine-tuning: LoRA under the layout map on a simulated 8-device
CPU mesh (jax, in a subprocess: `XLA_FLAGS` must be set before jax starts),
and LoRA on an int8-quantized base on every backend."""

import json
import os
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest

from keras_encdec.models import T5Gemma2Backbone
from keras_encdec.models import T5Gemma2Seq2SeqLM
from keras_encdec.testing import random_batch

VOCAB = 64
# kv heads = 4: the model axis of the (2, 4) mesh must divide them.
CONFIG = dict(
    vocabulary_size=VOCAB, hidden_dim=32,
    encoder_intermediate_dim=64, encoder_num_layers=2, encoder_num_heads=4,
    encoder_num_kv_heads=4, encoder_head_dim=8,
    decoder_intermediate_dim=64, decoder_num_layers=2, decoder_num_heads=4,
    decoder_num_kv_heads=4, decoder_head_dim=8,
    encoder_layer_types=["sliding_attention", "full_attention"],
    decoder_layer_types=["sliding_attention", "full_attention"],
    encoder_sliding_window=4, decoder_sliding_window=4,
    eoi_token_index=60, image_token_index=61, initializer_range=0.1,
)

SCRIPT = textwrap.dedent(
    """
    import json, os, sys
    os.environ["KERAS_BACKEND"] = "jax"
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "")
                           + " --xla_force_host_platform_device_count=8")
    import keras, numpy as np
    from keras_encdec.models import T5Gemma2Backbone, T5Gemma2Seq2SeqLM
    from keras_encdec.testing import random_batch

    CONFIG = json.loads(sys.argv[1])
    x = random_batch(8, 12, 10, 60, padded=True, seed=3)
    y = np.roll(x["decoder_token_ids"], -1, axis=1)
    w = x["decoder_padding_mask"]

    def run():
        keras.utils.set_random_seed(0)
        lm = T5Gemma2Seq2SeqLM(T5Gemma2Backbone(**CONFIG))
        lm.backbone.enable_lora(4, target="all")
        for v in lm.trainable_weights:  # B starts at 0: give it a value.
            v.assign(np.full(v.shape, 0.05, "float32"))
        lm.compile(
            optimizer=keras.optimizers.SGD(0.5),
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        )
        history = lm.fit(x, y, sample_weight=w, batch_size=8, epochs=2,
                         shuffle=False, verbose=0)
        weights = {v.path: keras.ops.convert_to_numpy(v) for v in lm.weights}
        return lm, history.history["loss"], weights

    _, ref_loss, ref_weights = run()
    devices = keras.distribution.list_devices()
    mesh = keras.distribution.DeviceMesh((2, 4), ["batch", "model"], devices)
    layout_map = T5Gemma2Backbone.get_layout_map(mesh)
    with keras.distribution.ModelParallel(
        layout_map=layout_map, batch_dim_name="batch"
    ).scope():
        lm, loss, weights = run()
    matrices = [v for v in lm.weights if len(v.shape) >= 2]
    query = "decoder_layer_1/merged_attention/query/kernel"
    value = next(v for v in matrices if v.path == query).value
    print("REPORT " + json.dumps({
        "devices": len(devices),
        "ref_loss": ref_loss,
        "loss": loss,
        "max_weight_diff": max(
            float(np.abs(weights[p] - ref_weights[p]).max())
            for p in ref_weights),
        "matrices": len(matrices),
        "unmapped": [v.path for v in matrices if layout_map[v.path] is None],
        "sharded": sum(
            not v.value.sharding.is_fully_replicated for v in matrices),
        "query_spec": [str(a) for a in value.sharding.spec],
    }))
    """
)


@pytest.mark.skipif(
    keras.backend.backend() != "jax", reason="The simulated CPU mesh needs jax."
)
def test_lora_fit_on_8_device_mesh_matches_single_device():
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT, json.dumps(CONFIG)],
        capture_output=True,
        text=True,
        env=dict(os.environ, KERAS_BACKEND="jax"),
        timeout=300,
    )
    lines = [l for l in result.stdout.splitlines() if l.startswith("REPORT ")]
    assert lines, result.stderr[-3000:]
    report = json.loads(lines[-1][len("REPORT "):])
    assert report["devices"] == 8
    assert report["ref_loss"][1] < report["ref_loss"][0]  # A real step.
    np.testing.assert_allclose(report["loss"], report["ref_loss"], atol=1e-5)
    assert report["max_weight_diff"] <= 1e-5, report
    assert report["unmapped"] == []
    # 1 table + 4 attentions (2 encoder, 2 merged decoder) x 4 + 4 MLPs x 3
    # kernels, each with LoRA A and B.
    assert report["matrices"] == 1 + 3 * (4 * 4 + 4 * 3)
    # Sharded: the table, the 28 kernels and their 28 LoRA A factors; the
    # small LoRA B factors are replicated (layout_map.LAYOUT_RULES).
    assert report["sharded"] == 1 + 28 + 28
    assert report["query_spec"] == ["batch", "model", "None"]


def test_int8_base_with_lora_fits_and_generates():
    keras.utils.set_random_seed(0)
    lm = T5Gemma2Seq2SeqLM(T5Gemma2Backbone(**CONFIG))
    x = random_batch(4, 10, 8, 60, padded=True, seed=1)
    y = np.roll(x["decoder_token_ids"], -1, axis=1)
    w = x["decoder_padding_mask"]
    float_logits = keras.ops.convert_to_numpy(lm(x))
    lm.quantize("int8", filters=r"(query|key|value|attention_output|ffw_)")
    kernels = [v for v in lm.weights if v.path.endswith("/kernel")]
    assert len(kernels) == 4 * 4 + 4 * 3
    assert {str(v.dtype) for v in kernels} == {"int8"}
    quant_logits = keras.ops.convert_to_numpy(lm(x))
    # int8 rounding (per output channel) of 28 kernels: a few percent of
    # the logit range (measured max-abs 0.069 on jax).
    error = np.abs(quant_logits - float_logits).max()
    assert error < 0.1 * np.abs(float_logits).max(), error
    lm.backbone.enable_lora(4, target="attention+mlp")
    assert {str(v.dtype) for v in lm.trainable_weights} == {"float32"}
    lm.compile(
        optimizer=keras.optimizers.Adam(2e-2),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        sampler="greedy",
    )
    losses = lm.fit(x, y, sample_weight=w, batch_size=4, epochs=5,
                    verbose=0).history["loss"]
    assert losses[-1] < 0.95 * losses[0], losses
    assert {str(v.dtype) for v in kernels} == {"int8"}  # Base untouched.
    # Cached greedy generate on the tuned int8 model equals the uncached
    # argmax of full forward passes.
    prompt = np.zeros((2, 5), "int32")
    prompt[:, 0] = 2
    inputs = {
        "encoder_token_ids": x["encoder_token_ids"][:2],
        "encoder_padding_mask": x["encoder_padding_mask"][:2],
        "decoder_token_ids": prompt,
        "decoder_padding_mask": (prompt > 0).astype("int32"),
    }
    out = keras.ops.convert_to_numpy(
        lm.generate(inputs, stop_token_ids=None)["decoder_token_ids"]
    )
    tokens = prompt.copy()
    for step in range(1, 5):
        logits = keras.ops.convert_to_numpy(lm(dict(
            inputs, decoder_token_ids=tokens[:, :step],
            decoder_padding_mask=np.ones((2, step), "int32"))))
        tokens[:, step] = logits[:, -1].argmax(-1)
    np.testing.assert_array_equal(out, tokens)
