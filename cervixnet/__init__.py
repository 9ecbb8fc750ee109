"""cervixnet: joint cervix segmentation and preterm-birth prediction in Keras 3.

Importing the package registers its losses, metrics and layers with Keras, so
``keras.models.load_model("model.keras")`` needs no ``custom_objects``. It imports
Keras but never TensorFlow: the models, losses and metrics run on any Keras 3 backend.
"""

import os
import platform

# TensorFlow reads its C++ log level once, when it loads (through Keras, just below). Its
# graph optimiser's cost-estimate warnings would otherwise flood every training log; a level
# the user has set wins.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# TensorFlow turns its oneDNN CPU operations (convolutions, batch norms, matmuls) on by itself
# only on some x86 CPUs, by their features; on others, as on an AVX2-only one, it computes the
# convolutions with Eigen, which trained the default joint U-Net 2.4 x slower
# (docs/performance.md). Asked here on every x86-64 CPU, before TensorFlow loads; a
# TF_ENABLE_ONEDNN_OPTS the user has set (0: off) wins.
if platform.machine().lower() in ("x86_64", "amd64"):
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")

from cervixnet import losses, metrics, models
from cervixnet.errors import CervixnetError, ConfigError, DataError

__version__ = "0.1.0"

__all__ = [
    "CervixnetError",
    "ConfigError",
    "DataError",
    "__version__",
    "losses",
    "metrics",
    "models",
]
