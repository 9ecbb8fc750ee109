"""Model builders: U-Net, FCN-8s, DeepLabv3 and the joint U-Net (mask + preterm label).

Every builder returns a Keras 3 Functional ``keras.Model`` built from ``keras.layers`` only (no
TensorFlow import), with explicitly named layers and a sigmoid output layer named ``mask``
(``(batch, H, W, 1)``; with ``classes=K > 1`` a softmax over ``K + 1`` channels, background
first); the joint model adds ``label`` (``(batch, 1)``). Look builders up by
architecture name with :func:`get`::

    import cervixnet.models as models

    model = models.get("unet-joint", input_shape=(256, 256, 1))
    outputs = model.predict(images)  # {"mask": (N, H, W, 1), "label": (N, 1)}

The joint model's outputs are named: ``predict`` returns a dict, and losses, metrics and
targets are keyed ``"mask"`` and ``"label"``. :func:`named_outputs` reads any cervixnet model's
result by name, including a joint model saved with list outputs ``[mask, label]``.

For inference, :func:`float32_copy` gives a copy of a mixed-precision model that computes in
float32, and :func:`fold_batch_norms` one with each batch norm folded into the convolution
before it (``cervixnet export`` serves both).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import keras

from cervixnet.models.batch_norm import FusedBatchNormalization
from cervixnet.models.deeplabv3 import build_deeplabv3
from cervixnet.models.fcn import build_fcn
from cervixnet.models.folding import (
    float32_copy,
    fold_batch_norms,
    foldable_pairs,
    policy_name,
)
from cervixnet.models.unet import build_unet
from cervixnet.models.unet_joint import build_unet_joint

__all__ = [
    "FusedBatchNormalization",
    "build_deeplabv3",
    "build_fcn",
    "build_unet",
    "build_unet_joint",
    "builder",
    "float32_copy",
    "fold_batch_norms",
    "foldable_pairs",
    "get",
    "has_label",
    "is_joint",
    "named_outputs",
    "names",
    "policy_name",
]


def _builders() -> dict[str, Callable[..., keras.Model]]:
    """Architecture name -> builder, in the registry's order."""
    return {
        "unet": build_unet,
        "fcn": build_fcn,
        "deeplabv3": build_deeplabv3,
        "unet-joint": build_unet_joint,
    }


def names() -> tuple[str, ...]:
    """The registered architecture names: ``("unet", "fcn", "deeplabv3", "unet-joint")``."""
    return tuple(_builders())


def _check_name(name: object) -> str:
    if not isinstance(name, str) or name not in _builders():
        raise ValueError(
            f"Unknown architecture {name!r}. Expected one of: {', '.join(names())}. "
            f"Received: name={name!r}"
        )
    return name


def is_joint(name: str) -> bool:
    """True if architecture ``name`` outputs ``[mask, label]`` (only ``"unet-joint"``)."""
    return _check_name(name) == "unet-joint"


def has_label(model: keras.Model) -> bool:
    """True if ``model`` has a ``label`` output (a joint model, whatever its output form)."""
    return "label" in model.output_names


def named_outputs(model: keras.Model, outputs: Any) -> dict[str, Any]:
    """``model``'s result (of ``model(x)`` or ``model.predict(x)``) as ``{name: tensor}``.

    A dict is returned as it is; a list (a joint model saved with list outputs ``[mask,
    label]``) or a single tensor (a segmentation model: ``{"mask": ...}``) is matched to
    ``model.output_names``.
    """
    if isinstance(outputs, dict):
        return dict(outputs)
    flat = list(outputs) if isinstance(outputs, list | tuple) else [outputs]
    return dict(zip(model.output_names, flat, strict=True))


def builder(name: str) -> Callable[..., keras.Model]:
    """The builder function registered under ``name`` (e.g. ``build_unet_joint``)."""
    return _builders()[_check_name(name)]


def get(name: str, **kwargs: object) -> keras.Model:
    """Build architecture ``name`` with the builder's keyword arguments.

    Args:
        name: one of :func:`names`.
        **kwargs: passed to the builder (``input_shape``, ``base_filters``, ``weights``, ...).

    Raises:
        ValueError: ``name`` is not registered, or a builder argument is invalid.
    """
    return builder(name)(**kwargs)
