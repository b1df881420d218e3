"""xrayprototype: low-code transfer-learning experiments for chest X-ray classification.

Importing this package imports no deep-learning framework; a backend's framework is
imported when an experiment asks for that backend.

Example:
    >>> from xrayprototype import prototype
    >>> gtf = prototype(verbose=1)
    >>> gtf.Prototype("Pneumonia", "resnet18", backend="pytorch")
"""
from ._version import __version__
from .compare import compare
from .ensemble import ensemble
from .prototype import prototype

__all__ = ["__version__", "compare", "ensemble", "prototype"]
