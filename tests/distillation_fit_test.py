"""`fit` with `PrefixLMDistillation`: the KD loss falls, the teacher stays
frozen and unsaved, and LoRA, remat, gradient accumulation, bf16 / int8
teachers and a sharded mesh work."""

import json
import os
import subprocess
import sys
import textwrap

import h5py
import keras
import numpy as np
import pytest
from keras import ops

from keras_encdec.adapt import adapt_decoder_only
from keras_encdec.objectives import PrefixLM
from keras_encdec.objectives import PrefixLMDistillation
from keras_encdec.testing import tiny_gemma3_teacher

only_jax = pytest.mark.skipif(
    keras.backend.backend() != "jax",
    reason="Backend-independent wiring (or a jax mesh), checked on jax.",
)


@pytest.fixture(scope="module")
def teacher():
    keras.utils.set_random_seed(0)
    return tiny_gemma3_teacher()


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    documents = [rng.integers(3, 64, 40).tolist() for _ in range(4)]
    return next(PrefixLM(8, 6, teacher_inputs=True, seed=0)(
        documents, batch_size=16))


def values(variables):
    return [np.array(ops.convert_to_numpy(v)) for v in variables]


class TeacherStateProbe(keras.callbacks.Callback):
    """Whether the teacher's values were detached during a jax step (they
    travel as step state then). Never touches `self.model` (that syncs)."""

    def __init__(self, teacher):
        super().__init__()
        self.variables = teacher.backbone.variables
        self.detached = []

    def on_train_batch_end(self, batch, logs=None):
        self.detached.append(all(v._value is None for v in self.variables))


def kd_fit(student, teacher, data, epochs=5, batch_size=16, callbacks=(),
           **optimizer):
    student.compile(
        optimizer=keras.optimizers.Adam(1e-2, **optimizer),
        objective=PrefixLMDistillation(teacher, ce_weight=0.3),
    )
    x, y, w = data
    history = student.fit(x, y, sample_weight=w, batch_size=batch_size,
                          epochs=epochs, shuffle=False, verbose=0,
                          callbacks=list(callbacks))
    return history.history["loss"]


def test_fit_lowers_kd_loss_and_keeps_teacher_frozen(teacher, data):
    student = adapt_decoder_only(teacher)
    before = values(teacher.weights)
    probe = TeacherStateProbe(teacher)
    losses = kd_fit(student, teacher, data, callbacks=[probe])
    print("KD fit losses:", [round(v, 4) for v in losses])
    if keras.backend.backend() == "jax":
        # State arguments of the jitted step (detached from the variables
        # during fit, like the student's), not constants baked into it.
        assert probe.detached and all(probe.detached), probe.detached
    assert losses[-1] < 0.85 * losses[0], losses
    after = values(teacher.weights)
    assert all(np.array_equal(a, b) for a, b in zip(before, after))
    # The teacher's state enters the step only while compiled with it.
    state = {id(v) for v in student.non_trainable_variables}
    assert all(id(v) in state for v in teacher.backbone.variables)
    assert not {id(v) for v in teacher.weights} & {
        id(v) for v in student.trainable_variables}
    student.compile(optimizer="sgd")
    state = {id(v) for v in student.non_trainable_variables}
    assert not any(id(v) in state for v in teacher.backbone.variables)


def h5_arrays(path):
    arrays = {}
    with h5py.File(path, "r") as f:
        f.visititems(lambda name, item: arrays.__setitem__(name, item[()])
                     if isinstance(item, h5py.Dataset) else None)
    return arrays


@only_jax
def test_student_saves_hold_no_teacher(teacher, data, tmp_path):
    student = adapt_decoder_only(teacher)
    optimizer = keras.optimizers.Adam(1e-2)
    student.compile(optimizer=optimizer,
                    objective=PrefixLMDistillation(teacher))
    x, y, w = data
    student.fit(x, y, sample_weight=w, epochs=1, verbose=0)
    student.save_weights(str(tmp_path / "kd.weights.h5"))
    student.save_to_preset(str(tmp_path / "kd"))
    student.compile(optimizer=optimizer)  # same weights, no teacher
    student.save_weights(str(tmp_path / "plain.weights.h5"))
    student.save_to_preset(str(tmp_path / "plain"))
    kd, plain = (h5_arrays(tmp_path / f"{n}.weights.h5")
                 for n in ("kd", "plain"))
    assert sorted(kd) == sorted(plain) and len(kd) > 10
    assert all(np.array_equal(kd[k], plain[k]) for k in kd)
    files = sorted(os.listdir(tmp_path / "kd"))
    assert files == sorted(os.listdir(tmp_path / "plain"))
    for name in files:
        if name.endswith(".h5"):
            a = h5_arrays(tmp_path / "kd" / name)
            b = h5_arrays(tmp_path / "plain" / name)
            assert sorted(a) == sorted(b)
            assert all(np.array_equal(a[k], b[k]) for k in a)
        elif name == "metadata.json":  # equal but for the save time
            a, b = (json.loads((tmp_path / d / name).read_text())
                    for d in ("kd", "plain"))
            a.pop("date_saved"), b.pop("date_saved")
            assert a == b
        else:
            assert (tmp_path / "kd" / name).read_bytes() == (
                tmp_path / "plain" / name).read_bytes(), name
    teacher_count = len(teacher.backbone.weights)
    student_count = len(student.backbone.weights)
    assert len(h5_arrays(tmp_path / "kd" / "model.weights.h5")) == (
        student_count), (student_count, teacher_count)


