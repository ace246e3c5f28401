"""Shared fixtures: tiny random Gemma 2 sources (keras-hub and transformers).

Every weight, norms included, is drawn from a normal with std `SCALE`, and
soft-caps are small, so that every sublayer and both caps visibly matter.
Sliding windows (`WINDOW`) are shorter than the test sequences
(`LENGTH`).
"""

import numpy as np
import pytest

from keras_encdec.testing import train_sentencepiece

WINDOW = 3
LENGTH = 10
SCALE = 0.3
ATTENTION_CAP = 5.0
FINAL_CAP = 3.0


def randomize(variables, seed):
    rng = np.random.default_rng(seed)
    for variable in variables:
        value = rng.normal(size=variable.shape) * SCALE
        variable.assign(value.astype("float32"))


def keras_hub_gemma2(proto, hidden_dim=16, num_heads=4, seed=0, **overrides):
    """A tiny random keras-hub `GemmaCausalLM` with Gemma 2 settings."""
    import keras_hub

    tokenizer = keras_hub.models.GemmaTokenizer(proto=proto)
    config = dict(
        vocabulary_size=tokenizer.vocabulary_size(),
        num_layers=2,
        num_query_heads=num_heads,
        num_key_value_heads=2,
        hidden_dim=hidden_dim,
        intermediate_dim=4 * hidden_dim,
        head_dim=8,
        use_post_ffw_norm=True,
        use_post_attention_norm=True,
        attention_logit_soft_cap=ATTENTION_CAP,
        final_logit_soft_cap=FINAL_CAP,
        use_sliding_window_attention=True,
        sliding_window_size=WINDOW,
    )
    config.update(overrides)
    backbone = keras_hub.models.GemmaBackbone(**config)
    randomize(backbone.weights, seed)
    preprocessor = keras_hub.models.GemmaCausalLMPreprocessor(tokenizer)
    return keras_hub.models.GemmaCausalLM(backbone, preprocessor)


def token_batch(vocabulary_size, batch=2, length=LENGTH, seed=0):
    rng = np.random.default_rng(seed)
    ids = rng.integers(3, vocabulary_size, size=(batch, length))
    return ids.astype("int32"), np.ones((batch, length), "int32")


@pytest.fixture(scope="session")
def proto():
    return train_sentencepiece(vocab_size=64)


@pytest.fixture(scope="session")
def gemma2_lm(proto):
    return keras_hub_gemma2(proto)


@pytest.fixture(scope="session")
def hf_gemma2_folder(proto, tmp_path_factory):
    """A tiny random transformers `Gemma2ForCausalLM` folder (eager)."""
    import torch
    from transformers import Gemma2Config
    from transformers import Gemma2ForCausalLM

    from keras_hub.models import GemmaTokenizer

    config = Gemma2Config(
        vocab_size=GemmaTokenizer(proto=proto).vocabulary_size(),
        hidden_size=16,
        intermediate_size=40,
        num_hidden_layers=3,
        num_attention_heads=4,
        num_key_value_heads=1,
        head_dim=8,
        sliding_window=WINDOW,
        query_pre_attn_scalar=12,
        attn_logit_softcapping=ATTENTION_CAP,
        final_logit_softcapping=FINAL_CAP,
        rope_parameters={"rope_type": "default", "rope_theta": 500.0},
        attn_implementation="eager",
    )
    torch.manual_seed(0)
    model = Gemma2ForCausalLM(config).eval()
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.copy_(
                torch.randn(parameter.shape, generator=generator) * SCALE
            )
    folder = tmp_path_factory.mktemp("gemma2_hf")
    model.save_pretrained(folder)
    (folder / "tokenizer.model").write_bytes(proto)
    return folder, model


ADAPT_SEED = 7


@pytest.fixture(scope="session")
def hf_adapted(hf_gemma2_folder):
    """The transformers source adapted with `"zeros"` under a fixed seed
    (the CLI test rebuilds it under the same seed)."""
    import keras

    from keras_encdec.adapt import adapt_decoder_only

    keras.utils.set_random_seed(ADAPT_SEED)
    return adapt_decoder_only(
        str(hf_gemma2_folder[0]), cross_attention_init="zeros"
    )


# --- Gemma 3 -------------------------------------------------------------
# Gemma 3 needs widths that Q8_0 blocks (32 values) divide, 6 layers for one
# full-attention layer after 5 sliding ones, and a Gemma-like vocabulary:
# byte fallback, turn markers, whitespace-run pieces.
GEMMA3_WIDTH = 32
GEMMA3_TEXT = [
    "the quick brown fox jumps over the lazy dog",
    "def f(x):\n    return x  # done",
    "actions speak louder than words",
]
GEMMA3_PIECES = ["<mask>", "<start_of_turn>", "<end_of_turn>",
                 "\u2581\u2581", "\u2581\u2581\u2581"]


@pytest.fixture(scope="session")
def gemma3_proto():
    """A Gemma-like SentencePiece model: BPE, identity normaliser, byte
    fallback, user-defined `<mask>`, turn and whitespace pieces."""
    return train_sentencepiece(
        vocab_size=330, text=GEMMA3_TEXT, byte_fallback=True,
        user_defined_symbols=GEMMA3_PIECES,
        normalization_rule_name="identity", add_dummy_prefix=False,
        remove_extra_whitespaces=False, allow_whitespace_only_pieces=True,
    )


