"""Copies of a model for inference: in float32, and with its batch norms folded.

A model trained under a mixed policy (``mixed_bfloat16``, ``mixed_float16``) keeps float32
weights; :func:`float32_copy` computes with them in float32, as ``cervixnet export`` serves
every model (portable to CPUs without 16-bit arithmetic, and the folding below needs it).

Batch norms folded into the convolutions before them:

In inference a batch norm is a per-channel affine map of its input,
``y = x * scale + offset`` with ``scale = gamma / sqrt(moving_variance + epsilon)`` and
``offset = beta - moving_mean * scale``. After a convolution without an activation it can be
folded into that convolution's kernel and bias: ``kernel * scale`` and
``bias * scale + offset``. The folded model computes the same function (to float round-off)
with one pass over each activation fewer, and on TensorFlow's CPU path the graph optimiser
then fuses each convolution with its bias and ReLU into one oneDNN primitive: served this way
the default joint model ran 1.3 to 1.8 x as fast at batch 1, 8 and 32 on a 2-core CPU
(docs/performance.md). Training needs the unfolded model: the batch
statistics are not constants there.
"""

from __future__ import annotations

from collections.abc import Callable

import keras
import numpy as np


def _consumers(model: keras.Model) -> dict[int, list[object]]:
    """id(operation) -> the operations of ``model`` (or ``"output"``) that read its outputs."""
    consumers: dict[int, list[object]] = {}
    for nodes in model._nodes_by_depth.values():
        for node in nodes:
            for tensor in node.input_tensors:
                producer = tensor._keras_history.operation
                consumers.setdefault(id(producer), []).append(node.operation)
    for tensor in model.outputs:
        consumers.setdefault(id(tensor._keras_history.operation), []).append("output")
    return consumers


def _called_once(layer: keras.layers.Layer) -> bool:
    return len(layer._inbound_nodes) == 1


def _float32(layer: keras.layers.Layer) -> bool:
    return layer.compute_dtype == "float32" and layer.variable_dtype == "float32"


def _all_float32(model: keras.Model) -> bool:
    """Whether every layer of ``model``, nested models' too, computes and stores in float32."""
    return all(
        _all_float32(layer) if isinstance(layer, keras.Model) else _float32(layer)
        for layer in model.layers
    )


def policy_name(model: keras.Model) -> str:
    """The policy ``model`` was built under, e.g. ``"mixed_bfloat16"``, read from its layers.

    A model loaded from a ``.keras`` file keeps its layers' policies but not the global one it
    was built with. Under a mixed policy some layers with weights still compute in float32
    (the joint model's classification branch, layers narrower than 16 channels under
    ``mixed_bfloat16``), so the model's policy is the 16-bit one most of its other layers with
    weights take; ``"float32"`` when there is none, ``model.dtype_policy`` where no layer has
    weights.
    """
    names = [layer.dtype_policy.name for layer in model.layers if layer.weights]
    mixed = [name for name in names if name != "float32"]
    if mixed:
        return max(mixed, key=mixed.count)
    return "float32" if names else model.dtype_policy.name


def float32_copy(model: keras.Model) -> keras.Model:
    """``model`` with every layer computing in float32, and the same (float32) weights.

    Returns ``model`` itself when every layer already computes and stores in float32.
    Otherwise a clone whose layers take the ``float32`` policy, each layer's weights copied
    exactly (a mixed policy stores them in float32): the function the model's weights define,
    computed without 16-bit rounding. A nested model becomes its own ``float32_copy``.
    """
    if _all_float32(model):
        return model

    def clone(layer: keras.layers.Layer) -> keras.layers.Layer:
        if isinstance(layer, keras.Model):
            return float32_copy(layer)
        config = layer.get_config()
        config["dtype"] = "float32"
        return layer.__class__.from_config(config)

    return clone_with_weights(model, clone)


def clone_with_weights(
    model: keras.Model, clone_function: Callable[[keras.layers.Layer], keras.layers.Layer]
) -> keras.Model:
    """``keras.models.clone_model(model, clone_function=...)`` with each layer's weights copied.

    The weights are copied layer by layer, by name, into the clone's layer of the same name.
    """
    copy = keras.models.clone_model(model, clone_function=clone_function)
    for layer in model.layers:
        if layer.weights:
            copy.get_layer(layer.name).set_weights(layer.get_weights())
    return copy


