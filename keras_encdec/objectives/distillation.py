"""PrefixLM distillation from the decoder-only teacher, inside `fit`.

T5Gemma and T5Gemma 2 are adapted from a decoder-only Gemma, then trained
further on PrefixLM while distilling from that source model. Here the
teacher runs in the same train step as the student: it reads `<bos> prefix
target` (the `teacher_token_ids` / `teacher_padding_mask` that
`PrefixLM(..., teacher_inputs=True)` adds to each example), and its hidden
states at the positions that predict the decoder labels are the soft
targets. Neither side's `[tokens, vocab]` logits are built: the KL is
`keras_encdec.losses.linear_kl_divergence` from hidden states and
embeddings, in vocabulary chunks.

Alignment: the teacher row has length `L` and the decoder `D`, with
`<bos> prefix` left-padded so that the targets fill the last `D - 1`
columns. Teacher position `L - D + j` (the token before target `j`)
predicts decoder label `j`. The last label, the student's `<eos>`, has no
teacher prediction (the teacher saw no end of text there) and is left out
of the KL. Gemma's RoPE is relative, so the left padding (masked out) does
not change the teacher's outputs.
"""

import keras
from keras import ops

from keras_encdec.losses import linear_kl_divergence
from keras_encdec.objectives.training import IGNORE_INDEX
from keras_encdec.objectives.training import TrainingObjective

TEACHER_KEYS = ("teacher_token_ids", "teacher_padding_mask")


def teacher_backbone(teacher):
    """The keras-hub decoder-only backbone of `teacher` (a causal LM or a
    backbone), or a `TypeError` saying what is expected."""
    backbone = getattr(teacher, "backbone", teacher)
    embedding = getattr(backbone, "token_embedding", None)
    if not isinstance(backbone, keras.Model) or embedding is None:
        raise TypeError(
            "`teacher` must be a keras-hub decoder-only causal LM or backbone "
            "(e.g. `keras_hub.models.Gemma3CausalLM` for T5Gemma 2, "
            "`keras_hub.models.GemmaCausalLM` (Gemma 2) for T5Gemma) with a "
            f"`token_embedding`. Received: {type(teacher).__name__}."
        )
    return backbone


def teacher_output_embedding(backbone):
    """The teacher's `[vocab, width]` output embedding as floats.

    An int8 teacher's (tied) embedding is dequantized (`q / scale`); the
    teacher's own logits path also quantizes its inputs, so KD logits from
    an int8 teacher differ from `teacher(x)` by that rounding.
    """
    layer = backbone.token_embedding
    mode = getattr(layer, "quantization_mode", None)
    if mode is None:
        if layer.tie_weights:
            return layer.embeddings
        return ops.transpose(layer.reverse_embeddings)
    if mode == "int8" and layer.tie_weights:
        dtype = layer.compute_dtype
        scale = ops.expand_dims(ops.cast(layer.embeddings_scale, dtype), -1)
        return ops.divide(ops.cast(layer._embeddings, dtype), scale)
    raise ValueError(
        "Only float or int8 (tied) teacher embeddings are supported. "
        f"Received: quantization_mode={mode!r}, tie_weights="
        f"{layer.tie_weights}."
    )


def check_teacher_inputs(x):
    """Raises a `ValueError` unless `x` holds the teacher's inputs."""
    missing = [k for k in TEACHER_KEYS if not isinstance(x, dict) or k not in x]
    if missing:
        keys = sorted(x) if isinstance(x, dict) else type(x).__name__
        raise ValueError(
            f"`PrefixLMDistillation` needs the teacher's inputs {missing} in "
            f"each batch. Received inputs with keys {keys}. Build the data "
            "with `keras_encdec.objectives.PrefixLM(..., "
            "teacher_inputs=True)`, which adds `teacher_token_ids` "
            "(`<bos> prefix target`, left-padded) and `teacher_padding_mask`."
        )


def teacher_targets(backbone, x, decoder_length):
    """Teacher hidden states predicting each decoder label, and the mask of
    labels that have one.

    Args:
        backbone: the teacher backbone.
        x: input dict with `TEACHER_KEYS`.
        decoder_length: int. `D`, the decoder (labels) length.

    Returns:
        `(hidden [batch, D, width], mask [batch, D] float32)`: the hidden
        states of teacher positions `L - D .. L - 1`; the mask is 1 where
        the next teacher token is real (label `j < D - 1` with a target),
        0 for the final `<eos>` and padding.
    """
    token_ids = x["teacher_token_ids"]
    padding_mask = x["teacher_padding_mask"]
    length = token_ids.shape[1]
    if length is not None and length <= decoder_length:
        raise ValueError(
            "`teacher_token_ids` must be longer than the decoder input "
            "(`<bos> prefix target`). Received: teacher length "
            f"{length}, decoder length {decoder_length}."
        )
    hidden = backbone(
        {"token_ids": token_ids, "padding_mask": padding_mask}, training=False
    )  # [batch, L, width]
    offset = length - decoder_length
    hidden = ops.stop_gradient(hidden[:, offset:])
    mask = ops.cast(padding_mask[:, offset + 1:], "float32")  # [batch, D-1]
    mask = ops.pad(mask, [[0, 0], [0, 1]])  # no teacher target for <eos>
    return hidden, mask


