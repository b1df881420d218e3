"""The Gluon (MXNet) backend: mxnet.gluon.model_zoo and gluoncv models behind the
xrayprototype contract."""
from ._compat import apply

apply()   # np.bool, OpenMP threads and gluoncv's torch check, before the first mxnet import

from .backend import GluonBackend  # noqa: E402  (mxnet must be importable first)

__all__ = ["GluonBackend"]
