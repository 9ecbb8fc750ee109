"""cervixnet: joint cervix segmentation and preterm-birth prediction in Keras 3.

Importing the package registers its losses, metrics and layers with Keras, so
``keras.models.load_model("model.keras")`` needs no ``custom_objects``. It imports
Keras but never TensorFlow: the models, losses and metrics run on any Keras 3 backend.
"""

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
