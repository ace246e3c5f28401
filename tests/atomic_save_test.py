"""Atomic, exclusive saves: presets, exports, adapters, backups (issue 15)."""

import errno
import os
import shutil
import subprocess
import sys
import textwrap
from collections import namedtuple

import h5py
import keras
import numpy as np
import pytest

from keras_encdec import errors
from keras_encdec.models import T5GemmaSeq2SeqLM
from keras_encdec.testing import random_batch
from keras_encdec.testing import tiny_seq2seq_lm
from keras_encdec.training import AtomicBackupAndRestore
from keras_encdec.utils import atomic_save

pytestmark = pytest.mark.skipif(
    keras.backend.backend() != "jax", reason="file handling: backend-independent"
)


def weights_of(lm):
    return [keras.ops.convert_to_numpy(w) for w in lm.backbone.weights]


def assert_same_weights(lm, expected):
    got = weights_of(lm)
    assert len(got) == len(expected)
    for a, b in zip(got, expected):
        np.testing.assert_array_equal(a, b)


def model(seed):
    keras.utils.set_random_seed(seed)
    return tiny_seq2seq_lm()


def test_preset_overwrite_replaces_every_file_of_the_old_save(tmp_path):
    folder = str(tmp_path / "preset")
    old = model(0)
    old.save_to_preset(folder, max_shard_size=1e-5)  # sharded weights
    assert os.path.exists(os.path.join(folder, "model.weights.json"))
    new = model(1)
    new.save_to_preset(folder)  # ours: replaced without `overwrite`
    names = set(os.listdir(folder))
    assert "model.weights.json" not in names  # no stale shards
    assert not [n for n in names if n.startswith("model_")]
    assert_same_weights(T5GemmaSeq2SeqLM.from_preset(folder), weights_of(new))
    assert not [n for n in os.listdir(tmp_path) if ".partial-" in n]


def test_export_replaces_stale_shards_both_ways(tmp_path):
    folder = str(tmp_path / "export")
    old, new = model(0), model(1)
    old.export_to_transformers(folder, max_shard_bytes=4096)
    assert "model.safetensors.index.json" in os.listdir(folder)
    new.export_to_transformers(folder)
    assert sorted(os.listdir(folder)) == [
        atomic_save.MANIFEST, "config.json", "model.safetensors"
    ]
    assert_same_weights(T5GemmaSeq2SeqLM.from_preset(folder), weights_of(new))
    old.export_to_transformers(folder, max_shard_bytes=4096)
    assert "model.safetensors" not in os.listdir(folder)
    assert_same_weights(T5GemmaSeq2SeqLM.from_preset(folder), weights_of(old))


@pytest.mark.parametrize("save", ["preset", "export"])
def test_folder_with_foreign_files_is_refused_unless_overwrite(tmp_path, save):
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "notes.txt").write_text("user data")
    lm = model(0)
    write = {
        "preset": lm.save_to_preset,
        "export": lm.export_to_transformers,
    }[save]
    with pytest.raises(errors.TargetExistsError, match=r"notes\.txt"):
        write(str(folder))
    assert os.listdir(folder) == ["notes.txt"]  # untouched
    write(str(folder), overwrite=True)
    assert "notes.txt" not in os.listdir(folder)
    assert "config.json" in os.listdir(folder)


def test_loaders_refuse_conflicting_weight_files(tmp_path):
    old, new = model(0), model(1)
    export = str(tmp_path / "export")
    new.export_to_transformers(export)
    old.export_to_transformers(str(tmp_path / "sharded"), max_shard_bytes=4096)
    for name in os.listdir(tmp_path / "sharded"):
        if name.startswith("model"):
            shutil.copy(tmp_path / "sharded" / name, export)
    with pytest.raises(errors.CheckpointError, match="holds both"):
        T5GemmaSeq2SeqLM.from_preset(export)
    preset = str(tmp_path / "preset")
    old.save_to_preset(preset)
    new.save_to_preset(str(tmp_path / "sharded_preset"), max_shard_size=1e-5)
    for name in os.listdir(tmp_path / "sharded_preset"):
        if name.startswith("model"):
            shutil.copy(tmp_path / "sharded_preset" / name, preset)
    with pytest.raises(errors.CheckpointError, match="holds both"):
        T5GemmaSeq2SeqLM.from_preset(preset)


