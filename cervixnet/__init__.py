"""cervixnet: segment an organ in ultrasound, measure it and classify the scan, in Keras 3.

``import cervixnet`` is cheap: it loads neither Keras nor TensorFlow and sets no environment
variables. The Keras parts load on first use, ``from cervixnet import losses, metrics,
models`` (or ``cervixnet.models`` ...), and loading them registers cervixnet's layers, losses
and metrics with Keras, so that ``keras.models.load_model("model.keras")`` then needs no
``custom_objects``. They never import TensorFlow themselves: the models, losses and metrics
run on any Keras 3 backend.
"""

from __future__ import annotations

import importlib
from typing import Any

from cervixnet.errors import CervixnetError, ConfigError, DataError

__version__ = "0.1.0"

# Submodules that import Keras, loaded on first attribute access.
_KERAS_MODULES = ("losses", "metrics", "models")

__all__ = [
    "CervixnetError",
    "ConfigError",
    "DataError",
    "__version__",
    "losses",
    "metrics",
    "models",
]


def __getattr__(name: str) -> Any:
    if name in _KERAS_MODULES:
        return importlib.import_module(f"cervixnet.{name}")
    raise AttributeError(f"module 'cervixnet' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_KERAS_MODULES))
