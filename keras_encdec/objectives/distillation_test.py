"""PrefixLM distillation: the loss against a float64 reference from dense
logits, evaluate == train, the teacher inputs and the errors."""

import keras
import numpy as np
import pytest
from keras import ops

from keras_encdec.adapt import adapt_decoder_only
from keras_encdec.objectives import PrefixLM
from keras_encdec.objectives import PrefixLMDistillation
from keras_encdec.objectives import TokenCrossEntropy
from keras_encdec.testing import tiny_gemma3_teacher

TOLERANCE = 1e-5
ENCODER, DECODER = 8, 6


@pytest.fixture(scope="module")
def pair():
    keras.utils.set_random_seed(0)
    teacher = tiny_gemma3_teacher()
    return teacher, adapt_decoder_only(teacher)


def kd_batch(seed=0, batch_size=6, **kwargs):
    rng = np.random.default_rng(seed)
    documents = [rng.integers(3, 64, int(n)).tolist()
                 for n in rng.integers(2, 30, 4)]
    data = PrefixLM(ENCODER, DECODER, teacher_inputs=True, seed=seed, **kwargs)
    return next(data(documents, batch_size=batch_size))


def log_softmax(logits):
    logits = logits - logits.max(-1, keepdims=True)
    return logits - np.log(np.exp(logits).sum(-1, keepdims=True))


def reference_loss(student, teacher, x, y, w, ce_weight, temperature):
    """float64 numpy loss from the models' own dense logits."""
    model_x = {k: v for k, v in x.items() if not k.startswith("teacher_")}
    student_logits = np.asarray(ops.convert_to_numpy(
        student.predict_on_batch(model_x)), "float64")  # [B, D, V]
    teacher_logits = np.asarray(ops.convert_to_numpy(teacher.predict_on_batch({
        "token_ids": x["teacher_token_ids"],
        "padding_mask": x["teacher_padding_mask"]})), "float64")  # [B, L, V]
    length = teacher_logits.shape[1]
    teacher_logits = teacher_logits[:, length - DECODER:]
    # Label j has a teacher prediction when teacher token L - D + j + 1 is
    # real; the final <eos> never has one.
    has_teacher = np.zeros(y.shape)
    has_teacher[:, :-1] = x["teacher_padding_mask"][:, length - DECODER + 1:]
    weights = w * (y != -100)
    p_log = log_softmax(teacher_logits / temperature)
    q_log = log_softmax(student_logits / temperature)
    kl = (np.exp(p_log) * (p_log - q_log)).sum(-1)
    kl_weights = weights * has_teacher
    kl = (kl * kl_weights).sum() / kl_weights.sum()
    student_log = log_softmax(student_logits)
    picked = np.take_along_axis(
        student_log, np.where(y == -100, 0, y)[..., None], -1)[..., 0]
    ce = -(picked * weights).sum() / weights.sum()
    return ce_weight * ce + (1 - ce_weight) * kl, kl


@pytest.mark.parametrize("ce_weight,temperature", [(0.0, 1.0), (0.3, 2.0)])
def test_loss_matches_float64_reference(pair, ce_weight, temperature):
    teacher, student = pair
    x, y, w = kd_batch(seed=1)
    y = np.where(np.arange(DECODER) == 2, -100, y)  # an ignored label
    w = w * np.linspace(0.5, 1.5, len(w))[:, None]  # non-uniform weights
    objective = PrefixLMDistillation(teacher, ce_weight=ce_weight,
                                     temperature=temperature)
    student.compile(optimizer=keras.optimizers.SGD(0.0), objective=objective)
    expected, kl = reference_loss(student, teacher, x, y, w, ce_weight,
                                  temperature)
    assert kl > 0.01  # teacher and student really differ
    evaluated = float(student.test_on_batch(x, y, sample_weight=w))
    trained = float(student.train_on_batch(x, y, sample_weight=w))
    print(f"KD loss vs float64: {abs(evaluated - expected):.2e}")
    assert abs(evaluated - expected) <= TOLERANCE, (evaluated, expected)
    # evaluate() scores with the training objective's own code.
    assert abs(trained - evaluated) <= TOLERANCE, (trained, evaluated)
    assert abs(float(student.evaluate(x, y, sample_weight=w, verbose=0))
               - evaluated) <= TOLERANCE