@only_jax
def test_lora_remat_gradient_accumulation(teacher, data):
    runs = {}
    for remat in (False, True):
        keras.utils.set_random_seed(1)
        student = adapt_decoder_only(teacher)
        student.backbone.enable_lora(4)
        student.backbone.remat = remat
        runs[remat] = kd_fit(student, teacher, data, epochs=4, batch_size=8,
                             gradient_accumulation_steps=2)
        assert student.trainable_variables
        assert all("lora" in v.path for v in student.trainable_variables)
    print("LoRA + accumulation losses:", runs)
    np.testing.assert_allclose(runs[True], runs[False], rtol=1e-5)
    assert runs[True][-1] < 0.95 * runs[True][0], runs


@only_jax
@pytest.mark.parametrize("kind", ["bfloat16", "int8"])
def test_low_precision_teacher(teacher, data, kind):
    copy = tiny_gemma3_teacher(dtype="bfloat16" if kind == "bfloat16" else None)
    copy.set_weights(teacher.get_weights())
    if kind == "int8":
        copy.quantize("int8")
    before = values(copy.weights)
    keras.utils.set_random_seed(2)
    reference = kd_fit(adapt_decoder_only(teacher), teacher, data, epochs=3)
    losses = kd_fit(adapt_decoder_only(teacher), copy, data, epochs=3)
    print(kind, "teacher losses:", losses, "float32 teacher:", reference)
    assert losses[-1] < 0.9 * losses[0], losses
    assert abs(losses[0] - reference[0]) < 0.05  # the same teacher, rounded
    assert all(np.array_equal(a, b) for a, b in zip(before, values(copy.weights)))


SHARDED = textwrap.dedent(
    """
    import json, os
    os.environ["KERAS_BACKEND"] = "jax"
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "")
                           + " --xla_force_host_platform_device_count=8")
    import keras, numpy as np
    from keras_encdec.adapt import adapt_decoder_only
    from keras_encdec.models import T5Gemma2Backbone
    from keras_encdec.objectives import PrefixLM, PrefixLMDistillation
    from keras_encdec.testing import tiny_gemma3_teacher

    rng = np.random.default_rng(0)
    docs = [rng.integers(3, 64, 40).tolist() for _ in range(4)]
    x, y, w = next(PrefixLM(8, 6, teacher_inputs=True)(docs, batch_size=8))

    def run():
        keras.utils.set_random_seed(0)
        # Head counts that the (2 batch, 4 model) layouts divide; the
        # teacher is laid out by the same map (replicated where unmatched).
        teacher = tiny_gemma3_teacher(num_query_heads=4, num_key_value_heads=4)
        student = adapt_decoder_only(teacher)
        student.compile(optimizer=keras.optimizers.SGD(0.5),
                        objective=PrefixLMDistillation(teacher, ce_weight=0.3))
        history = student.fit(x, y, sample_weight=w, batch_size=8, epochs=2,
                              shuffle=False, verbose=0)
        return student, history.history["loss"]

    _, reference = run()
    devices = keras.distribution.list_devices()
    mesh = keras.distribution.DeviceMesh((2, 4), ["batch", "model"], devices)
    distribution = keras.distribution.ModelParallel(
        layout_map=T5Gemma2Backbone.get_layout_map(mesh),
        batch_dim_name="batch")
    with distribution.scope():
        student, loss = run()
    sharded = sum(not v.value.sharding.is_fully_replicated
                  for v in student.weights)
    print("REPORT " + json.dumps(dict(devices=len(devices), loss=loss,
                                      reference=reference, sharded=sharded)))
    """
)


@only_jax
def test_sharded_kd_fit_matches_single_device():
    result = subprocess.run(
        [sys.executable, "-c", SHARDED], capture_output=True, text=True,
        env=dict(os.environ, KERAS_BACKEND="jax"), timeout=600,
    )
    lines = [l for l in result.stdout.splitlines() if l.startswith("REPORT ")]
    assert lines, result.stderr[-3000:]
    report = json.loads(lines[-1][len("REPORT "):])
    print("sharded KD:", report)
    assert report["devices"] == 8 and report["sharded"] > 0
    np.testing.assert_allclose(report["loss"], report["reference"], atol=1e-5)
    assert report["loss"][-1] < report["loss"][0]
