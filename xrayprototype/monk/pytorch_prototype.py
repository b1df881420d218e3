"""``from xrayprototype.monk.pytorch_prototype import prototype``: Monk's PyTorch import.

Example:
    >>> from xrayprototype.monk.pytorch_prototype import prototype
    >>> gtf = prototype(verbose=1)
    >>> gtf.Prototype("sample-project-1", "sample-experiment-1")
"""
from ._bound import MonkPrototype


class prototype(MonkPrototype):  # noqa: N801  (Monk's spelling)
    """The library's ``prototype``, every experiment on PyTorch (Monk's ``pytorch_prototype``).

    Args:
        verbose: 0 silent, 1 progress bars and tables.
        workspace: root folder of all projects (default ``./workspace``).
    """

    backend_name = "pytorch"