class PrefixLMDistillation(TrainingObjective):
    """PrefixLM knowledge distillation from a frozen decoder-only teacher.

    The loss is `ce_weight * CE + (1 - ce_weight) * KL`, where CE is the
    student's token cross-entropy (`TokenCrossEntropy`) and KL is
    `KL(teacher || student)` at `temperature` (both sides' soft-capped
    logits divided by it; no `temperature**2` factor), averaged like CE:
    `sum(w * kl) / sum(w)` over labels that are not -100 and have a teacher
    prediction (not the final `<eos>`), `w` the sample weights. The teacher
    logits are `soft_cap(h @ E_teacher.T)` with the teacher's own final
    soft-cap (`token_embedding.logit_soft_cap`).

    The teacher runs in the train step on `teacher_token_ids` /
    `teacher_padding_mask` from the data (`PrefixLM(...,
    teacher_inputs=True)`; see the module docstring for the alignment). It
    is frozen: `teacher.trainable` is set to False, its hidden states get
    no gradient, and its weights are bit-identical after `fit`. While a
    task is compiled with this objective the teacher's variables are part
    of `task.non_trainable_variables` (on jax they enter the compiled step
    as state arguments, not as constants); they are never saved with the
    task (`save_to_preset`, `save_weights`). The teacher may be float32,
    bfloat16 or int8 (`teacher.quantize("int8")`).

    Args:
        teacher: a keras-hub decoder-only causal LM or backbone sharing the
            student's vocabulary: `keras_hub.models.Gemma3CausalLM` /
            `Gemma3Backbone` for a T5Gemma 2 student, `GemmaCausalLM` /
            `GemmaBackbone` (Gemma 2) for T5Gemma.
        ce_weight: float in [0, 1]. Weight of the cross-entropy term.
            Defaults to 0.0 (distillation only).
        temperature: float. Positive KL temperature. Defaults to 1.0.
        impl: str or None. `impl` of both losses (`"xla"`, `"pallas"`,
            `"triton"`, `"dense"`). Defaults to None (the best here).

    Examples:

    >>> import keras_hub, numpy as np
    >>> from keras_encdec.adapt import adapt_decoder_only
    >>> from keras_encdec.objectives import PrefixLM, PrefixLMDistillation
    >>> from keras_encdec.testing import tiny_gemma3_teacher
    >>> teacher = tiny_gemma3_teacher()
    >>> student = adapt_decoder_only(teacher)
    >>> student.preprocessor = None  # token ids from PrefixLM
    >>> student.compile(optimizer="adam",
    ...                 objective=PrefixLMDistillation(teacher, ce_weight=0.5))
    >>> data = PrefixLM(8, 6, teacher_inputs=True, seed=0)
    >>> x, y, w = next(data([list(range(10, 40))], batch_size=4))
    >>> sorted(x)[-2:]
    ['teacher_padding_mask', 'teacher_token_ids']
    >>> history = student.fit(x, y, sample_weight=w, verbose=0)
    """

    input_keys = TEACHER_KEYS

    def __init__(self, teacher, *, ce_weight=0.0, temperature=1.0, impl=None):
        super().__init__(impl=impl)
        if isinstance(ce_weight, bool) or not (
            isinstance(ce_weight, (int, float)) and 0.0 <= ce_weight <= 1.0
        ):
            raise ValueError(
                "`ce_weight` must be a number in [0, 1]. Received: "
                f"ce_weight={ce_weight!r}."
            )
        if isinstance(temperature, bool) or not (
            isinstance(temperature, (int, float)) and temperature > 0
        ):
            raise ValueError(
                "`temperature` must be a positive number. Received: "
                f"temperature={temperature!r}."
            )
        self.teacher = teacher
        self.teacher_backbone = teacher_backbone(teacher)
        self.teacher_backbone.trainable = False
        self.ce_weight = float(ce_weight)
        self.temperature = float(temperature)

    def bind(self, task):
        embedding = teacher_output_embedding(self.teacher_backbone)
        vocabulary, width = embedding.shape
        expected = task.backbone.vocabulary_size
        if vocabulary != expected:
            raise ValueError(
                "The teacher must share the student's vocabulary. Received: "
                f"teacher vocabulary_size={vocabulary}. Expected: "
                f"{expected} (the student's)."
            )
        hidden_dim = getattr(self.teacher_backbone, "hidden_dim", width)
        if width != hidden_dim:
            raise ValueError(
                "The teacher's output embedding must match its hidden "
                f"states. Received: embedding width {width}. Expected: "
                f"{hidden_dim} (the teacher's hidden_dim)."
            )

    def state_variables(self):
        return list(self.teacher_backbone.variables)

    def compute_loss(self, task, x, y, hidden_states, sample_weight=None):
        check_teacher_inputs(x)
        teacher_hidden, weights = teacher_targets(
            self.teacher_backbone, x, hidden_states.shape[1]
        )
        weights = weights * ops.cast(ops.not_equal(y, IGNORE_INDEX), "float32")
        if sample_weight is not None:
            per_token = ops.cast(sample_weight, "float32")
            if len(per_token.shape) == 1:  # per-sequence weights
                per_token = ops.expand_dims(per_token, -1)
            weights = weights * per_token
        kl = linear_kl_divergence(
            hidden_states,
            task.output_embedding(),
            teacher_hidden,
            teacher_output_embedding(self.teacher_backbone),
            mask=ops.not_equal(weights, 0.0),
            temperature=self.temperature,
            logit_soft_cap=task.backbone.final_logit_soft_cap,
            teacher_logit_soft_cap=(
                self.teacher_backbone.token_embedding.logit_soft_cap
            ),
            reduction="none",
            impl=self.impl,
        )
        total = ops.sum(weights)
        kl = ops.sum(kl * weights) / ops.where(total > 0.0, total, 1.0)
        loss = (1.0 - self.ce_weight) * kl
        if self.ce_weight > 0.0:
            ce = self.student_cross_entropy(
                task, y, hidden_states, sample_weight
            )
            loss = loss + self.ce_weight * ce
        return loss

    def get_config(self):
        return {
            "teacher": type(self.teacher).__name__,
            "ce_weight": self.ce_weight,
            "temperature": self.temperature,
            "impl": self.impl,
        }