@pytest.fixture(scope="session")
def hf_gemma3_folder(gemma3_proto, tmp_path_factory):
    """A tiny random transformers `Gemma3ForCausalLM` folder (eager)."""
    import sentencepiece
    import torch
    from transformers import Gemma3ForCausalLM
    from transformers import Gemma3TextConfig

    vocab = sentencepiece.SentencePieceProcessor(
        model_proto=gemma3_proto).vocab_size()
    config = Gemma3TextConfig(
        vocab_size=vocab, hidden_size=GEMMA3_WIDTH, intermediate_size=64,
        num_hidden_layers=6, num_attention_heads=4, num_key_value_heads=2,
        head_dim=8, sliding_window=WINDOW, query_pre_attn_scalar=8,
        attn_implementation="eager",
    )
    torch.manual_seed(0)
    model = Gemma3ForCausalLM(config).eval()
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.copy_(
                torch.randn(parameter.shape, generator=generator) * SCALE
            )
    folder = tmp_path_factory.mktemp("gemma3_hf")
    model.save_pretrained(folder)
    (folder / "tokenizer.model").write_bytes(gemma3_proto)
    return folder, model


@pytest.fixture(scope="session")
def gemma3_lm(hf_gemma3_folder):
    """The tiny transformers Gemma 3 as a keras-hub `Gemma3CausalLM`."""
    from keras_encdec.adapt.keras_hub_gemma3 import to_keras_hub_gemma3

    return to_keras_hub_gemma3(str(hf_gemma3_folder[0]))


def write_gemma3_gguf(path, model, proto, quantization=None):
    """Writes a transformers `Gemma3ForCausalLM` as llama.cpp's converter
    does: `1 + w` norms, `[out, in]` tensors, Gemma 3 metadata, and the
    vocabulary with every special piece (`<...>`) CONTROL, score -1000, and
    whitespace runs spelled with spaces. `quantization`: a `gguf.GGMLQuantizationType` for the
    matrices (norms stay F32), or None for F32."""
    import gguf
    from sentencepiece import sentencepiece_model_pb2

    config = model.config
    writer = gguf.GGUFWriter(str(path), "gemma3")
    writer.add_block_count(config.num_hidden_layers)
    writer.add_context_length(config.max_position_embeddings)
    writer.add_embedding_length(config.hidden_size)
    writer.add_feed_forward_length(config.intermediate_size)
    writer.add_head_count(config.num_attention_heads)
    writer.add_head_count_kv(config.num_key_value_heads)
    writer.add_key_length(config.head_dim)
    writer.add_value_length(config.head_dim)
    writer.add_layer_norm_rms_eps(config.rms_norm_eps)
    writer.add_rope_freq_base(
        config.rope_parameters["full_attention"]["rope_theta"])
    writer.add_sliding_window(config.sliding_window)
    spec = sentencepiece_model_pb2.ModelProto.FromString(proto)
    control = [p.type in (2, 3) or (p.type == 4 and p.piece[0] == "<")
               for p in spec.pieces]  # UNKNOWN, CONTROL, "<...>" pieces.
    writer.add_tokenizer_model("llama")
    writer.add_token_list([
        p.piece.replace("\u2581", " ") if set(p.piece) == {"\u2581"}
        and len(p.piece) > 1 else p.piece for p in spec.pieces])
    writer.add_token_scores([
        -1000.0 if c else p.score for p, c in zip(spec.pieces, control)])
    writer.add_token_types(
        [3 if c else p.type for p, c in zip(spec.pieces, control)])
    for name, index in (("pad", 0), ("eos", 1), ("bos", 2), ("unk", 3)):
        getattr(writer, f"add_{name}_token_id")(index)
    writer.add_add_space_prefix(False)
    names = {"model.embed_tokens": "token_embd", "model.norm": "output_norm"}
    layer_names = {
        "self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k",
        "self_attn.v_proj": "attn_v", "self_attn.o_proj": "attn_output",
        "self_attn.q_norm": "attn_q_norm", "self_attn.k_norm": "attn_k_norm",
        "input_layernorm": "attn_norm",
        "post_attention_layernorm": "post_attention_norm",
        "pre_feedforward_layernorm": "ffn_norm",
        "post_feedforward_layernorm": "post_ffw_norm",
        "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up",
        "mlp.down_proj": "ffn_down",
    }
    for i in range(config.num_hidden_layers):
        for theirs, ours in layer_names.items():
            names[f"model.layers.{i}.{theirs}"] = f"blk.{i}.{ours}"
    for name, tensor in model.state_dict().items():
        if name == "lm_head.weight":
            continue
        value = tensor.numpy().astype("float32")
        base = names[name.removesuffix(".weight")]
        if base.endswith("norm"):
            writer.add_tensor(f"{base}.weight", value + 1.0)
        elif quantization is None:
            writer.add_tensor(f"{base}.weight", value)
        else:
            writer.add_tensor(
                f"{base}.weight", gguf.quants.quantize(value, quantization),
                raw_dtype=quantization,
            )
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


@pytest.fixture(scope="session")
def gemma3_gguf_file(hf_gemma3_folder, gemma3_proto, tmp_path_factory):
    """The tiny Gemma 3 as an F32 GGUF file, written like llama.cpp."""
    folder = tmp_path_factory.mktemp("gemma3_gguf")
    return str(write_gemma3_gguf(
        folder / "tiny.gguf", hf_gemma3_folder[1], gemma3_proto
    ))
