"""Import torchvision on a CPU-only torch whose torchvision wheel was built for CUDA.

``torchvision==0.28.0`` (the only build matching ``torch==2.13.0``) registers fake kernels for
its compiled ``torchvision::nms`` operator at import; on a CPU torch without that operator the
import fails with "operator torchvision::nms does not exist". Only on that error, this drops
the half-imported modules, registers an empty ``torchvision._meta_registrations`` and imports
again: models and transforms work; ``torchvision.ops.nms`` and ``torchvision.io.decode_jpeg``
stay unavailable (this library decodes with Pillow and uses no detection ops).

It runs when ``xrayprototype.backends.pytorch`` is imported, so data-loading worker processes,
which import the package, get it too.
"""
import sys
import types

_MISSING_OPERATOR = "torchvision::nms does not exist"


def import_torchvision():
    """Return the torchvision module, applying the fix above only when it is needed."""
    try:
        import torchvision
        return torchvision
    except RuntimeError as err:
        if _MISSING_OPERATOR not in str(err):
            raise
    for name in [n for n in sys.modules if n == "torchvision" or n.startswith("torchvision.")]:
        del sys.modules[name]
    sys.modules["torchvision._meta_registrations"] = types.ModuleType(
        "torchvision._meta_registrations")
    import torchvision
    return torchvision
