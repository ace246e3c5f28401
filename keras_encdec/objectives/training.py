"""Training objectives: what a task returns in training and its loss.

The data side (`PrefixLM`, `UL2`, ...) makes examples; a training objective
says how `fit` and `evaluate` score them. It is passed to
`task.compile(objective=...)`. While a task is compiled with an objective,
its forward pass in `fit` and `evaluate` returns the decoder hidden states
`[batch, length, width]` (never `[batch, length, vocab]` logits), and the
objective computes the loss from them with `keras_encdec.losses`: the same
code in both, so `evaluate()` reports exactly the training loss (without
dropout). `predict()` and `generate()` are unchanged.

Every objective follows the labels convention of `linear_cross_entropy`:
label `-100` is ignored, and the loss is `sum(w * loss) / sum(w)` over the
remaining tokens, with `w` the sample weights (1 when None).
"""

from keras_encdec.losses import IMPLS
from keras_encdec.losses import linear_cross_entropy

IGNORE_INDEX = -100


def check_impl(impl):
    """Raises a `ValueError` unless `impl` is None or a loss impl name."""
    if impl is not None and impl not in IMPLS:
        raise ValueError(
            f"Unknown loss `impl`. Received: impl={impl!r}. Expected None "
            f"(the best that runs here) or one of {IMPLS}."
        )


class TrainingObjective:
    """Base class of the training objectives (see the module docstring).

    A subclass implements `compute_loss`; one that needs frozen state in
    the step (a teacher) returns it from `state_variables`, and checks the
    task it trains in `bind`.

    Args:
        impl: str or None. `impl` of the `keras_encdec.losses` functions
            (`"xla"`, `"pallas"`, `"triton"`, `"dense"`). Defaults to None
            (the best that runs here).
    """

    # Input keys only the loss reads; the task's forward pass drops them.
    input_keys = ()

    def __init__(self, impl=None):
        check_impl(impl)
        self.impl = impl

    def bind(self, task):
        """Checks that the objective can train `task` (at `compile`)."""

    def state_variables(self):
        """Frozen variables the loss reads (passed to compiled steps as
        non-trainable state, never saved with the task)."""
        return []

    def compute_loss(self, task, x, y, hidden_states, sample_weight=None):
        """The scalar float32 loss of one batch.

        Args:
            task: the compiled task (`task.output_embedding()`,
                `task.backbone.final_logit_soft_cap`).
            x: the input dict of the batch.
            y: int tensor `[batch, length]`. Labels, -100 ignored.
            hidden_states: tensor `[batch, length, width]`. Decoder output.
            sample_weight: tensor `[batch, length]`, `[batch]` or None.
        """
        raise NotImplementedError

    def student_cross_entropy(self, task, y, hidden_states, sample_weight):
        """Token-mean cross-entropy of the task's soft-capped logits."""
        return linear_cross_entropy(
            hidden_states,
            task.output_embedding(),
            y,
            sample_weight=sample_weight,
            ignore_index=IGNORE_INDEX,
            logit_soft_cap=task.backbone.final_logit_soft_cap,
            impl=self.impl,
        )

    def get_config(self):
        return {"impl": self.impl}

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{type(self).__name__}({args})"


class TokenCrossEntropy(TrainingObjective):
    """Cross-entropy on the labels, from hidden states in vocabulary chunks.

    The default objective of `T5GemmaSeq2SeqLM.compile()` and
    `T5Gemma2Seq2SeqLM.compile()`: `keras_encdec.losses.linear_cross_entropy`
    of the decoder hidden states against the output embedding, with the
    model's final soft-cap fused in, so no `[batch, length, vocab]` logits
    are built. The loss is `sum(w * ce) / sum(w)` over labels that are not
    -100.

    Args:
        impl: str or None. `"xla"`, `"pallas"`, `"triton"`, `"dense"`, or
            None for the best that runs here. Defaults to None.

    Examples:

    >>> import numpy as np
    >>> from keras_encdec.models import T5GemmaSeq2SeqLM
    >>> from keras_encdec.objectives import TokenCrossEntropy
    >>> lm = T5GemmaSeq2SeqLM.from_preset("t5gemma_tiny_random",
    ...                                   preprocessor=None)
    >>> lm.compile(optimizer="sgd", objective=TokenCrossEntropy(impl="xla"))
    >>> x = {"encoder_token_ids": np.array([[5, 6, 1]]),
    ...      "encoder_padding_mask": np.array([[1, 1, 1]]),
    ...      "decoder_token_ids": np.array([[2, 7, 8]]),
    ...      "decoder_padding_mask": np.array([[1, 1, 1]])}
    >>> y = np.array([[7, 8, 1]])
    >>> train = float(lm.test_on_batch(x, y))
    >>> bool(train > 0)
    True
    """

    def compute_loss(self, task, x, y, hidden_states, sample_weight=None):
        return self.student_cross_entropy(task, y, hidden_states, sample_weight)


def resolve(objective, loss):
    """The objective `task.compile(objective=, loss=)` trains with.

    Returns `TokenCrossEntropy()` when neither is given, `objective` when
    only it is given, and None for a Keras `loss` (the logits path).
    """
    if isinstance(loss, str) and loss == "auto":
        loss = None
    if objective is not None and loss is not None:
        raise ValueError(
            "Pass either `objective=` (trains from hidden states) or `loss=` "
            "(a Keras loss on logits), not both. Received: "
            f"objective={objective!r}, loss={loss!r}."
        )
    if loss is not None:
        return None
    if objective is None:
        return TokenCrossEntropy()
    if not isinstance(objective, TrainingObjective):
        raise TypeError(
            "`objective` must be a `keras_encdec.objectives."
            "TrainingObjective` (e.g. `TokenCrossEntropy()`, "
            f"`PrefixLMDistillation(teacher)`). Received: {objective!r} of "
            f"type {type(objective).__name__}."
        )
    return objective
