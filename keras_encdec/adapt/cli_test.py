"""The `adapt` command: a preset folder that loads back bit-identically."""

from keras import ops

import keras
import pytest

from keras_encdec import __main__ as cli_main
from keras_encdec.adapt.conftest import ADAPT_SEED
from keras_encdec.adapt.adapt_test import seq2seq_inputs
from keras_encdec.adapt.conftest import token_batch
from keras_encdec.adapt.verify import max_abs_difference
from keras_encdec.models import T5GemmaSeq2SeqLM


@pytest.fixture(autouse=True)
def only_adapt_command(monkeypatch):
    """Isolates the test from the other sub-commands' modules."""
    monkeypatch.setattr(
        cli_main, "COMMANDS", {"adapt": "keras_encdec.adapt.cli"}
    )


def main(argv):
    return cli_main.main(argv)


def test_cli_writes_a_loadable_preset(
    hf_gemma2_folder, hf_adapted, tmp_path, capsys
):
    folder, _ = hf_gemma2_folder
    output = tmp_path / "adapted"
    keras.utils.set_random_seed(ADAPT_SEED)  # The seed of `hf_adapted`.
    code = main([
        "adapt", "--encoder", str(folder), "--cross-attention-init", "zeros",
        "--output", str(output),
    ])
    assert code == 0
    report = capsys.readouterr().out
    assert "parameters" in report and "of weights in float32" in report

    loaded = T5GemmaSeq2SeqLM.from_preset(str(output))
    in_memory = hf_adapted
    for a, b in zip(loaded.weights, in_memory.weights):
        assert a.path == b.path
        assert max_abs_difference(a, b) == 0
    ids, mask = token_batch(loaded.backbone.vocabulary_size, seed=3)
    inputs = seq2seq_inputs(ids, mask)
    error = max_abs_difference(loaded(inputs), in_memory(inputs))
    print(f"CLI preset vs in-memory logits max-abs: {error}")
    assert error == 0
    assert ops.convert_to_numpy(loaded(inputs)).shape[-1] == (
        loaded.backbone.vocabulary_size
    )
    assert isinstance(loaded.generate("the early bird", max_length=6), str)


def test_cli_bad_input_exit_code(tmp_path, capsys):
    code = main(["adapt", "--encoder", str(tmp_path / "missing"),
                 "--output", str(tmp_path / "out")])
    assert code == 2
    assert "not an existing folder" in capsys.readouterr().out
