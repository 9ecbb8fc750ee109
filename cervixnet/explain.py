"""Class-activation maps (Grad-CAM, Grad-CAM++, Score-CAM) for the joint model's ``label`` output.

The maps show which image regions drive the predicted preterm probability of
:func:`cervixnet.models.build_unet_joint` (outputs ``mask`` and ``label``). They are computed with
tf-keras-vis on a *copy* of the model, so the model passed in is never modified::

    from cervixnet import explain

    cams = explain.class_activation_maps(model, images)          # (N, H, W) in [0, 1]
    for item in explain.explain_images(model, images, method="gradcam++"):
        cv2.imwrite(f"{item.index}.png", item.overlay)            # uint8 BGR

How the copy differs from the model (forward values are identical):

- the ``label`` layer's sigmoid is dropped, so gradient methods differentiate the logit
  (the score Grad-CAM++ is defined on; for Grad-CAM only the scale changes);
- ``StopGradient`` layers (``classifier_trains_encoder=False``) become identities. They only
  matter for training; TensorFlow records no operation after a stop-gradient, so without this
  every feature map of the label branch would get a ``None`` gradient;
- only the ``label`` output is kept, as two logits ``[0, logit]``: their softmax is
  ``[1 - p, p]``, which is what Score-CAM (which applies a softmax) needs to score ``p``.

This module needs TensorFlow (tf-keras-vis); ``import cervixnet`` does not import it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import cv2
import keras
import numpy as np

from cervixnet import models
from cervixnet.checks import positive_int
from cervixnet.models.folding import clone_with_weights
from cervixnet.models.stop_gradient import StopGradient

__all__ = [
    "METHODS",
    "TARGETS",
    "Explanation",
    "class_activation_maps",
    "default_layer",
    "explain_images",
    "feature_layers",
    "overlay",
]

METHODS = ("gradcam", "gradcam++", "scorecam")
TARGETS = ("preterm", "control")
LABEL_OUTPUT = "label"
MASK_OUTPUT = "mask"
MASK_THRESHOLD = 0.5
OUTLINE_BGR = (255, 0, 255)  # magenta: a colour the JET colour map never shows
TEXT_BGR = (255, 255, 255)


# --------------------------------------------------------------------------------------------
# The model's graph
# --------------------------------------------------------------------------------------------


def _parents(layer: keras.layers.Layer) -> list[keras.layers.Layer]:
    """The layers whose outputs ``layer`` reads (in the model's functional graph)."""
    return [
        parent.operation
        for node in layer._inbound_nodes
        for parent in node.parent_nodes
        if parent.operation is not layer
    ]


def _label_layer(model: keras.Model) -> keras.layers.Layer:
    """The layer producing the ``label`` output; ``ValueError`` if the model has none."""
    names = list(getattr(model, "output_names", None) or [])
    if not isinstance(model, keras.Model) or LABEL_OUTPUT not in names:
        raise ValueError(
            f"Class-activation maps explain the {LABEL_OUTPUT!r} output of a joint model "
            "(cervixnet.models.build_unet_joint), but this model has none; segmentation-only "
            f"models cannot be explained. Received: model={getattr(model, 'name', model)!r} "
            f"with outputs {names}"
        )
    if not hasattr(model, "_run_through_graph"):
        raise ValueError(
            "Class-activation maps need a functional Keras model. "
            f"Received: model={model.name!r} of type {type(model).__name__}"
        )
    tensor = model.outputs[names.index(LABEL_OUTPUT)]
    layer = tensor._keras_history.operation
    if getattr(layer, "activation", None) is not keras.activations.sigmoid or tuple(
        tensor.shape[1:]
    ) != (1,):
        raise ValueError(
            f"The {LABEL_OUTPUT!r} output must be a (batch, 1) sigmoid layer (a preterm "
            f"probability). Received: layer {layer.name!r} with output shape {tensor.shape} "
            f"and activation {getattr(layer, 'activation', None)!r}"
        )
    return layer


def _is_spatial(layer: keras.layers.Layer) -> bool:
    """True for a layer with a ``(batch, h, w, channels)`` output (a feature map)."""
    return len(layer.output.shape) == 4


def feature_layers(model: keras.Model) -> list[str]:
    """Names of the layers a map can be computed on, in graph order.

    These are the layers with a 4-D output ``(batch, h, w, channels)`` that the ``label`` output
    depends on (the input excluded). With ``classifier_features=("bottleneck",)`` that is the
    encoder and bottleneck layers (and the ``StopGradient`` layers, if any), not the decoder.

    Raises:
        ValueError: the model has no sigmoid ``label`` output.
    """
    label = _label_layer(model)
    ancestors: set[int] = set()
    stack = [label]
    while stack:
        for parent in _parents(stack.pop()):
            if id(parent) not in ancestors:
                ancestors.add(id(parent))
                stack.append(parent)
    return [
        layer.name
        for layer in model.layers
        if id(layer) in ancestors
        and not isinstance(layer, keras.layers.InputLayer)
        and _is_spatial(layer)
    ]


def default_layer(model: keras.Model) -> str:
    """The layer the maps use when ``layer`` is not given.

    Walking the graph back from the ``label`` output through the classifier head (dense,
    dropout, concatenation and global pooling layers, and through ``StopGradient`` layers,
    which are identities in the forward pass), the first 4-D layers met are the feature maps
    the head reads, one per entry of ``classifier_features``. The default is the last of them
    in graph order: ``"bottleneck_relu2"`` for the default joint model (``bottleneck_dropout``
    with ``dropout > 0``), ``"decoder1_relu2"`` when the head also reads ``decoder1``. As in
    Grad-CAM's "last convolutional layer" rule, it is the most processed map the label sees.
    The choice is the same whether or not ``classifier_trains_encoder`` is set: the maps are
    computed on a copy whose ``StopGradient`` layers are identities, so its gradient is the
    label's true derivative, not zero.

    Raises:
        ValueError: the model has no sigmoid ``label`` output, or its head reads no feature map.
    """
    label = _label_layer(model)
    read: set[int] = set()
    seen: set[int] = set()
    stack = [label]
    while stack:
        for parent in _parents(stack.pop()):
            if id(parent) in seen or isinstance(parent, keras.layers.InputLayer):
                continue
            seen.add(id(parent))
            if _is_spatial(parent) and not isinstance(parent, StopGradient):
                read.add(id(parent))
            else:
                stack.append(parent)
    names = [layer.name for layer in model.layers if id(layer) in read]
    if not names:
        raise ValueError(
            f"The {LABEL_OUTPUT!r} output of model {model.name!r} reads no 4-D feature map; "
            "there is nothing to draw a class-activation map on."
        )
    return names[-1]


def _check_layer(model: keras.Model, layer: object) -> str:
    if layer is None:
        return default_layer(model)
    candidates = feature_layers(model)
    if not isinstance(layer, str) or layer not in candidates:
        if isinstance(layer, str) and layer in {item.name for item in model.layers}:
            why = "is not a 4-D feature map that the label output depends on"
        else:
            why = "is not a layer of the model"
        shown = candidates[-6:]
        raise ValueError(
            f"`layer` {why}. Valid layers of model {model.name!r} include: "
            f"{', '.join(shown)} (and {len(candidates) - len(shown)} more, see "
            f"cervixnet.explain.feature_layers). Received: layer={layer!r}"
        )
    return layer


def _explainer_model(model: keras.Model) -> keras.Model:
    """A weight-copied float32 clone: label logits ``[0, z]`` only, ``StopGradient`` -> identity.

    Every layer computes in float32 whatever the model's dtype policy: a model trained in
    ``mixed_bfloat16`` keeps float32 weights, and its maps are then computed at full precision
    (tf-keras-vis' Grad-CAM++ also multiplies float32 scores with the layer's gradients).
    """
    label = _label_layer(model)

    def clone_layer(layer: keras.layers.Layer) -> keras.layers.Layer:
        if isinstance(layer, StopGradient):
            return keras.layers.Identity(name=layer.name, dtype="float32")
        config = layer.get_config()
        config["dtype"] = "float32"
        if layer is label:
            config["activation"] = "linear"
        return layer.__class__.from_config(config)

    clone = clone_with_weights(model, clone_layer)
    logit = clone.get_layer(label.name).output
    logits = keras.layers.Concatenate(name="label_logits", dtype="float32")(
        [keras.ops.zeros_like(logit), logit]
    )
    return keras.Model(clone.inputs, logits, name=f"{model.name}_label_explainer")


# --------------------------------------------------------------------------------------------
# Maps
# --------------------------------------------------------------------------------------------


def _check_images(model: keras.Model, images: object) -> np.ndarray:
    array = np.asarray(images)
    expected = tuple(model.inputs[0].shape[1:]) if len(model.inputs) == 1 else None
    if (
        expected is None
        or array.ndim != 4
        or array.shape[0] == 0
        or not np.issubdtype(array.dtype, np.number)
        or any(e is not None and e != s for e, s in zip(expected, array.shape[1:], strict=True))
    ):
        raise ValueError(
            "`images` must be a non-empty numeric array (N, H, W, C) matching the model's single "
            f"input {tuple(model.inputs[0].shape)}. "
            f"Received: images of shape {array.shape} and dtype {array.dtype}"
        )
    array = array.astype(np.float32, copy=False)
    if not np.all(np.isfinite(array)):
        raise ValueError("`images` must be finite. Received: images with NaN or infinite values")
    return array


def _normalise(cam: np.ndarray, height: int, width: int) -> np.ndarray:
    """``(h, w)`` map -> ``(height, width)`` bilinear resize, min-max scaled to [0, 1]."""
    cam = np.asarray(cam, np.float32)
    cam = np.where(np.isfinite(cam), cam, 0.0)
    if cam.shape != (height, width):
        cam = cv2.resize(cam, (width, height), interpolation=cv2.INTER_LINEAR)
    low, high = float(cam.min()), float(cam.max())
    if high - low <= 1e-12 * max(1.0, abs(high)):
        return np.zeros((height, width), np.float32)
    return np.clip((cam - low) / (high - low), 0.0, 1.0).astype(np.float32)


def _negative_logit(output: Any) -> Any:
    """tf-keras-vis score of the ``"control"`` target: ``-z`` per image (column 1 is ``z``)."""
    return -output[:, 1]


def class_activation_maps(
    model: keras.Model,
    images: np.ndarray,
    method: str = "gradcam",
    layer: str | None = None,
    *,
    target: str = "preterm",
    batch_size: int = 16,
    max_n: int | None = None,
) -> np.ndarray:
    """Class-activation maps of the preterm probability (``label`` output) per image.

    Args:
        model: a joint model (outputs ``mask`` and ``label``); it is not modified.
        images: float32 ``(N, H, W, C)`` in [0, 1], as the model takes them.
        method: ``"gradcam"`` (default), ``"gradcam++"`` or ``"scorecam"`` (see ``METHODS``).
            The gradient methods differentiate the label logit; Score-CAM (gradient-free)
            weights each channel of the layer by ``p(preterm)`` of the image masked by it.
        layer: name of a 4-D layer the label depends on (see :func:`feature_layers`); ``None``
            (default) takes :func:`default_layer`.
        target: ``"preterm"`` (default): regions that raise ``p(preterm)`` (the score is the
            label logit ``z``, or ``p`` for Score-CAM); ``"control"``: regions that lower it
            (score ``-z``, or ``1 - p``). As the maps keep positive evidence only (ReLU), an
            image the model calls a control may have an all-zero ``"preterm"`` map.
        batch_size: images per tf-keras-vis call (and per Score-CAM prediction batch).
        max_n: Score-CAM only: use the ``max_n`` channels of highest spatial variance (Faster
            Score-CAM, tf-keras-vis ``max_N``); ``None`` (default) uses every channel. Capped at
            the layer's channel count.

    Returns:
        float32 ``(N, H, W)`` maps, bilinearly resized to the input size and min-max scaled to
        [0, 1] per image (an image whose map is constant, e.g. all zero after the ReLU, gets
        zeros). Deterministic for a given model and input.

    Raises:
        ValueError: unknown ``method`` or ``target``, ``layer`` not a valid layer of the
            model, a model without a ``label`` output (segmentation-only), invalid ``images``.
    """
    if not isinstance(method, str) or method not in METHODS:
        raise ValueError(
            f"Unknown class-activation method. Expected one of: {', '.join(METHODS)}. "
            f"Received: method={method!r}"
        )
    if not isinstance(target, str) or target not in TARGETS:
        raise ValueError(
            f"Unknown `target`. Expected one of: {', '.join(TARGETS)}. Received: target={target!r}"
        )
    _label_layer(model)
    layer_name = _check_layer(model, layer)
    array = _check_images(model, images)
    batch_size = positive_int("batch_size", batch_size)
    if max_n is not None:
        max_n = positive_int("max_n", max_n)

    # tf-keras-vis imports TensorFlow; import it only when maps are asked for.
    from tf_keras_vis.gradcam import Gradcam
    from tf_keras_vis.gradcam_plus_plus import GradcamPlusPlus
    from tf_keras_vis.scorecam import Scorecam
    from tf_keras_vis.utils.scores import CategoricalScore

    explainer = _explainer_model(model)
    feature = explainer.get_layer(layer_name)
    # The explainer outputs [0, z]. Gradient methods score z (column 1) or -z; Score-CAM applies
    # a softmax first, giving [1 - p, p], and scores column 1 (p) or column 0 (1 - p).
    if method == "scorecam":
        score = CategoricalScore(1 if target == "preterm" else 0)
    elif target == "preterm":
        score = CategoricalScore(1)
    else:
        score = _negative_logit
    options: dict[str, Any] = {
        "penultimate_layer": feature,
        "seek_penultimate_conv_layer": False,
        "expand_cam": False,
        "normalize_cam": False,
    }
    if method == "scorecam":
        visualizer = Scorecam(explainer)
        channels = int(feature.output.shape[-1])
        options.update(batch_size=batch_size, max_N=None if max_n is None else min(max_n, channels))
    elif method == "gradcam++":
        visualizer = GradcamPlusPlus(explainer)
    else:
        visualizer = Gradcam(explainer)

    height, width = array.shape[1:3]
    maps = []
    interactive = keras.utils.is_interactive_logging_enabled()
    keras.utils.disable_interactive_logging()  # no progress bar from Score-CAM's predict()
    try:
        for start in range(0, len(array), batch_size):
            cams = np.asarray(visualizer(score, array[start : start + batch_size], **options))
            maps.extend(_normalise(cam, height, width) for cam in cams)
    finally:
        if interactive:
            keras.utils.enable_interactive_logging()
    return np.stack(maps).astype(np.float32)


# --------------------------------------------------------------------------------------------
# Pictures
# --------------------------------------------------------------------------------------------


def _gray_uint8(image: object) -> np.ndarray:
    array = np.asarray(image)
    if array.ndim == 3:
        array = array.mean(axis=-1) if array.shape[-1] > 1 else array[..., 0]
    if array.ndim != 2 or array.size == 0:
        raise ValueError(
            "`image` must be (H, W) or (H, W, C). Received: image of shape "
            f"{np.asarray(image).shape}"
        )
    if array.dtype == np.uint8:
        return array
    array = np.nan_to_num(array.astype(np.float32), nan=0.0)
    return np.round(np.clip(array, 0.0, 1.0) * 255.0).astype(np.uint8)


def _check_map(value: object, name: str, shape: tuple[int, int]) -> np.ndarray:
    array = np.asarray(value, dtype=np.float32)
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.shape != shape:
        raise ValueError(
            f"`{name}` must have the image's height and width {shape}. "
            f"Received: {name} of shape {np.asarray(value).shape}"
        )
    return np.clip(np.nan_to_num(array, nan=0.0), 0.0, 1.0)


def overlay(
    image: np.ndarray,
    cam: np.ndarray,
    mask_prob: np.ndarray | None = None,
    probability: float | None = None,
    alpha: float = 0.4,
    min_side: int = 0,
) -> np.ndarray:
    """A picture of a map: JET heat map on the grayscale image, mask outline, probability.

    Args:
        image: ``(H, W)`` or ``(H, W, C)``, float in [0, 1] or uint8; several channels are
            shown as their mean.
        cam: ``(H, W)`` map in [0, 1] (from :func:`class_activation_maps`).
        mask_prob: optional ``(H, W)`` or ``(H, W, 1)`` predicted mask probability; its outline
            at ``> 0.5`` is drawn in magenta (a colour absent from the JET map), 1 pixel wide.
        probability: optional ``p(preterm)`` in [0, 1], written ``"p(preterm) = 0.73"`` in the
            top-left corner (white on a black edge; shrunk to fit narrow images).
        alpha: heat-map opacity where the map is 1, in [0, 1] (default 0.4). The opacity is
            ``alpha * cam`` per pixel, so regions the map ignores keep the plain image.
        min_side: an image whose shorter side is below this is first enlarged by the smallest
            whole factor that reaches it (bilinear), so that outline and text stay readable on
            small network inputs; 0 (default) keeps the input size.

    Returns:
        uint8 BGR ``(H * k, W * k, 3)`` (``k`` = 1 unless enlarged), ready for ``cv2.imwrite``.

    Raises:
        ValueError: shapes that do not match, ``alpha`` or ``probability`` outside [0, 1].
    """
    gray = _gray_uint8(image)
    shape = gray.shape
    heat_weight = _check_map(cam, "cam", shape)
    if mask_prob is not None:
        mask_prob = _check_map(mask_prob, "mask_prob", shape)
    factor = math.ceil(min_side / min(shape)) if min_side > min(shape) else 1
    if factor > 1:
        size = (shape[1] * factor, shape[0] * factor)
        gray = cv2.resize(gray, size, interpolation=cv2.INTER_LINEAR)
        heat_weight = np.clip(cv2.resize(heat_weight, size, interpolation=cv2.INTER_LINEAR), 0, 1)
        if mask_prob is not None:
            mask_prob = cv2.resize(mask_prob, size, interpolation=cv2.INTER_LINEAR)
        shape = gray.shape
    if isinstance(alpha, bool) or not isinstance(alpha, int | float) or not 0 <= alpha <= 1:
        raise ValueError(f"`alpha` must be a number in [0, 1]. Received: alpha={alpha!r}")
    heat = cv2.applyColorMap(np.round(heat_weight * 255).astype(np.uint8), cv2.COLORMAP_JET)
    weight = (float(alpha) * heat_weight)[..., None]
    base = cv2.cvtColor(gray, cv2.COLOR_GRAY2BGR).astype(np.float32)
    picture = np.round(base * (1.0 - weight) + heat.astype(np.float32) * weight)
    picture = np.clip(picture, 0, 255).astype(np.uint8)

    if mask_prob is not None:
        binary = (mask_prob > MASK_THRESHOLD).astype(np.uint8)
        contours, _ = cv2.findContours(binary, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
        cv2.drawContours(picture, contours, -1, OUTLINE_BGR, factor if factor > 1 else 1)

    if probability is not None:
        if (
            isinstance(probability, bool)
            or not isinstance(probability, int | float | np.floating | np.integer)
            or not 0 <= float(probability) <= 1
        ):
            raise ValueError(
                f"`probability` must be a number in [0, 1]. Received: probability={probability!r}"
            )
        text = f"p(preterm) = {float(probability):.2f}"
        font = cv2.FONT_HERSHEY_SIMPLEX
        (text_width, _), _ = cv2.getTextSize(text, font, 1.0, 1)
        # About 1/400 of the image side, at least 0.35, but never wider than the image.
        scale = min(max(0.35, min(shape) / 400), (shape[1] - 4) / text_width)
        (_, text_height), _ = cv2.getTextSize(text, font, scale, 1)
        corner = (2, 2 + text_height)
        cv2.putText(picture, text, corner, font, scale, (0, 0, 0), 2, cv2.LINE_AA)
        cv2.putText(picture, text, corner, font, scale, TEXT_BGR, 1, cv2.LINE_AA)
    return picture


@dataclass(frozen=True)
class Explanation:
    """One image's prediction and map (:func:`explain_images`).

    Attributes:
        index: position of the image in the batch.
        probability: predicted ``p(preterm)``.
        mask_prob: float32 ``(H, W)`` predicted mask probability, of the organ for several
            classes (``None`` if the model has no ``mask`` output).
        cam: float32 ``(H, W)`` class-activation map in [0, 1].
        overlay: uint8 BGR ``(H, W, 3)`` picture (:func:`overlay`).
        method, layer, target: how the map was computed (:func:`class_activation_maps`).
    """

    index: int
    probability: float
    mask_prob: np.ndarray | None
    cam: np.ndarray
    overlay: np.ndarray
    method: str
    layer: str
    target: str


def explain_images(
    model: keras.Model,
    images: np.ndarray,
    method: str = "gradcam",
    layer: str | None = None,
    *,
    target: str = "preterm",
    alpha: float = 0.4,
    batch_size: int = 16,
    max_n: int | None = None,
    min_side: int = 0,
) -> list[Explanation]:
    """Predict mask and ``p(preterm)`` and draw the class-activation map of each image.

    Args:
        model, images, method, layer, target, batch_size, max_n: as in
            :func:`class_activation_maps`.
        alpha, min_side: as in :func:`overlay`.

    Returns:
        One :class:`Explanation` per image, in order; ``overlay`` shows the map, the predicted
        mask outline and ``p(preterm)``.
    """
    cams = class_activation_maps(
        model, images, method, layer, target=target, batch_size=batch_size, max_n=max_n
    )
    layer_name = default_layer(model) if layer is None else layer
    array = _check_images(model, images)
    labels, masks = [], []
    for start in range(0, len(array), batch_size):
        named = models.named_outputs(
            model, model(array[start : start + batch_size], training=False)
        )
        labels.append(keras.ops.convert_to_numpy(named[LABEL_OUTPUT]).reshape(-1))
        if MASK_OUTPUT in named:
            mask = keras.ops.convert_to_numpy(named[MASK_OUTPUT])
            # One class: its probability; several: the organ's, 1 - p(background).
            masks.append(mask[..., 0] if mask.shape[-1] == 1 else 1.0 - mask[..., 0])
    probabilities = np.concatenate(labels).astype(np.float64)
    mask_probs = np.concatenate(masks).astype(np.float32) if masks else None

    explanations = []
    for index, cam in enumerate(cams):
        mask_prob = None if mask_probs is None else mask_probs[index]
        probability = float(probabilities[index])
        picture = overlay(
            array[index],
            cam,
            mask_prob=mask_prob,
            probability=probability if math.isfinite(probability) else None,
            alpha=alpha,
            min_side=min_side,
        )
        explanations.append(
            Explanation(index, probability, mask_prob, cam, picture, method, layer_name, target)
        )
    return explanations


def gradcam_overlays(model: keras.Model, images: np.ndarray) -> list[np.ndarray]:
    """Grad-CAM overlays of ``images`` for ``p(preterm)``, enlarged to at least 256 pixels a
    side: the ``explain`` that ``cervixnet evaluate`` gives ``cervixnet.reporting.evaluate_run``.
    """
    return [explanation.overlay for explanation in explain_images(model, images, min_side=256)]
