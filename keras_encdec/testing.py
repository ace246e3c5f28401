"""Test fixtures: tiny random models (ours, transformers', keras-hub
teachers) and tokenizers trained on the spot; nothing is downloaded. Some
need the test extra (`transformers`, `torch`)."""

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


def compiled(fn, input_signature=None):
    """`fn` as compiled code runs it: `jax.jit` on jax, an XLA-compiled
    `tf.function` on TensorFlow (`input_signature` may leave axes
    unknown), `fn` itself on torch (eager)."""
    import keras

    backend = keras.backend.backend()
    if backend == "jax":
        import jax

        return jax.jit(fn)
    if backend == "tensorflow":
        import tensorflow as tf

        return tf.function(fn, jit_compile=True,
                           input_signature=input_signature)
    return fn


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
        model_writer=buffer, vocab_size=vocab_size, model_type=model_type,
        pad_id=0, eos_id=1, bos_id=2, unk_id=3, pad_piece="<pad>",
        eos_piece="<eos>", bos_piece="<bos>", unk_piece="<unk>",
        hard_vocab_limit=False, minloglevel=2, **options,
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


def tiny_backbone_kwargs(**overrides):
    """`T5GemmaBackbone` kwargs of a tiny model (vocab 64, width 16, 2+2
    blocks, window 4)."""
    kwargs = dict(vocabulary_size=64)
    for side in ("encoder", "decoder"):
        kwargs.update(
            {
                f"{side}_hidden_dim": 16,
                f"{side}_intermediate_dim": 32,
                f"{side}_num_layers": 2,
                f"{side}_num_heads": 2,
                f"{side}_num_kv_heads": 1,
                f"{side}_head_dim": 8,
                f"{side}_sliding_window": 4,
            }
        )
    kwargs.update(overrides)
    return kwargs


def tiny_seq2seq_lm(preprocessor=None, **overrides):
    """A tiny random `T5GemmaSeq2SeqLM` (see `tiny_backbone_kwargs`)."""
    from keras_encdec.models import T5GemmaBackbone
    from keras_encdec.models import T5GemmaSeq2SeqLM

    backbone = T5GemmaBackbone(**tiny_backbone_kwargs(**overrides))
    return T5GemmaSeq2SeqLM(backbone=backbone, preprocessor=preprocessor)


def make_transformers_t5gemma_classifier(
    task="sequence", encoder_only=True, num_labels=3, seed=0, scale=0.3,
    **kwargs
):
    """A random `T5GemmaFor{Sequence,Token}Classification` (eager).

    `task` is `"sequence"` or `"token"`; `encoder_only` sets
    `is_encoder_decoder=False`. `kwargs` (`encoder`, `decoder`,
    `tie_word_embeddings`) go to `make_transformers_t5gemma`'s config. Every
    weight, head included, is normal with std `scale`.
    """
    import torch
    from transformers import T5GemmaForSequenceClassification
    from transformers import T5GemmaForTokenClassification

    config = make_transformers_t5gemma(seed=seed, **kwargs).config
    config.num_labels = num_labels
    model_cls = {
        "sequence": T5GemmaForSequenceClassification,
        "token": T5GemmaForTokenClassification,
    }[task]
    model = model_cls(config, is_encoder_decoder=not encoder_only).eval()
    generator = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.copy_(
                torch.randn(parameter.shape, generator=generator) * scale
            )
    return model