def test_left_padding_keeps_teacher_outputs(pair):
    """RoPE is relative: left padding (masked) moves nothing."""
    teacher, _ = pair
    x, _, _ = kd_batch(seed=2)
    ids, mask = x["teacher_token_ids"], x["teacher_padding_mask"]
    # predict_on_batch: one compiled graph per length (eager jax would
    # compile every op for each row's length).
    padded = ops.convert_to_numpy(teacher.backbone.predict_on_batch(
        {"token_ids": ids, "padding_mask": mask}))
    worst = 0.0
    for row in range(len(ids)):
        real = np.flatnonzero(mask[row])
        alone = ops.convert_to_numpy(teacher.backbone.predict_on_batch({
            "token_ids": ids[row:row + 1, real],
            "padding_mask": np.ones((1, len(real)), bool)}))
        worst = max(worst, float(np.abs(padded[row, real] - alone[0]).max()))
    assert int((~mask[:, 0]).sum()) > 0  # some rows are left-padded
    assert worst <= TOLERANCE, worst


def test_teacher_inputs_align_with_labels():
    x, y, w = kd_batch(seed=3)
    length = ENCODER + DECODER - 1
    assert x["teacher_token_ids"].shape == (6, length)
    for row in range(6):
        ids, mask = x["teacher_token_ids"][row], x["teacher_padding_mask"][row]
        targets = y[row][w[row] > 0][:-1]  # labels without the final <eos>
        prefix = x["encoder_token_ids"][row][x["encoder_padding_mask"][row]]
        expected = np.concatenate([[2], prefix[:-1], targets])  # no enc <eos>
        np.testing.assert_array_equal(ids[mask], expected)
        # The token before target j sits at ENCODER - 1 + j.
        np.testing.assert_array_equal(
            ids[ENCODER:ENCODER + len(targets)], targets)
        assert ids[ENCODER - 1] == expected[-len(targets) - 1]
    with pytest.raises(ValueError, match="packed=True"):
        next(PrefixLM(8, 6, teacher_inputs=True)([[5, 6, 7]], packed=True))


def test_clear_errors(pair):
    teacher, student = pair
    with pytest.raises(ValueError, match="not both"):
        student.compile(objective=PrefixLMDistillation(teacher),
                        loss="sparse_categorical_crossentropy")
    with pytest.raises(ValueError, match=r"vocabulary_size=96\. Expected: 64"):
        student.compile(objective=PrefixLMDistillation(
            tiny_gemma3_teacher(vocabulary_size=96)))
    with pytest.raises(TypeError, match="keras-hub decoder-only"):
        PrefixLMDistillation(student.backbone.decoder_token_embedding)
    with pytest.raises(ValueError, match="ce_weight"):
        PrefixLMDistillation(teacher, ce_weight=1.5)
    student.compile(optimizer="sgd", objective=PrefixLMDistillation(teacher))
    x, y, w = kd_batch(seed=4)
    plain = {k: v for k, v in x.items() if not k.startswith("teacher_")}
    with pytest.raises(ValueError, match=r"\['teacher_token_ids', "
                       r"'teacher_padding_mask'\].*teacher_inputs=True"):
        student.fit(plain, y, sample_weight=w, verbose=0)
    # The failed step left the teacher usable.
    ops.convert_to_numpy(teacher.backbone({
        "token_ids": x["teacher_token_ids"],
        "padding_mask": x["teacher_padding_mask"]}))
    # Without the objective the teacher's inputs are unknown keys.
    student.compile(optimizer="sgd", objective=TokenCrossEntropy())
    with pytest.raises(ValueError, match="teacher_token_ids"):
        student.fit(x, y, sample_weight=w, verbose=0)


@pytest.mark.skipif(keras.backend.backend() != "jax",
                    reason="The Gemma 2 -> T5Gemma wiring, checked on jax.")
def test_gemma2_teacher_for_t5gemma():
    from keras_encdec.models import T5GemmaSeq2SeqLM
    from keras_encdec.testing import tiny_gemma2_teacher

    keras.utils.set_random_seed(3)
    teacher = tiny_gemma2_teacher()
    student = adapt_decoder_only(teacher)
    assert isinstance(student, T5GemmaSeq2SeqLM)
    assert teacher.backbone.token_embedding.logit_soft_cap == 30.0
    x, y, w = kd_batch(seed=5)
    student.compile(optimizer=keras.optimizers.SGD(0.0),
                    objective=PrefixLMDistillation(teacher, ce_weight=0.5))
    expected, kl = reference_loss(student, teacher, x, y, w, 0.5, 1.0)
    assert kl > 0.01
    evaluated = float(student.test_on_batch(x, y, sample_weight=w))
    print(f"Gemma 2 teacher KD loss vs float64: {abs(evaluated - expected):.2e}")
    assert abs(evaluated - expected) <= TOLERANCE, (evaluated, expected)
