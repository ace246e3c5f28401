"""A Gemma GGUF vocabulary rebuilt as a SentencePiece model.

A GGUF file carries no `tokenizer.model`: llama.cpp's converter stores the
SentencePiece pieces, scores and types as metadata, and changes two things
on the way. `sentencepiece_proto_from_gguf` undoes both and returns a
BPE model (byte fallback, identity normaliser, no dummy prefix) that
`keras_hub.models.Gemma3Tokenizer`, our `T5GemmaTokenizer` and the
`sentencepiece` library accept:

1. Every special piece is stored as CONTROL. Only pad, eos and bos stay
   CONTROL and the unknown piece becomes UNKNOWN; the other "control" pieces
   (`<mask>`, `<unusedN>`, `<start_of_turn>`, ...) become USER_DEFINED with
   score 0, which SentencePiece matches whole in the text, as Gemma's own
   model does.
2. The whitespace-run pieces (two or more spaces) are stored with real
   spaces; SentencePiece spells them with U+2581, as the normaliser maps
   spaces.

Known differences from transformers' GGUF tokenizer (pinned by
`tests/real_gemma3_test.py`): runs of more than 31 spaces, and literal
control text such as "<bos>" (transformers matches it as the special token).
"""

from sentencepiece import sentencepiece_model_pb2

from keras_encdec.adapt.source_types import AdaptationError

SPACE_PIECE = "\u2581"
Piece = sentencepiece_model_pb2.ModelProto.SentencePiece
# GGUF token types (llama.cpp `llama_token_type`) -> SentencePiece types.
GGUF_NORMAL, GGUF_UNKNOWN, GGUF_CONTROL = 1, 2, 3
GGUF_USER_DEFINED, GGUF_UNUSED, GGUF_BYTE = 4, 5, 6
PIECE_TYPES = {
    GGUF_NORMAL: Piece.NORMAL,
    GGUF_UNKNOWN: Piece.UNKNOWN,
    GGUF_CONTROL: Piece.USER_DEFINED,  # Repair 1 (pad/eos/bos/unk apart).
    GGUF_USER_DEFINED: Piece.USER_DEFINED,
    GGUF_UNUSED: Piece.UNUSED,
    GGUF_BYTE: Piece.BYTE,
}
SPECIAL_IDS = ("padding", "eos", "bos", "unknown")


def field_value(reader, key, default=None):
    """One GGUF metadata value (a list for arrays), or `default`."""
    field = reader.fields.get(key)
    return default if field is None else field.contents()


def respell(piece):
    """Repair 2: a piece of two or more spaces, spelled with U+2581."""
    if len(piece) > 1 and set(piece) == {" "}:
        return SPACE_PIECE * len(piece)
    return piece


def _special_ids(reader, path):
    ids = {}
    for name in SPECIAL_IDS:
        value = field_value(reader, f"tokenizer.ggml.{name}_token_id")
        if value is None:
            raise AdaptationError(
                f"'{path}' has no 'tokenizer.ggml.{name}_token_id': a Gemma "
                "vocabulary defines pad, eos, bos and unknown tokens."
            )
        ids[name] = int(value)
    return ids


def sentencepiece_proto_from_gguf(reader, path="the GGUF file"):
    """Rebuilds a GGUF file's Gemma vocabulary as a SentencePiece model.

    Args:
        reader: `gguf.GGUFReader`. The open file.
        path: str. Names the file in error messages. Defaults to
            `"the GGUF file"`.

    Returns:
        bytes: the serialized `ModelProto`.

    Examples:

    >>> import tempfile, gguf, keras_hub
    >>> path = tempfile.mkdtemp() + "/vocab.gguf"
    >>> writer = gguf.GGUFWriter(path, "gemma3")
    >>> pieces = ["<pad>", "<eos>", "<bos>", "<unk>", "<start_of_turn>",
    ...           "  "] + [f"<0x{i:02X}>" for i in range(256)] + [
    ...           "\u2581", "h", "i", "\u2581h", "\u2581hi"]
    >>> writer.add_tokenizer_model("llama")
    >>> writer.add_token_list(pieces)
    >>> writer.add_token_scores([0.0] * 262 + [-1.0, -2.0, -3.0, -4.0, -5.0])
    >>> writer.add_token_types([3] * 5 + [4] + [6] * 256 + [1] * 5)
    >>> for name, i in (("pad", 0), ("eos", 1), ("bos", 2), ("unk", 3)):
    ...     getattr(writer, f"add_{name}_token_id")(i)
    >>> writer.write_header_to_file(); writer.write_kv_data_to_file()
    >>> writer.close()
    >>> proto = sentencepiece_proto_from_gguf(gguf.GGUFReader(path))
    >>> tokenizer = keras_hub.models.Gemma3Tokenizer(
    ...     proto=proto, has_vision_tokens=False)
    >>> [int(i) for i in tokenizer("<start_of_turn> hi")]
    [4, 266]
    """
    kind = field_value(reader, "tokenizer.ggml.model")
    if kind != "llama":
        raise AdaptationError(
            f"'{path}' holds a {kind!r} tokenizer; a Gemma GGUF holds a "
            "SentencePiece ('llama') vocabulary."
        )
    pieces = field_value(reader, "tokenizer.ggml.tokens")
    scores = field_value(reader, "tokenizer.ggml.scores")
    types = field_value(reader, "tokenizer.ggml.token_type")
    if pieces is None or scores is None or types is None:
        raise AdaptationError(
            f"'{path}' lacks tokenizer.ggml.tokens, .scores or .token_type."
        )
    if not len(pieces) == len(scores) == len(types):
        raise AdaptationError(
            f"'{path}' has {len(pieces)} tokens, {len(scores)} scores and "
            f"{len(types)} token types; expected one of each per token."
        )
    ids = _special_ids(reader, path)
    proto = sentencepiece_model_pb2.ModelProto()
    for index, (piece, score, kind) in enumerate(zip(pieces, scores, types)):
        if kind not in PIECE_TYPES:
            raise AdaptationError(
                f"'{path}': token {index} ({piece!r}) has GGUF type {kind}; "
                f"expected one of {sorted(PIECE_TYPES)}."
            )
        entry = proto.pieces.add()
        entry.piece = respell(piece)
        entry.type = PIECE_TYPES[kind]
        entry.score = 0.0 if kind == GGUF_CONTROL else score
    for name in ("padding", "eos", "bos"):
        proto.pieces[ids[name]].type = Piece.CONTROL
        proto.pieces[ids[name]].score = 0.0
    proto.pieces[ids["unknown"]].type = Piece.UNKNOWN
    proto.pieces[ids["unknown"]].score = 0.0
    trainer = proto.trainer_spec
    trainer.model_type = sentencepiece_model_pb2.TrainerSpec.BPE
    trainer.vocab_size = len(pieces)
    trainer.byte_fallback = True
    trainer.allow_whitespace_only_pieces = True
    trainer.pad_id, trainer.eos_id = ids["padding"], ids["eos"]
    trainer.bos_id, trainer.unk_id = ids["bos"], ids["unknown"]
    trainer.pad_piece, trainer.eos_piece = pieces[ids["padding"]], pieces[
        ids["eos"]]
    trainer.bos_piece, trainer.unk_piece = pieces[ids["bos"]], pieces[
        ids["unknown"]]
    normalizer = proto.normalizer_spec
    normalizer.name = "identity"
    normalizer.add_dummy_prefix = bool(
        field_value(reader, "tokenizer.ggml.add_space_prefix", False)
    )
    normalizer.remove_extra_whitespaces = False
    normalizer.escape_whitespaces = True
    return proto.SerializeToString()
