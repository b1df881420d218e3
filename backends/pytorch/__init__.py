"""The PyTorch backend: torchvision and timm models behind the xrayprototype contract."""
from ._compat import import_torchvision

import_torchvision()

from .backend import PyTorchBackend  # noqa: E402  (torchvision must be importable first)

__all__ = ["PyTorchBackend"]
