import os

import keras
import pytest

from keras_encdec import errors
from keras_encdec.adapt import AdaptationError
from keras_encdec.convert.preset_loader import PresetDownloadError
from keras_encdec.convert.safetensors_io import CheckpointError
from keras_encdec.convert.weight_mapping import WeightMismatchError
from keras_encdec.models import T5GemmaTokenizer

pytestmark = pytest.mark.skipif(
    keras.backend.backend() != "jax", reason="backend-independent"
)


def test_old_names_are_the_shared_classes():
    assert CheckpointError is errors.CheckpointError
    assert WeightMismatchError is errors.WeightMismatchError
    assert AdaptationError is errors.AdaptationError
    assert PresetDownloadError is errors.PresetDownloadError
    for cls in (CheckpointError, WeightMismatchError, AdaptationError):
        assert issubclass(cls, errors.KerasEncDecError)
        assert issubclass(cls, ValueError)
    assert issubclass(PresetDownloadError, OSError)


def test_insufficient_space_is_an_enospc_oserror():
    e = errors.InsufficientSpaceError("need 5 bytes")
    assert isinstance(e, OSError) and e.errno == 28
    assert str(e) == "need 5 bytes"


def test_missing_tokenizer_raises_the_shared_error(tmp_path):
    from keras_encdec.testing import tiny_seq2seq_lm

    folder = str(tmp_path / "export")
    tiny_seq2seq_lm().export_to_transformers(folder)
    assert not os.path.exists(os.path.join(folder, "tokenizer.model"))
    with pytest.raises(errors.MissingTokenizerError, match="No tokenizer"):
        T5GemmaTokenizer.from_preset(folder)
