"""Layout map coverage, and sharded fit steps on a simulated 8-device mesh.

The mesh test runs in a subprocess: `XLA_FLAGS` must be set before jax
initializes, and the rest of the suite keeps its single device. The
subprocess prints one JSON line that the test asserts on.
"""

import json
import os
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest

from keras_encdec.models import T5GemmaBackbone

SCRIPT = textwrap.dedent(
    """
    import json, os
    os.environ["KERAS_BACKEND"] = "jax"
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "")
                           + " --xla_force_host_platform_device_count=8")
    import jax, keras, numpy as np
    from keras_encdec.models import T5GemmaBackbone, T5GemmaSeq2SeqLM
    from keras_encdec.testing import random_batch

    CONFIG = dict(vocabulary_size=64)
    for side in ("encoder", "decoder"):
        CONFIG.update({f"{side}_hidden_dim": 32,
                       f"{side}_intermediate_dim": 64,
                       f"{side}_num_layers": 2, f"{side}_num_heads": 4,
                       f"{side}_num_kv_heads": 4, f"{side}_head_dim": 8})
    x = random_batch(8, 12, 10, 64, padded=True, seed=3)
    y = np.roll(x["decoder_token_ids"], -1, axis=1)
    w = x["decoder_padding_mask"]

    def run():
        keras.utils.set_random_seed(0)
        lm = T5GemmaSeq2SeqLM(T5GemmaBackbone(**CONFIG))
        # SGD: Adam's g / sqrt(v) would amplify reduction-order noise.
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
    report = {"devices": len(devices), "ref_loss": ref_loss}
    mesh = keras.distribution.DeviceMesh((2, 4), ["batch", "model"], devices)
    layout_map = T5GemmaBackbone.get_layout_map(mesh)
    distributions = {
        "model_parallel": keras.distribution.ModelParallel(
            layout_map=layout_map, batch_dim_name="batch"),
        "data_parallel": keras.distribution.DataParallel(devices=devices),
    }
    for name, distribution in distributions.items():
        with distribution.scope():
            lm, loss, weights = run()
        query = lm.backbone.get_layer("decoder_layer_1").cross_attention
        value = query.query_dense.kernel.value
        report[name] = {
            "loss": loss,
            "max_weight_diff": max(
                float(np.abs(weights[p] - ref_weights[p]).max())
                for p in ref_weights),
            "query_spec": [str(a) for a in value.sharding.spec],
            "query_shard_shape": list(value.addressable_shards[0].data.shape),
            "query_devices": len({s.device for s in value.addressable_shards}),
            "sharded_weights": sum(
                not v.value.sharding.is_fully_replicated for v in lm.weights),
        }
    print("REPORT " + json.dumps(report))
    """
)


def _all_weights_backbone():
    config = dict(vocabulary_size=64)
    for side in ("encoder", "decoder"):
        config.update(
            {
                f"{side}_hidden_dim": 16,
                f"{side}_intermediate_dim": 32,
                f"{side}_num_layers": 2,
                f"{side}_num_heads": 2,
                f"{side}_num_kv_heads": 1,
                f"{side}_head_dim": 8,
            }
        )
    return T5GemmaBackbone(**config, tie_word_embeddings=False)


def test_layout_map_covers_every_matrix_including_lora():
    if keras.backend.backend() != "jax":
        pytest.skip("keras.distribution layouts are jax-only.")
    devices = keras.distribution.list_devices()[:1]
    mesh = keras.distribution.DeviceMesh((1, 1), ["batch", "model"], devices)
    layout_map = T5GemmaBackbone.get_layout_map(mesh)
    backbone = _all_weights_backbone()
    backbone.enable_lora(2, target="all")
    matrices = [v for v in backbone.weights if len(v.shape) >= 2]
    unmapped = [v.path for v in matrices if layout_map[v.path] is None]
    assert unmapped == []
    # Each layout has one axis per dimension.
    assert all(len(layout_map[v.path].axes) == len(v.shape) for v in matrices)
    # 2 embeddings + 6 attentions x 4 kernels + 4 MLPs x 3, each with LoRA A, B
    # (the reverse embedding is untied here: rank 2 as well).
    assert len(matrices) == 2 + 1 + 3 * (6 * 4 + 4 * 3)
    heads = layout_map["encoder_layer_0/self_attention/query/kernel"].axes
    assert heads == ("batch", "model", None)
    with pytest.raises(ValueError, match="not in the device mesh"):
        T5GemmaBackbone.get_layout_map(mesh, model_parallel_dim_name="tp")


def test_sharded_fit_matches_single_device():
    if keras.backend.backend() != "jax":
        pytest.skip("The simulated CPU mesh needs jax.")
    env = dict(os.environ, KERAS_BACKEND="jax")
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    lines = [l for l in result.stdout.splitlines() if l.startswith("REPORT ")]
    assert lines, result.stderr[-3000:]
    report = json.loads(lines[-1][len("REPORT "):])
    assert report["devices"] == 8
    for name in ("model_parallel", "data_parallel"):
        run = report[name]
        np.testing.assert_allclose(run["loss"], report["ref_loss"], atol=1e-5)
        assert run["max_weight_diff"] <= 1e-5, (name, run)
    parallel = report["model_parallel"]
    # Query kernel (d=32, heads=4, head_dim=8) on a (2 batch, 4 model) mesh.
    assert parallel["query_spec"] == ["batch", "model", "None"]
    assert parallel["query_shard_shape"] == [16, 1, 8]
    assert parallel["query_devices"] == 8
    # Embeddings (2, reverse tied) + 6 attentions x 4 + 4 MLPs x 3 kernels.
    assert parallel["sharded_weights"] == 2 + 6 * 4 + 4 * 3
    assert report["data_parallel"]["sharded_weights"] == 0
