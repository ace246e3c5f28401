"""The `adapt` command: a preset folder that loads back bit-identically."""

from keras import ops

import keras
import pytest

from keras_encdec import __main__ as cli_main
from keras_encdec.adapt.conftest import ADAPT_SEED
from keras_encdec.testing import seq2seq_inputs
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
    err = capsys.readouterr().err
    assert "not an existing folder" in err and err.count("\n") == 1


@pytest.mark.parametrize(
    "extra,message",
    [
        (["--dtype", "float64"], "Unsupported --dtype. Received: 'float64'"),
        (["--output", "FILE"], "exists and is not a folder"),
        (["--output", "MINE"], "did not write there (1: notes.txt)"),
    ],
)
def test_cli_checks_arguments_before_reading_sources(
    tmp_path, capsys, monkeypatch, extra, message
):
    from keras_encdec.adapt import cli

    def never(*args, **kwargs):
        raise AssertionError("sources were read before the arguments")

    monkeypatch.setattr(cli, "plan_adaptation", never)
    (tmp_path / "FILE").write_text("x")
    (tmp_path / "MINE").mkdir()
    (tmp_path / "MINE" / "notes.txt").write_text("user data")
    argv = ["adapt", "--encoder", "gemma2_2b_en", "--output", str(tmp_path / "out")]
    argv += [str(tmp_path / e) if e in ("FILE", "MINE") else e for e in extra]
    assert main(argv) == 2
    captured = capsys.readouterr()
    assert message in captured.err and captured.err.count("\n") == 1
    assert captured.out == ""