def foldable_pairs(model: keras.Model) -> list[tuple[keras.layers.Conv2D, keras.layers.Layer]]:
    """The ``(convolution, batch norm)`` pairs of ``model`` that :func:`fold_batch_norms` folds.

    A pair is a ``keras.layers.Conv2D`` (channels last, no activation) whose only reader is a
    ``keras.layers.BatchNormalization`` (or a subclass, such as ``FusedBatchNormalization``)
    over the last axis, both called once in ``model``'s own graph, computing and storing their
    weights in float32 (under a 16-bit policy the folded kernel would round differently), and
    the convolution's output not a model output. Layers inside nested models are not looked at.
    """
    consumers = _consumers(model)
    pairs = []
    for layer in model.layers:
        if not isinstance(layer, keras.layers.BatchNormalization) or not _called_once(layer):
            continue
        if layer.axis not in (-1, 3) or not _float32(layer):
            continue
        conv = layer._inbound_nodes[0].input_tensors[0]._keras_history.operation
        if (
            type(conv) is not keras.layers.Conv2D
            or conv.data_format != "channels_last"
            or conv.activation is not keras.activations.linear
            or not _called_once(conv)
            or not _float32(conv)
            or consumers.get(id(conv)) != [layer]
        ):
            continue
        pairs.append((conv, layer))
    return pairs


def fold_batch_norms(model: keras.Model) -> keras.Model:
    """An inference copy of ``model`` with its batch norms folded into the convolutions.

    Each pair of :func:`foldable_pairs` becomes a ``Conv2D`` with a bias (same name and
    configuration otherwise) holding ``kernel * scale`` and ``bias * scale + offset``,
    followed by a ``keras.layers.Identity`` with the batch norm's name, so the layer names
    (and Grad-CAM's layer look-ups) stay as they were. Every other layer is shared with
    ``model``, weights included. The copy computes ``model(x, training=False)`` to float32
    round-off; it is for inference only (``model.trainable`` weights are shared, the folded
    kernels are copies).

    Args:
        model: a Functional ``keras.Model``, for instance one of ``cervixnet.models.get``'s.

    Returns:
        A new Functional model with the same inputs, outputs and output names; ``model``
        itself when nothing is foldable. ``model`` is not changed.
    """
    pairs = foldable_pairs(model)
    if not pairs:
        return model
    convs = {id(conv): conv for conv, _ in pairs}
    norms = {id(norm) for _, norm in pairs}

    def clone(layer: keras.layers.Layer) -> keras.layers.Layer:
        if id(layer) in convs:
            config = layer.get_config()
            config.update(use_bias=True, bias_initializer="zeros")
            return keras.layers.Conv2D.from_config(config)
        if id(layer) in norms:
            return keras.layers.Identity(name=layer.name, dtype=layer.dtype_policy)
        return layer

    def call(layer: keras.layers.Layer, *args: object, **kwargs: object) -> object:
        if isinstance(layer, keras.layers.Identity):  # the batch norm's training and mask
            return layer(args[0])
        return layer(*args, **kwargs)

    folded = keras.models.clone_model(model, clone_function=clone, call_function=call)
    for conv, norm in pairs:
        kernel = keras.ops.convert_to_numpy(conv.kernel).astype(np.float64)
        channels = kernel.shape[-1]
        bias = _values(conv.bias, channels) if conv.use_bias else np.zeros(channels)
        gamma = _values(norm.gamma, channels) if norm.scale else np.ones(channels)
        beta = _values(norm.beta, channels) if norm.center else np.zeros(channels)
        mean = _values(norm.moving_mean, channels)
        variance = _values(norm.moving_variance, channels)
        scale = gamma / np.sqrt(variance + norm.epsilon)
        offset = beta - mean * scale
        target = folded.get_layer(conv.name)
        target.kernel.assign((kernel * scale).astype("float32"))
        target.bias.assign((bias * scale + offset).astype("float32"))
    return folded


def _values(variable: keras.Variable, channels: int) -> np.ndarray:
    values = keras.ops.convert_to_numpy(variable).astype(np.float64)
    if values.shape != (channels,):
        raise ValueError(
            f"Weight {variable.path!r} has shape {values.shape}; expected "
            f"({channels},), the folded convolution's output channels."
        )
    return values
