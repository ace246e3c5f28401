"""`tools/probe_decode_floor.py`: the weights it streams are a decode step's.

The probe's floor only bounds our decoding if it multiplies what a decode
step of our models multiplies: every decoder kernel except T5Gemma's
cross-attention keys and values (computed once, before the loop), plus the
tied token table. This checks its shapes against the kernels of real
backbones of both families, and runs both of its timing loops on tiny
shapes. Backend-independent: runs on the jax backend only.
"""

import math

import keras
import pytest

from keras_encdec import models

pytestmark = pytest.mark.skipif(
    keras.backend.backend() != "jax", reason="a JAX/torch tool: one backend"
)

CONFIG = dict(hidden_dim=16, intermediate_dim=48, num_layers=3, num_heads=4,
              num_kv_heads=2, head_dim=8)
VOCAB = 96


@pytest.fixture(scope="module")
def tool(load_tool):
    return load_tool("probe_decode_floor")


def _backbone(family):
    stacks = {f"{side}_{name}": value for side in ("encoder", "decoder")
              for name, value in CONFIG.items()}
    if family == "t5gemma2":
        stacks = {k.replace("encoder_hidden_dim", "hidden_dim"): v
                  for k, v in stacks.items() if k != "decoder_hidden_dim"}
        return models.T5Gemma2Backbone(vocabulary_size=VOCAB, **stacks)
    return models.T5GemmaBackbone(vocabulary_size=VOCAB, **stacks)


def _step_kernel_shapes(backbone):
    """The decoder kernels a decode step multiplies, as `(in, out)` matrix
    shapes, sorted."""
    shapes = []
    for weight in backbone.weights:
        path, shape = weight.path, tuple(weight.shape)
        if not (path.startswith("decoder_layer_") and path.endswith("kernel")):
            continue
        if "cross_attention/key" in path or "cross_attention/value" in path:
            continue
        if "attention_output" in path:  # [heads, head_dim, width]
            shapes.append((math.prod(shape[:-1]), shape[-1]))
        else:  # [width, (heads, head_dim) or ffn] or [ffn, width]
            shapes.append((shape[0], math.prod(shape[1:])))
    return sorted(shapes)


@pytest.mark.parametrize("family", ["t5gemma", "t5gemma2"])
def test_shapes_are_a_decode_steps_kernels(tool, family):
    layers, head = tool.decode_weight_shapes(
        family, CONFIG["hidden_dim"], CONFIG["intermediate_dim"],
        CONFIG["num_heads"], CONFIG["num_kv_heads"], CONFIG["head_dim"],
        CONFIG["num_layers"], VOCAB)
    backbone = _backbone(family)
    kernels = _step_kernel_shapes(backbone)
    assert sorted(s for layer in layers for s in layer.values()) == kernels
    table = backbone.decoder_token_embedding.embeddings
    assert head == tuple(table.shape)
    size = sum(a * b for a, b in kernels) + math.prod(table.shape)
    assert tool._mib(layers, head, 4) == size * 4 / 2**20


@pytest.mark.parametrize("family", ["t5gemma", "t5gemma2"])
def test_both_loops_run_on_tiny_shapes(tool, family):
    layers, head = tool.decode_weight_shapes(family, 16, 32, 2, 1, 8, 2, 64)
    for dtype in ("float32", "bfloat16"):
        assert tool.jax_floor(layers, head, batch=2, steps=2, repeats=1,
                              dtype=dtype) > 0
    assert tool.torch_floor(layers, head, batch=2, steps=2, repeats=1,
                            threads=1) > 0


def test_rejects_a_zero_size(tool, capsys):
    with pytest.raises(SystemExit):
        tool.main(["--layers", "0"])
    assert "--layers must be >= 1; received 0." in capsys.readouterr().err
