"""Test fixtures: tiny random transformers T5Gemma models and tokenizers.

These need the test extra (`transformers`, `torch`). Nothing here downloads
anything: models are random and tokenizers are trained on the spot.
"""

import io

import numpy as np

TINY_TEXT = [
    "the quick brown fox jumps over the lazy dog",
    "a stitch in time saves nine",
    "all that glitters is not gold",
    "the early bird catches the worm",
    "actions speak louder than words",
    "translate english to french: the house is wonderful",
    "summarize: keras runs on jax torch and tensorflow",
]


def train_sentencepiece(
    vocab_size=64, text=TINY_TEXT, model_type="BPE", **options
):
    """Trains a tiny SentencePiece model with Gemma's special ids.

    Ids: `<pad>`=0, `<eos>`=1, `<bos>`=2, `<unk>`=3. `options` are further
    `SentencePieceTrainer.train` arguments. Returns the serialized model
    bytes.
    """
    import sentencepiece

    buffer = io.BytesIO()
    sentencepiece.SentencePieceTrainer.train(
        sentence_iterator=iter(list(text) * 20),
        model_writer=buffer,
        vocab_size=vocab_size,
        model_type=model_type,
        pad_id=0,
        eos_id=1,
        bos_id=2,
        unk_id=3,
        pad_piece="<pad>",
        eos_piece="<eos>",
        bos_piece="<bos>",
        unk_piece="<unk>",
        hard_vocab_limit=False,
        minloglevel=2,
        **options,
    )
    return buffer.getvalue()


def tiny_module_config(**overrides):
    """One side (encoder or decoder) of a tiny transformers T5Gemma config."""
    config = dict(
        vocab_size=64,
        hidden_size=32,
        intermediate_size=48,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=8,
        sliding_window=4096,
        layer_types=["sliding_attention", "full_attention"],
        attn_logit_softcapping=50.0,
        final_logit_softcapping=30.0,
        query_pre_attn_scalar=8,
        rms_norm_eps=1e-6,
        hidden_activation="gelu_pytorch_tanh",
    )
    config.update(overrides)
    return config


def make_transformers_t5gemma(
    encoder=None, decoder=None, tie_word_embeddings=True, seed=0, scale=0.3
):
    """Builds a random `T5GemmaForConditionalGeneration` (eager attention).

    Every weight, norms included, is drawn from a normal with std `scale`, so
    that each sublayer visibly affects the output.
    """
    import torch
    from transformers import T5GemmaConfig
    from transformers import T5GemmaForConditionalGeneration

    encoder = tiny_module_config(**(encoder or {}))
    decoder = tiny_module_config(**(decoder or {}))
    config = T5GemmaConfig(
        encoder=encoder,
        decoder=decoder,
        vocab_size=decoder["vocab_size"],
        tie_word_embeddings=tie_word_embeddings,
        attn_implementation="eager",
    )
    torch.manual_seed(seed)
    model = T5GemmaForConditionalGeneration(config).eval()
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.copy_(
                torch.randn(parameter.shape, generator=generator) * scale
            )
    return model


def random_batch(
    batch, encoder_length, decoder_length, vocab_size, padded=False, seed=0
):
    """Random token ids with right padding (pad id 0) when `padded`.

    Row `i` of a padded batch keeps `length - 2*i` tokens (at least 1).
    """
    rng = np.random.default_rng(seed)

    def side(length):
        ids = rng.integers(3, vocab_size, size=(batch, length)).astype("int32")
        mask = np.ones((batch, length), "int32")
        if padded:
            for row in range(batch):
                keep = max(1, length - 2 * row - 1)
                mask[row, keep:] = 0
        return ids * mask, mask

    encoder_ids, encoder_mask = side(encoder_length)
    decoder_ids, decoder_mask = side(decoder_length)
    return {
        "encoder_token_ids": encoder_ids,
        "encoder_padding_mask": encoder_mask,
        "decoder_token_ids": decoder_ids,
        "decoder_padding_mask": decoder_mask,
    }


def transformers_logits(model, batch):
    """Logits of a transformers T5Gemma on a keras-encdec input dict."""
    import torch

    with torch.no_grad():
        out = model(
            input_ids=torch.tensor(batch["encoder_token_ids"], dtype=torch.long),
            attention_mask=torch.tensor(batch["encoder_padding_mask"]),
            decoder_input_ids=torch.tensor(
                batch["decoder_token_ids"], dtype=torch.long
            ),
            decoder_attention_mask=torch.tensor(batch["decoder_padding_mask"]),
        )
    return out.logits.float().numpy()


def tiny_vision_config(**overrides):
    """A tiny SigLIP vision tower config (no head, as published)."""
    config = dict(
        model_type="siglip_vision_model",
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        image_size=28,
        patch_size=7,
        num_channels=3,
        vision_use_head=False,
    )
    config.update(overrides)
    return config


def make_transformers_t5gemma2(
    encoder=None,
    decoder=None,
    rope_scaling_factor=None,
    eoi_token_index=61,
    image_token_index=62,
    seed=0,
    scale=0.3,
    embedding_scale=0.05,
    norm_scale=1.0,
):
    """Builds a random `T5Gemma2ForConditionalGeneration` (eager attention).

    Text stacks start from `tiny_module_config` (no attention soft-cap:
    transformers ignores it), a tiny vision tower is included, and every
    weight is re-drawn from a normal: the token table with std
    `embedding_scale`, norm weights with `norm_scale`, everything else (the
    EOI embedding and vision included) with `scale`. With one tied table, a
    large embedding makes each token predict itself and greedy decoding
    repeats one token; the defaults give varied greedy continuations.
    """
    import torch
    from transformers import T5Gemma2Config
    from transformers import T5Gemma2ForConditionalGeneration

    rope = {
        "sliding_attention": {"rope_type": "default", "rope_theta": 10000.0},
        "full_attention": {"rope_type": "default", "rope_theta": 1000000.0},
    }
    if rope_scaling_factor is not None:
        rope["full_attention"].update(
            rope_type="linear", factor=float(rope_scaling_factor)
        )
    sides = []
    for overrides in (encoder, decoder):
        config = tiny_module_config(attn_logit_softcapping=None)
        config.update(rope_parameters=rope, **(overrides or {}))
        sides.append(config)
    config = T5Gemma2Config(
        encoder=dict(
            text_config=sides[0],
            vision_config=tiny_vision_config(),
            mm_tokens_per_image=4,
            boi_token_index=eoi_token_index - 1,
            eoi_token_index=eoi_token_index,
        ),
        decoder=sides[1],
        image_token_index=image_token_index,
        attn_implementation="eager",
    )
    torch.manual_seed(seed)
    model = T5Gemma2ForConditionalGeneration(config).eval()
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            std = scale
            if name.endswith("embed_tokens.weight"):
                std = embedding_scale
            elif "norm" in name:
                std = norm_scale
            parameter.copy_(torch.randn(parameter.shape, generator=generator) * std)
    return model