def transformers_classifier_logits(model, token_ids, padding_mask):
    """Logits of a transformers T5Gemma classifier (float32 numpy)."""
    import torch

    with torch.no_grad():
        out = model(
            input_ids=torch.tensor(token_ids, dtype=torch.long),
            attention_mask=torch.tensor(padding_mask),
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


def make_transformers_t5gemma2_classifier(
    task, num_labels=3, seed=0, scale=0.3, **kwargs
):
    """A random `T5Gemma2For{Sequence,Token}Classification` (eager).

    `task` is `"sequence"` or `"token"`; `kwargs` go to
    `make_transformers_t5gemma2` for the config (tiny vision tower
    included). Every weight is re-drawn as there; the head is normal with
    std `scale`.
    """
    import torch
    from transformers import T5Gemma2ForSequenceClassification
    from transformers import T5Gemma2ForTokenClassification

    lm = make_transformers_t5gemma2(seed=seed, scale=scale, **kwargs)
    config = lm.config
    config.num_labels = num_labels
    model_cls = {
        "sequence": T5Gemma2ForSequenceClassification,
        "token": T5Gemma2ForTokenClassification,
    }[task]
    model = model_cls(config).eval()
    model.model.load_state_dict(lm.model.state_dict())
    generator = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for parameter in model.score.parameters():
            parameter.copy_(
                torch.randn(parameter.shape, generator=generator) * scale
            )
    return model


def seq2seq_inputs(ids, mask, encoder_length=7):
    """A backbone input dict whose encoder reads the first `encoder_length`
    tokens of `ids` and whose decoder reads all of them (adaptation tests:
    the same text on both sides)."""
    return {
        "encoder_token_ids": ids[:, :encoder_length],
        "encoder_padding_mask": mask[:, :encoder_length],
        "decoder_token_ids": ids,
        "decoder_padding_mask": mask,
    }


def greedy_inputs(source, new_tokens, start_token_id=2,
                  encoder_padding_mask=None):
    """`generate` inputs decoding `new_tokens` tokens after a start token:
    the encoder reads `source [batch, length]` (all of it, or where
    `encoder_padding_mask` is 1), the decoder prompt is the start token
    alone (zeros after it, masked)."""
    prompt = np.zeros((source.shape[0], new_tokens + 1), "int32")
    prompt[:, 0] = start_token_id
    mask = np.zeros_like(prompt)
    mask[:, 0] = 1
    if encoder_padding_mask is None:
        encoder_padding_mask = np.ones_like(source)
    return {
        "encoder_token_ids": source,
        "encoder_padding_mask": encoder_padding_mask,
        "decoder_token_ids": prompt,
        "decoder_padding_mask": mask,
    }


# Unbalanced widths, GQA 4:1 in the decoder, windows of 3 (shorter than the
# test sequences) and the default soft-caps: the generation tests' model.
UNBALANCED_GQA_CONFIG = dict(
    vocabulary_size=64, encoder_hidden_dim=32, encoder_intermediate_dim=48,
    encoder_num_layers=2, encoder_num_heads=4, encoder_num_kv_heads=2,
    encoder_head_dim=8, decoder_hidden_dim=24, decoder_intermediate_dim=40,
    decoder_num_layers=2, decoder_num_heads=4, decoder_num_kv_heads=1,
    decoder_head_dim=6, encoder_sliding_window=3, decoder_sliding_window=3,
    initializer_range=0.3,
)


def tiny_t5gemma2_kwargs(**overrides):
    """`T5Gemma2Backbone` arguments of the T5Gemma 2 tests: width 16, GQA 2:1
    (encoder) and 4:2 (decoder, 3 blocks), windows 3 and 2 (shorter than
    the test sequences), RoPE scaling 2, a final soft-cap, EOI 61, image
    token 62, 4 tokens per image; `overrides` replace any of them."""
    config = dict(
        vocabulary_size=64, hidden_dim=16, encoder_intermediate_dim=32,
        encoder_num_layers=2, encoder_num_heads=2, encoder_num_kv_heads=1,
        encoder_head_dim=8, decoder_intermediate_dim=24, decoder_num_layers=3,
        decoder_num_heads=4, decoder_num_kv_heads=2, decoder_head_dim=4,
        encoder_sliding_window=3, decoder_sliding_window=2,
        eoi_token_index=61, image_token_index=62, rope_scaling_factor=2.0,
        final_logit_soft_cap=5.0, mm_tokens_per_image=4,
    )
    return {**config, **overrides}


def tiny_gemma3_teacher(vocabulary_size=64, dtype=None, **overrides):
    """A tiny random keras-hub `Gemma3CausalLM`, no preprocessor (vocab 64,
    width 32, 2 layers, GQA 2:1): a teacher for `adapt_decoder_only`."""
    import keras_hub

    config = dict(
        vocabulary_size=vocabulary_size, image_size=None, num_layers=2,
        num_query_heads=2, num_key_value_heads=1, hidden_dim=32,
        intermediate_dim=64, head_dim=16, sliding_window_size=16,
        vision_encoder=None, use_post_attention_norm=True,
        use_post_ffw_norm=True, use_query_key_norm=True)
    backbone = keras_hub.models.Gemma3Backbone(**{**config, **overrides},
                                               dtype=dtype)
    return keras_hub.models.Gemma3CausalLM(backbone=backbone, preprocessor=None)


def tiny_gemma2_teacher(vocabulary_size=64, dtype=None, **overrides):
    """A tiny random keras-hub Gemma 2 `GemmaCausalLM`, no preprocessor
    (vocab 64, width 32, 2 layers, window 8, soft-caps 50 / 30)."""
    import keras_hub

    config = dict(
        vocabulary_size=vocabulary_size, num_layers=2, num_query_heads=2,
        num_key_value_heads=1, hidden_dim=32, intermediate_dim=64,
        head_dim=16, query_head_dim_normalize=True,
        use_post_ffw_norm=True, use_post_attention_norm=True,
        final_logit_soft_cap=30.0, attention_logit_soft_cap=50.0,
        use_sliding_window_attention=True, sliding_window_size=8)
    backbone = keras_hub.models.GemmaBackbone(**{**config, **overrides},
                                              dtype=dtype)
    return keras_hub.models.GemmaCausalLM(backbone=backbone, preprocessor=None)
