"""transformers' names and layouts of one encoder-decoder block's weights.

T5Gemma and T5Gemma 2 name their block tensors alike (the merged attention
is `self_attn`), and both store torch `Linear` kernels `[out, in]`. Each
block weight is found by its role (`keras_encdec.weight_roles`), named by
`BLOCK_TENSORS`, and reshaped between the two layouts by `role_layouts`.
"""

from keras_encdec.convert.weight_mapping import named_block_roles
from keras_encdec.weight_roles import MLP_PROJECTIONS
from keras_encdec.weight_roles import split_role


# Layout changes between transformers (torch Linear [out, in]) and ours.
def heads_in(num_heads, head_dim):
    """q/k/v: [heads*head_dim, d] -> [d, heads, head_dim]."""
    return lambda w: w.T.reshape(w.shape[1], num_heads, head_dim)


def heads_in_back(w):
    """[d, heads, head_dim] -> [heads*head_dim, d]."""
    return w.reshape(w.shape[0], -1).T


def heads_out(num_heads, head_dim):
    """o: [d, heads*head_dim] -> [heads, head_dim, d]."""
    return lambda w: w.T.reshape(num_heads, head_dim, w.shape[0])


def heads_out_back(w):
    """[heads, head_dim, d] -> [d, heads*head_dim]."""
    return w.reshape(-1, w.shape[-1]).T


def transpose(w):
    return w.T


def identity(w):
    return w


# Sandwich-norm role -> its name in a block, in transformers and keras-hub.
SANDWICH_NORM_TENSORS = {
    "attention.pre_norm": "pre_self_attn_layernorm",
    "attention.post_norm": "post_self_attn_layernorm",
    "mlp.pre_norm": "pre_feedforward_layernorm",
    "mlp.post_norm": "post_feedforward_layernorm",
    "cross_attention.pre_norm": "pre_cross_attn_layernorm",
    "cross_attention.post_norm": "post_cross_attn_layernorm",
}
# Block role -> transformers tensor under `<stack>.layers.<i>.` (T5Gemma and
# T5Gemma 2 name them alike; the merged attention is `self_attn`). The order
# is the order tensors are written in.
BLOCK_TENSORS = {
    "attention.query": "self_attn.q_proj",
    "attention.key": "self_attn.k_proj",
    "attention.value": "self_attn.v_proj",
    "attention.output": "self_attn.o_proj",
    "cross_attention.query": "cross_attn.q_proj",
    "cross_attention.key": "cross_attn.k_proj",
    "cross_attention.value": "cross_attn.v_proj",
    "cross_attention.output": "cross_attn.o_proj",
    "attention.query_norm": "self_attn.q_norm",
    "attention.key_norm": "self_attn.k_norm",
    **SANDWICH_NORM_TENSORS,
    "mlp.gate": "mlp.gate_proj",
    "mlp.up": "mlp.up_proj",
    "mlp.down": "mlp.down_proj",
}


def role_layouts(role, variable):
    """`(to_keras, to_hf)` of one block weight, from its role and shape."""
    _, weight = split_role(role)
    if weight in ("query", "key", "value"):  # [d, heads, head_dim]
        return heads_in(*variable.shape[1:]), heads_in_back
    if weight == "output":  # [heads, head_dim, d]
        return heads_out(*variable.shape[:2]), heads_out_back
    if weight in MLP_PROJECTIONS:
        return transpose, transpose
    return identity, identity


def block_weight_map(block, prefix):
    """Yields `(variable, hf_name, to_keras, to_hf)` for every weight of
    one block, read from its `weight_roles()`.

    Args:
        block: a T5Gemma or T5Gemma 2 encoder or decoder block.
        prefix: str. E.g. `"model.decoder.layers.3"`.
    """
    for role, variable, name in named_block_roles(
        block, BLOCK_TENSORS, "transformers"
    ):
        to_keras, to_hf = role_layouts(role, variable)
        yield variable, f"{prefix}.{name}.weight", to_keras, to_hf
