"""``from xrayprototype.monk.gluon_prototype import prototype``: Monk's MXNet-Gluon import.

Monk's Gluon model names (``resnet18_v1``, ``mobilenetv2_1.0``, ``densenet121`` ... any gluoncv
classification name, in any case) are accepted as they are.

Example:
    >>> from xrayprototype.monk.gluon_prototype import prototype
    >>> gtf = prototype(verbose=1)
    >>> gtf.Prototype("sample-project-1", "sample-experiment-1")
    >>> gtf.Default(dataset_path="train", model_name="resnet18_v1", num_epochs=5)
"""
from ._bound import MonkPrototype


class prototype(MonkPrototype):  # noqa: N801  (Monk's spelling)
    """The library's ``prototype``, every experiment on MXNet Gluon (Monk's
    ``gluon_prototype``).

    Args:
        verbose: 0 silent, 1 progress bars and tables.
        workspace: root folder of all projects (default ``./workspace``).
    """

    backend_name = "gluon"
