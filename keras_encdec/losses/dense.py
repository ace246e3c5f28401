"""Dense reference: materializes the `[tokens, vocab]` logits.

Use it for checking and for small vocabularies only. Its memory grows as
`tokens * vocab`; `impl="xla"` computes the same values in chunks.
"""

from keras import ops


def soft_cap(logits, logit_soft_cap):
    """Returns `c * tanh(logits / c)`, or `logits` when the cap is None."""
    if logit_soft_cap is None:
        return logits
    return ops.tanh(logits / logit_soft_cap) * logit_soft_cap


def dense_token_losses(hidden, embedding, labels, valid, logit_soft_cap=None):
    """Per-token cross-entropy from materialized logits.

    Args:
        hidden: tensor. `[N, D]` hidden states, float.
        embedding: tensor. `[V, D]` output embedding, same float dtype.
        labels: tensor. `[N]` int32 target ids.
        valid: tensor. `[N]` bool, False where the label is ignored.
        logit_soft_cap: float or None. Soft-cap value. Defaults to None.

    Returns:
        `[N]` float32 losses, 0 where `valid` is False.
    """
    # Matmul in the input dtype (fp32 accumulation on every backend), then
    # everything else in fp32.
    logits = ops.matmul(hidden, ops.transpose(embedding))  # [N, V]
    logits = soft_cap(ops.cast(logits, "float32"), logit_soft_cap)
    lse = ops.logsumexp(logits, axis=-1)  # [N]
    safe_labels = ops.where(valid, labels, 0)
    target = ops.take_along_axis(logits, safe_labels[:, None], axis=-1)[:, 0]
    return ops.where(valid, lse - target, 0.0)


def dense_kl_token_losses(
    hidden,
    embedding,
    teacher_hidden,
    teacher_embedding,
    temperature=1.0,
    logit_soft_cap=None,
    teacher_logit_soft_cap=None,
):
    """Per-token KL(teacher || student) from materialized logits.

    Args:
        hidden: tensor. `[N, D]` student hidden states, float.
        embedding: tensor. `[V, D]` student output embedding.
        teacher_hidden: tensor. `[N, Dt]` teacher hidden states.
        teacher_embedding: tensor. `[V, Dt]` teacher output embedding.
        temperature: float. Both sides' logits are divided by it.
        logit_soft_cap: float or None. Student soft-cap.
        teacher_logit_soft_cap: float or None. Teacher soft-cap.

    Returns:
        `[N]` float32 losses. The teacher gets no gradient.
    """
    teacher_hidden = ops.stop_gradient(teacher_hidden)
    teacher_embedding = ops.stop_gradient(teacher_embedding)

    def log_probs(h, e, cap):
        logits = ops.cast(ops.matmul(h, ops.transpose(e)), "float32")
        logits = soft_cap(logits, cap) / temperature
        return logits - ops.logsumexp(logits, axis=-1, keepdims=True)

    student = log_probs(hidden, embedding, logit_soft_cap)
    teacher = log_probs(teacher_hidden, teacher_embedding,
                        teacher_logit_soft_cap)
    return ops.sum(ops.exp(teacher) * (teacher - student), axis=-1)
