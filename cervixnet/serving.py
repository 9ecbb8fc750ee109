"""Client side of a cervixnet model served by TF Serving (REST API).

An export (``cervixnet export``) serves ``serving_default``, which takes float images at the
model's input size, and ``predict_image_bytes``, which takes encoded PNG or JPEG files of any
size (and ``members``, each ensemble member's own prediction).
TF Serving's REST API carries binary inputs as ``{"b64": ...}``. This module builds request
bodies for ``POST /v1/models/<name>:predict`` and parses the responses; it needs neither
TensorFlow nor Keras, only NumPy (and OpenCV for :func:`prepare_for_serving`).

Caliper inpainting cannot run inside a TensorFlow graph: for images with calipers burnt in,
run :func:`prepare_for_serving` on the client first (it applies the run's caliper removal and
re-encodes the image as PNG), as ``cervixnet predict`` does.
"""

from __future__ import annotations

import base64
import dataclasses
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

IMAGE_BYTES_SIGNATURE = "predict_image_bytes"
FLOAT_SIGNATURE = "serving_default"
IMAGE_BYTES_INPUT = "image_bytes"
FLOAT_INPUT = "images"


@dataclasses.dataclass(frozen=True)
class ServedPrediction:
    """One image's outputs from the server.

    Attributes:
        mask: float32 ``(H, W)`` mask probabilities (at the export's mask size for the bytes
            signature, the model's input size for the float one); ``(H, W, K + 1)`` softmax
            probabilities for a model of K classes (named by the export metadata's
            ``classes``, the background first).
        probability: p(preterm), or ``None`` for a segmentation-only model.
        label: 1 preterm / 0 control at the export's threshold, or ``None``.
        original_size: ``(height, width)`` of the sent image (bytes signature only).
        uncertainty: float32 ``(H, W)``, the ensemble members' per-pixel standard deviation,
            shaped as ``mask``; ``None`` from exports that do not return it.
    """

    mask: np.ndarray
    probability: float | None
    label: int | None
    original_size: tuple[int, int] | None
    uncertainty: np.ndarray | None = None


def image_bytes_request(images: Sequence[bytes | str | Path]) -> dict[str, Any]:
    """The REST body for ``predict_image_bytes``: each image as ``{"b64": ...}``.

    Args:
        images: encoded image files (PNG, JPEG, BMP, GIF), as bytes or as paths.
    """
    if not images:
        raise ValueError("image_bytes_request needs at least one image. Received: []")
    instances = []
    for image in images:
        data = image if isinstance(image, bytes) else Path(image).read_bytes()
        instances.append({IMAGE_BYTES_INPUT: {"b64": base64.b64encode(data).decode("ascii")}})
    return {"signature_name": IMAGE_BYTES_SIGNATURE, "instances": instances}


def float_request(images: np.ndarray) -> dict[str, Any]:
    """The REST body for ``serving_default``: float32 images ``(N, H, W, C)`` in [0, 1]."""
    array = np.asarray(images, dtype=np.float32)
    if array.ndim != 4:
        raise ValueError(
            f"`images` must have shape (N, H, W, C). Received: shape {tuple(array.shape)}"
        )
    return {
        "signature_name": FLOAT_SIGNATURE,
        "instances": [{FLOAT_INPUT: image.tolist()} for image in array],
    }


def parse_response(response: Mapping[str, Any]) -> list[ServedPrediction]:
    """Parses a ``:predict`` response, row (``predictions``) or column (``outputs``) format.

    Raises:
        ValueError: the response carries an ``error`` or has neither format.
    """
    if "error" in response:
        raise ValueError(f"The server answered with an error: {response['error']}")
    if "predictions" in response:
        rows = response["predictions"]
        if rows and not isinstance(rows[0], Mapping):  # a single output: a plain list
            rows = [{"mask": row} for row in rows]
    elif "outputs" in response:
        outputs = response["outputs"]
        if not isinstance(outputs, Mapping):
            outputs = {"mask": outputs}
        count = len(next(iter(outputs.values())))
        rows = [{name: values[k] for name, values in outputs.items()} for k in range(count)]
    else:
        raise ValueError(
            "Expected a TF Serving predict response with 'predictions' or 'outputs'. "
            f"Received keys: {sorted(response)}"
        )
    predictions = []
    for row in rows:
        mask = np.asarray(row["mask"], dtype=np.float32)
        mask = mask[..., 0] if mask.ndim == 3 and mask.shape[-1] == 1 else mask
        uncertainty = row.get("uncertainty")
        if uncertainty is not None:
            uncertainty = np.asarray(uncertainty, dtype=np.float32)
            if uncertainty.ndim == 3 and uncertainty.shape[-1] == 1:
                uncertainty = uncertainty[..., 0]
        height, width = row.get("original_height"), row.get("original_width")
        predictions.append(
            ServedPrediction(
                mask=mask,
                probability=_scalar(row.get("probability"), float),
                label=_scalar(row.get("label"), int),
                original_size=(
                    (int(_scalar(height, int)), int(_scalar(width, int)))
                    if height is not None and width is not None
                    else None
                ),
                uncertainty=uncertainty,
            )
        )
    return predictions


def prepare_for_serving(path: str | Path, run_dir: str | Path | None = None) -> bytes:
    """An image file with its calipers filled (the run's settings), encoded as PNG.

    The in-graph preprocessing of ``predict_image_bytes`` does the rest (grayscale, resize,
    scaling). Without ``run_dir`` the default caliper settings are used.
    """
    import cv2

    from cervixnet import run_folder
    from cervixnet.config import default_config, load_config
    from cervixnet.data.prepare import clean_image, read_image

    config = default_config()
    if run_dir is not None and (Path(run_dir) / run_folder.CONFIG).is_file():
        config = load_config(Path(run_dir) / run_folder.CONFIG)
    gray, _ = clean_image(read_image(path), config.data.calipers, name=path)
    ok, encoded = cv2.imencode(".png", gray)
    if not ok:
        raise ValueError(f"{path}: could not encode the cleaned image as PNG")
    return encoded.tobytes()


def _scalar(value: Any, kind: type) -> Any:
    if value is None:
        return None
    while isinstance(value, list | tuple):
        value = value[0]
    return kind(value)