KILL_SCRIPT = textwrap.dedent(
    """
    import os, signal, sys
    import keras
    from keras_encdec.testing import tiny_seq2seq_lm
    from keras_encdec.utils import atomic_save

    folder, point = sys.argv[1], sys.argv[2]
    keras.utils.set_random_seed(1)
    lm = tiny_seq2seq_lm()

    def die(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGKILL)

    if point == "weights":  # while the weights are being written
        original = keras.Model.save_weights

        def save_then_die(self, *args, **kwargs):
            original(self, *args, **kwargs)
            die()

        keras.Model.save_weights = save_then_die
    else:  # everything written, just before the folder is moved in place
        atomic_save._replace_folder = die
    lm.save_to_preset(folder)
    """
)


@pytest.mark.parametrize("point", ["weights", "swap"])
def test_killed_preset_overwrite_leaves_the_old_preset(tmp_path, point):
    folder = str(tmp_path / "preset")
    old = model(0)
    old.save_to_preset(folder)
    env = dict(os.environ, KERAS_BACKEND="jax")
    result = subprocess.run(
        [sys.executable, "-c", KILL_SCRIPT, folder, point],
        env=env,
        capture_output=True,
        timeout=300,
    )
    assert result.returncode == -9, result.stderr.decode()[-2000:]
    assert_same_weights(T5GemmaSeq2SeqLM.from_preset(folder), weights_of(old))


def test_full_disk_raises_a_clear_oserror_and_keeps_the_old_save(
    tmp_path, monkeypatch
):
    folder = str(tmp_path / "preset")
    old = model(0)
    old.save_to_preset(folder)
    before = sorted(os.listdir(folder))
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(
        atomic_save.shutil, "disk_usage", lambda path: usage(10**6, 10**6, 1000)
    )
    for write in (old.save_to_preset, old.export_to_transformers):
        with pytest.raises(errors.InsufficientSpaceError) as info:
            write(folder)
        assert info.value.errno == errno.ENOSPC
        assert "1000 bytes free" in str(info.value)
    assert sorted(os.listdir(folder)) == before
    assert not [n for n in os.listdir(tmp_path) if ".partial-" in n]


def test_disk_full_during_the_write_keeps_the_old_save(tmp_path, monkeypatch):
    folder = str(tmp_path / "preset")
    old = model(0)
    old.save_to_preset(folder)

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(keras.Model, "save_weights", full)
    with pytest.raises(OSError, match="No space left"):
        model(1).save_to_preset(folder)
    monkeypatch.undo()
    assert_same_weights(T5GemmaSeq2SeqLM.from_preset(folder), weights_of(old))
    assert not [n for n in os.listdir(tmp_path) if ".partial-" in n]


def fit_with_backup(folder, **kwargs):
    keras.backend.clear_session()  # same variable names on every run
    keras.utils.set_random_seed(0)
    lm = tiny_seq2seq_lm()
    x = random_batch(2, 6, 5, 64, seed=0)
    y = np.roll(x["decoder_token_ids"], -1, axis=1)
    lm.compile(optimizer="sgd")
    backup = AtomicBackupAndRestore(folder, **kwargs)
    lm.fit(x, y, epochs=1, verbose=0, callbacks=[backup])


def test_backup_never_deletes_a_folder_it_did_not_create(tmp_path):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("user data")
    fit_with_backup(str(mine))
    assert os.listdir(mine) == ["notes.txt"]  # checkpoints removed, not mine
    ours = tmp_path / "ours"
    fit_with_backup(str(ours))  # created here, so removed at the end
    assert not ours.exists()


def test_adapter_save_is_atomic_and_refuses_other_files(tmp_path):
    lm = model(0)
    lm.backbone.enable_lora(2)
    path = str(tmp_path / "a.lora.h5")
    lm.backbone.save_lora_weights(path)
    lm.backbone.save_lora_weights(path)  # an adapter: replaced
    (tmp_path / "other.lora.h5").write_text("not an adapter")
    with pytest.raises(errors.TargetExistsError, match="not a keras-encdec"):
        lm.backbone.save_lora_weights(str(tmp_path / "other.lora.h5"))
    lm.backbone.save_lora_weights(str(tmp_path / "other.lora.h5"), overwrite=True)
    with h5py.File(tmp_path / "other.lora.h5") as f:
        assert "lora" in f
    assert sorted(os.listdir(tmp_path)) == ["a.lora.h5", "other.lora.h5"]
