"""Greedy decoding as a plain torch loop over `TorchDecodeStep`.

keras-hub's `GreedySampler` runs each step through Keras ops on torch
(`ops.slice_update` builds index grids, `ops.where`, a softmax and an argmax
through `keras.ops`, the loop variables flattened by `ops.while_loop`):
about a tenth of a one-token step of the benchmark model. When the task's
sampler is exactly a `GreedySampler` and the functional torch step runs,
`EncDecGenerationMixin.generate_step` calls `greedy_decode` instead, inside
`torch.inference_mode`. It is `Sampler.__call__`'s loop in torch ops: the
same softmax of the float32 logits over the temperature, the same argmax,
prompt tokens kept where the mask is set, the same stop condition, so the
tokens are identical.
"""

from keras_hub.samplers import GreedySampler


def greedy_applies(sampler, fast_step):
    """Whether `greedy_decode` stands in for `sampler`.

    Only an exact `GreedySampler` (a subclass may change how a token is
    picked) with a functional torch step (`fast_decode.decode_step_for`).

    Args:
        sampler: the task's `keras_hub.samplers.Sampler`.
        fast_step: a `TorchDecodeStep`, or None.

    Returns:
        bool.

    Examples:

    >>> from keras_hub.samplers import GreedySampler, TopKSampler
    >>> greedy_applies(GreedySampler(), None)
    False
    >>> greedy_applies(TopKSampler(k=5), object())
    False
    """
    return fast_step is not None and type(sampler) is GreedySampler


def greedy_decode(
    step, prompt, mask, cache, index, stop_token_ids=None, temperature=1.0
):
    """Fills `prompt` from position `index` on with greedy tokens.

    Args:
        step: a `TorchDecodeStep`, prefilled up to position `index - 1`
            (exclusive) in `cache`.
        prompt: int tensor `[batch, max_length]`, the (right-padded)
            prompts; not modified.
        mask: bool tensor `[batch, max_length]`, true on prompt tokens (kept
            as they are).
        cache: the structure `step.start` returned, prefilled.
        index: int, the first position to fill (at least 1).
        stop_token_ids: tuple of ints or None. The loop stops once every
            row has a stop token outside its prompt.
        temperature: float, the sampler's temperature (the argmax of the
            softmax over it, as `GreedySampler` computes it).

    Returns:
        int tensor `[batch, max_length]`, the prompt's dtype.

    Examples:

    >>> import numpy as np
    >>> from keras_encdec.models import T5GemmaSeq2SeqLM
    >>> lm = T5GemmaSeq2SeqLM.from_preset(
    ...     "t5gemma_tiny_random", preprocessor=None
    ... )
    >>> lm.compile(sampler="greedy")  # generate runs greedy_decode on torch
    >>> out = lm.generate({
    ...     "encoder_token_ids": np.array([[2, 5, 6, 1]]),
    ...     "encoder_padding_mask": np.array([[1, 1, 1, 1]]),
    ...     "decoder_token_ids": np.array([[2, 0, 0, 0]]),
    ...     "decoder_padding_mask": np.array([[1, 0, 0, 0]]),
    ... }, stop_token_ids=(1,))
    """
    import torch

    index = int(index)
    if index < 1:
        raise ValueError(
            "greedy_decode needs at least one prompt token in every row (the "
            f"start token); received a first free position of {index}"
        )
    prompt = torch.as_tensor(prompt).clone()
    mask = torch.as_tensor(mask).bool()
    # Positions where some row keeps its prompt token (host-side, once).
    has_prompt = mask.any(dim=0).tolist()
    done = None
    if stop_token_ids is not None:
        stops = torch.as_tensor(list(stop_token_ids), dtype=prompt.dtype)
        done = (torch.isin(prompt, stops) & ~mask).any(dim=-1)
    for position in range(index, prompt.shape[1]):
        if done is not None and bool(done.all()):
            break
        previous = position - 1
        logits, _, cache = step(
            prompt[:, previous:position], cache, previous
        )
        logits = logits[:, 0].float()
        if temperature != 1.0:  # x / 1.0 is x: skip the op.
            logits = logits / temperature
        probabilities = torch.softmax(logits, dim=-1)
        token = probabilities.argmax(dim=-1).to(prompt.dtype)
        if has_prompt[position]:
            token = torch.where(mask[:, position], prompt[:, position], token)
        prompt[:, position] = token
        if done is not None:
            done |= torch.isin(token, stops) & ~mask[:, position]
    return prompt
