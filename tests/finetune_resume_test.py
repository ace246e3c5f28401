"""Resume without loss: training killed for real (SIGKILL) and restarted.

A training script runs in a subprocess. One run is killed mid-epoch by a
callback (`os.kill(os.getpid(), SIGKILL)` after global step K); another is
killed while it writes a checkpoint (the h5 file half written). Each is
restarted and must end with exactly the weights and per-epoch losses of an
uninterrupted run with the same seed.
"""

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

EPOCHS, STEPS = 3, 4

SCRIPT = textwrap.dedent(
    """
    import json, os, signal, sys
    import keras, numpy as np
    from keras_encdec.models import T5GemmaBackbone, T5GemmaSeq2SeqLM
    from keras_encdec.testing import random_batch
    from keras_encdec.training import AtomicBackupAndRestore
    from keras_encdec.training import backup_and_restore

    mode, out = sys.argv[1], sys.argv[2]
    kill_step = int(sys.argv[3]) if len(sys.argv) > 3 else -1
    keras.utils.set_random_seed(0)
    config = dict(vocabulary_size=48)
    for side in ("encoder", "decoder"):
        config.update({f"{side}_hidden_dim": 16,
                       f"{side}_intermediate_dim": 32,
                       f"{side}_num_layers": 1, f"{side}_num_heads": 2,
                       f"{side}_num_kv_heads": 1, f"{side}_head_dim": 8})
    lm = T5GemmaSeq2SeqLM(T5GemmaBackbone(**config))
    lm.backbone.enable_lora(2, target="attention+mlp")
    lm.compile(optimizer=keras.optimizers.Adam(1e-2),
               loss=keras.losses.SparseCategoricalCrossentropy(
                   from_logits=True))
    x = random_batch(%(examples)d, 8, 6, 48, padded=True, seed=2)
    y = np.roll(x["decoder_token_ids"], -1, axis=1)

    class Trace(keras.callbacks.Callback):
        # Per-epoch losses, appended to a file that survives the kill.
        def __init__(self):
            super().__init__()
            self.step = 0
        def on_train_batch_end(self, batch, logs=None):
            self.step += 1
            if mode == "kill_at_step" and self.step == kill_step:
                os.kill(os.getpid(), signal.SIGKILL)
        def on_epoch_end(self, epoch, logs=None):
            with open(os.path.join(out, "history.jsonl"), "a") as f:
                f.write(json.dumps([epoch, float(logs["loss"])]) + "\\n")

    if mode == "kill_in_write":
        original = backup_and_restore.write_state
        calls = []
        def dying_write_state(model, filepath):
            calls.append(filepath)
            original(model, filepath)
            if len(calls) == kill_step:  # leave half a file, then die
                size = os.path.getsize(filepath)
                with open(filepath, "r+b") as f:
                    f.truncate(size // 2)
                os.kill(os.getpid(), signal.SIGKILL)
        backup_and_restore.write_state = dying_write_state

    backup_dir = os.path.join(out, "backup")
    lm.fit(x, y, sample_weight=x["decoder_padding_mask"], batch_size=2,
           epochs=%(epochs)d, shuffle=False, verbose=0,
           callbacks=[Trace(), AtomicBackupAndRestore(backup_dir)])
    np.savez(os.path.join(out, "weights.npz"),
             **{v.path: keras.ops.convert_to_numpy(v) for v in lm.weights})
    """
    % {"examples": 2 * STEPS, "epochs": EPOCHS}
)


def _run(tmp_path, folder, *args):
    out = os.path.join(tmp_path, folder)
    os.makedirs(out, exist_ok=True)
    script = os.path.join(tmp_path, "train.py")
    with open(script, "w") as f:
        f.write(SCRIPT)
    result = subprocess.run(
        [sys.executable, script, args[0], out, *args[1:]],
        capture_output=True,
        text=True,
        timeout=300,
    )
    return out, result


def _history(out):
    losses = {}
    with open(os.path.join(out, "history.jsonl")) as f:
        for line in f:
            epoch, loss = json.loads(line)
            losses[epoch] = loss  # a replayed epoch overwrites its entry
    return [losses[e] for e in sorted(losses)]


def _weights(out):
    with np.load(os.path.join(out, "weights.npz")) as data:
        return {k: data[k] for k in data.files}


def _assert_same_run(out, reference):
    ref_weights, got = _weights(reference), _weights(out)
    assert sorted(got) == sorted(ref_weights)
    diff = max(float(np.abs(got[k] - ref_weights[k]).max()) for k in got)
    assert diff <= 1e-6, diff
    np.testing.assert_allclose(_history(out), _history(reference), atol=1e-6)
    assert len(_history(out)) == EPOCHS


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The uninterrupted run, shared by the tests."""
    out, result = _run(str(tmp_path_factory.mktemp("ref")), "reference", "full")
    assert result.returncode == 0, result.stderr[-3000:]
    return out


def test_sigkill_mid_epoch_then_resume_matches_uninterrupted(
    tmp_path, reference
):
    # Killed after step 6 of 12: epoch 1 (0-based) is half done.
    out, result = _run(tmp_path, "killed", "kill_at_step", str(STEPS + 2))
    assert result.returncode == -9, result.stderr[-3000:]
    assert _history(out) == _history(reference)[:1]
    pointer = json.load(open(os.path.join(out, "backup", "checkpoint.json")))
    assert pointer["epoch"] == 1

    out, result = _run(tmp_path, "killed", "resume")
    assert result.returncode == 0, result.stderr[-3000:]
    _assert_same_run(out, reference)


def test_kill_during_checkpoint_write_never_corrupts_latest(
    tmp_path, reference
):
    # Dies half-way through writing the second checkpoint (end of epoch 1).
    out, result = _run(tmp_path, "crashed", "kill_in_write", "2")
    assert result.returncode == -9, result.stderr[-3000:]
    backup = os.path.join(out, "backup")
    pointer = json.load(open(os.path.join(backup, "checkpoint.json")))
    assert pointer["epoch"] == 1  # still the first, complete checkpoint
    assert "ckpt-1.weights.h5" in os.listdir(backup)  # the torn file

    out, result = _run(tmp_path, "crashed", "resume")
    assert result.returncode == 0, result.stderr[-3000:]
    _assert_same_run(out, reference)
