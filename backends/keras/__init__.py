"""The Keras backend: Keras 3 on TensorFlow, keras.applications models behind the
xrayprototype contract. Importing it sets up TensorFlow first (threads, log noise, a check of
KERAS_BACKEND); see ``_compat``."""
from ._compat import setup_tensorflow

setup_tensorflow()

from .backend import KerasBackend  # noqa: E402  (TensorFlow must be set up first)

__all__ = ["KerasBackend"]
