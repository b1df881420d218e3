"""``from xrayprototype.monk.keras_prototype import prototype``: Monk's Keras import.

Example:
    >>> from xrayprototype.monk.keras_prototype import prototype
    >>> gtf = prototype(verbose=1)
    >>> gtf.Prototype("sample-project-1", "sample-experiment-1")
    >>> gtf.Default(dataset_path="train", model_name="resnet50", num_epochs=5)
"""
from ._bound import MonkPrototype


class prototype(MonkPrototype):  # noqa: N801  (Monk's spelling)
    """The library's ``prototype``, every experiment on Keras (Monk's ``keras_prototype``).

    Args:
        verbose: 0 silent, 1 progress bars and tables.
        workspace: root folder of all projects (default ``./workspace``).
    """

    backend_name = "keras"
    #: Monk's Keras list spells InceptionResNetV2 "inception_resnet_v3"
    model_aliases = {"inception_resnet_v3": "inception_resnet_v2"}
