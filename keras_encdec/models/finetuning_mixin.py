"""Fine-tuning methods shared by every backbone.

`FineTuningMixin` gives a backbone the `remat` switch, `enable_lora`,
`save_lora_weights`,
`load_lora_weights`, `merge_lora` and `get_layout_map`, implemented in
`keras_encdec.models.lora` and `keras_encdec.models.layout_map` (also
exported by `keras_encdec.training`, which builds on `models`).
"""

from keras_encdec import weight_roles
from keras_encdec.models import layout_map
from keras_encdec.models import lora


class FineTuningMixin:
    """Fine-tuning methods of a keras-encdec backbone (see the module).

    The backbone provides `encoder_layers` and `decoder_layers` (blocks with
    a validating `remat` attribute and `weight_roles()`), `token_embedding`,
    `decoder_token_embedding` (the same layer when the stacks share one
    table), `encoder_norm`, `decoder_norm` and optionally `vision_encoder`.
    """

    def weight_roles(self):
        """Every weight with its role, as `(stack, layer_index, role,
        variable)`.

        Block weights carry their block's index and a role such as
        `"attention.query"` or `"mlp.down"`; weights outside the blocks
        (embeddings, final norms, the vision tower's embeddings and the
        projector) have index `None`. Each weight appears exactly once. See
        `keras_encdec.weight_roles` for the vocabulary.

        Returns:
            list of `(str, int or None, str, keras.Variable)`.

        Examples:

        >>> from keras_encdec.models import T5GemmaBackbone
        >>> backbone = T5GemmaBackbone.from_preset("t5gemma_tiny_random")
        >>> rows = backbone.weight_roles()
        >>> len(rows) == len(backbone.weights)
        True
        >>> [row[:3] for row in rows if row[2] == "cross_attention.key"][0]
        ('decoder', 0, 'cross_attention.key')
        """
        return list(weight_roles.model_weight_roles(self))

    def non_block_weight_roles(self):
        """Yields `(stack, role, variable)` for the weights outside the
        blocks (see `weight_roles`)."""
        shared = self.decoder_token_embedding is self.token_embedding
        tables = [("decoder", self.decoder_token_embedding)]
        if not shared:
            tables.insert(0, ("encoder", self.token_embedding))
        for stack, table in tables:
            for role, variable in weight_roles.embedding_roles(table).items():
                yield stack, role, variable
        yield "encoder", "final_norm", self.encoder_norm.scale
        yield "decoder", "final_norm", self.decoder_norm.scale
        vision = getattr(self, "vision_encoder", None)
        if vision is not None:
            for role, variable in vision.weight_roles().items():
                yield "vision", role, variable

    @property
    def remat(self):
        """Whether training recomputes each block's activations.

        With `True`, every encoder and decoder block keeps only its input for
        the backward pass and recomputes the rest there (`keras.remat`), so
        activation memory no longer grows with the number of blocks, for
        about one more forward pass of compute. Inference and generation are
        unchanged. Set it before `compile()` (a compiled train function keeps
        the setting it was traced with).
        """
        return self._remat

    @remat.setter
    def remat(self, value):
        # Every block validates `value` and has the same dropout rates, so
        # the first one raises (a non-bool, dropout with remat) before any
        # block has changed.
        for layer in self.encoder_layers + self.decoder_layers:
            layer.remat = value
        self._remat = value

    def enable_lora(
        self, rank, target_layer_names=None, *, alpha=None, target="attention"
    ):
        """Freezes every weight and adds LoRA adapters to the targets.

        `target="attention"` covers query, key, value and attention_output
        of every self- and cross-attention in the encoder and decoder.
        Embeddings and norms always stay frozen. The adapters are float32
        (`lora_kernel_a`, `lora_kernel_b`); the output is
        `x @ (W + alpha / rank * A @ B)`, and `B` starts at zero, so the
        model is unchanged until trained.

        Args:
            rank: int. LoRA rank.
            target_layer_names: list of str or None. keras-hub's argument;
                when given it replaces `target`. Defaults to `None`.
            alpha: float or None. LoRA scale numerator. Defaults to `rank`
                (scale 1).
            target: str or list of str. `"attention"`, `"attention+mlp"`,
                `"all"`, or a list of aliases
                (`"decoder.cross_attention"`, `"encoder.mlp.ffw_linear"`,
                `"decoder"`), bare layer names (`"query"`) or globs over
                paths (`"decoder_layer_*/self_attention/*"`). See
                `keras_encdec.models.lora.resolve_lora_targets`. Defaults to
                `"attention"`.

        Returns:
            int. The number of trainable parameters (also logged).

        Examples:

        >>> import numpy as np
        >>> from keras_encdec.models import T5GemmaBackbone
        >>> backbone = T5GemmaBackbone.from_preset("t5gemma_tiny_random")
        >>> count = backbone.enable_lora(4, target="decoder.cross_attention")
        >>> count == sum(int(np.prod(v.shape))
        ...              for v in backbone.trainable_weights)
        True
        """
        if target_layer_names is not None:
            target = list(target_layer_names)
        return lora.enable_lora(self, rank, target=target, alpha=alpha)

    def save_lora_weights(self, filepath, overwrite=False):
        """Saves only the LoRA factors, with rank, alpha and targets.

        The file is written atomically; an existing adapter file is
        replaced, any other existing file refused unless `overwrite`.

        Args:
            filepath: str. A path ending in `.lora.h5`.
            overwrite: bool. Replace an existing file that is not an
                adapter. Defaults to `False`.

        Examples:

        >>> import os, tempfile
        >>> from keras_encdec.models import T5GemmaBackbone
        >>> backbone = T5GemmaBackbone.from_preset("t5gemma_tiny_random")
        >>> _ = backbone.enable_lora(2)
        >>> path = os.path.join(tempfile.mkdtemp(), "adapter.lora.h5")
        >>> backbone.save_lora_weights(path)
        >>> fresh = T5GemmaBackbone.from_preset("t5gemma_tiny_random")
        >>> fresh.load_lora_weights(path)
        >>> len(fresh.trainable_weights) == len(backbone.trainable_weights)
        True
        """
        lora.save_lora_weights(self, filepath, overwrite=overwrite)

    def load_lora_weights(self, filepath):
        """Loads an adapter file; enables LoRA with its settings if needed.

        Args:
            filepath: str. A file written by `save_lora_weights`.
        """
        lora.load_lora_weights(self, filepath)

    def merge_lora(self):
        """Folds the adapters into the base kernels and removes them.

        Afterwards the backbone is a plain model (every weight trainable)
        that exports to transformers. Compiled functions of a task holding
        this backbone are reset by `keras_encdec.training.merge_lora(task)`;
        eager calls need nothing.

        Returns:
            int. The number of merged projections.

        Examples:

        >>> from keras_encdec.models import T5GemmaBackbone
        >>> backbone = T5GemmaBackbone.from_preset("t5gemma_tiny_random")
        >>> _ = backbone.enable_lora(2)
        >>> backbone.merge_lora() > 0
        True
        """
        return lora.merge_lora(self)

    @staticmethod
    def get_layout_map(
        device_mesh,
        model_parallel_dim_name="model",
        data_parallel_dim_name="batch",
    ):
        """The `keras.distribution.LayoutMap` for `ModelParallel`.

        Every weight of rank >= 2 is mapped: attention heads and the MLP
        width go over the model axis, the other matrix dimension over the
        data axis; embeddings shard vocabulary over the model axis and width
        over the data axis; LoRA factors follow their kernel. A sharded
        dimension must be divisible by its axis size (e.g. `num_kv_heads`
        by the model axis). See `keras_encdec.models.layout_map`.

        Args:
            device_mesh: `keras.distribution.DeviceMesh`. The mesh.
            model_parallel_dim_name: str. Mesh axis for model parallelism.
                Defaults to `"model"`.
            data_parallel_dim_name: str. Mesh axis for data parallelism.
                Defaults to `"batch"`.

        Returns:
            `keras.distribution.LayoutMap`.

        Examples:

        >>> import keras
        >>> mesh = keras.distribution.DeviceMesh(
        ...     (1, 1), ["batch", "model"], keras.distribution.list_devices()[:1])
        >>> from keras_encdec.models import T5GemmaBackbone
        >>> layout_map = T5GemmaBackbone.get_layout_map(mesh)
        >>> layout_map["decoder_layer_0/mlp/ffw_linear/kernel"].axes
        ('model', 'batch')
        """
        return layout_map.get_layout_map(
            device_mesh, model_parallel_dim_name, data_parallel_dim_name
        )
