"""The canonical model names: one spelling of every architecture, shared by all backends.

A user writes ``model_name="densenet121"`` and gets DenseNet-121 on every backend that has it;
switching backends never means renaming the model. Each backend declares which of these names
it builds in ``capabilities().models`` (its keys are canonical names, or names that start with
its ``capabilities().native_model_prefix``, such as ``"timm/convnext_tiny"``);
``xrayprototype.testing.check_backend`` builds every declared name and checks that every
undeclared one is refused with a ConfigError.

Which backend has which name today (``prototype().List_Models()`` prints the installed ones):

==================  =======  =====  =====
name                pytorch  gluon  keras
==================  =======  =====  =====
resnet18..101,      yes      yes    yes
densenet121/169,
mobilenet_v2,
mobilenet_v3_small/
large, vgg16,
xception,
inception_v3
resnet152,          yes      yes    yes
densenet201, vgg19
resnext50_32x4d,    yes      yes
vgg16_bn,
squeezenet1_1,
squeezenet1_0,
alexnet, vgg11/13
(_bn), vgg19_bn,
densenet161
efficientnet_b0/b1  yes             yes
shufflenet_v2_x0_5  yes
..x2_0, googlenet,
efficientnet_lite0,
resnext101_32x8d,
wide_resnet50_2/
101_2, mnasnet0_5
..1_3
resnet50_v2..152_v2,         yes    yes
mobilenet(_0.25/
0.5/0.75)
efficientnet_b2/b3,                 yes
nasnet_mobile,
inception_resnet_v2
==================  =======  =====  =====

Monk v1's model names of each backend are these names, or (Gluon) gluoncv's own names, which
the Gluon backend also accepts; ``xrayprototype.monk.keras_prototype`` maps Monk's
``inception_resnet_v3`` (its spelling of InceptionResNetV2).

The module imports no framework.

Example:
    >>> from xrayprototype.models import MODEL_NAMES, COMMON_MODEL_NAMES
    >>> "densenet121" in COMMON_MODEL_NAMES and "nasnet_mobile" in MODEL_NAMES
    True
"""
from typing import Iterable, Optional

from .errors import ConfigError, did_you_mean

#: the names every shipped backend (pytorch, gluon, keras) builds
COMMON_MODEL_NAMES = (
    "resnet18", "resnet34", "resnet50", "resnet101", "densenet121", "densenet169",
    "mobilenet_v2", "mobilenet_v3_small", "mobilenet_v3_large", "vgg16", "xception",
    "inception_v3",
)

#: every canonical name; the names after the common ones exist on some backends only
MODEL_NAMES = COMMON_MODEL_NAMES + (
    # ResNet v1 and ResNeXt
    "resnet152", "resnext50_32x4d",
    # pre-activation ResNet v2 (He et al. 2016, "Identity mappings")
    "resnet50_v2", "resnet101_v2", "resnet152_v2",
    "densenet201",
    # MobileNet v1 at width 1.0, 0.25, 0.5, 0.75
    "mobilenet", "mobilenet_0.25", "mobilenet_0.5", "mobilenet_0.75",
    "efficientnet_b0", "efficientnet_b1", "efficientnet_b2", "efficientnet_b3",
    "efficientnet_lite0",
    "vgg16_bn", "vgg19",
    "squeezenet1_1", "shufflenet_v2_x1_0", "nasnet_mobile",
    # the rest of Monk v1's lists (torchvision's and keras.applications' names)
    "alexnet", "vgg11", "vgg11_bn", "vgg13", "vgg13_bn", "vgg19_bn", "densenet161",
    "googlenet", "resnext101_32x8d", "wide_resnet50_2", "wide_resnet101_2",
    "shufflenet_v2_x0_5", "shufflenet_v2_x1_5", "shufflenet_v2_x2_0",
    "mnasnet0_5", "mnasnet0_75", "mnasnet1_0", "mnasnet1_3", "squeezenet1_0",
    "inception_resnet_v2",
)


def is_declarable(name: str, native_prefix: Optional[str] = None) -> bool:
    """Whether a backend may list ``name`` in ``capabilities().models``: a canonical name,
    or one that starts with the backend's native prefix."""
    return name in MODEL_NAMES or bool(native_prefix and str(name).startswith(native_prefix))


def unknown_model(name: str, backend: str, declared: Iterable[str], hint: str = "",
                  native_prefix: Optional[str] = None) -> ConfigError:
    """The error for a model name that a backend does not build, with close names.

    Args:
        name: the name asked for.
        backend: the backend's registry name.
        declared: the names it builds (its ``capabilities().models``).
        hint: appended, e.g. how to ask for a native model.
        native_prefix: the backend's ``native_model_prefix``; a declared native name given
            without it is pointed out.

    Example:
        >>> error = unknown_model("resnet19", "pytorch", ["resnet18", "resnet34"])
        >>> "did you mean 'resnet18'" in str(error)
        True
    """
    declared = sorted(declared)
    tail = f" See prototype.List_Models().{' ' + hint if hint else ''}"
    shown = ", ".join(declared[:30]) + (", ..." if len(declared) > 30 else "")
    if native_prefix and f"{native_prefix}{name}".lower() in {n.lower() for n in declared}:
        return ConfigError(f"model '{name}' is a native model of backend '{backend}'; native "
                           f"names take the prefix: model_name='{native_prefix}{name}' "
                           "(canonical names, such as 'resnet18', take none). See "
                           "prototype.List_Models().")
    if name in MODEL_NAMES:
        canonical = ", ".join(n for n in declared if n in MODEL_NAMES) or shown
        return ConfigError(f"model '{name}' is a canonical model name, but backend '{backend}' "
                           f"does not build it; use a backend that has it, or one of the "
                           f"canonical models of '{backend}': {canonical}.{tail}")
    suggestion = did_you_mean(name, declared) or f" its models are {shown}."
    return ConfigError(f"model '{name}' is not known to backend '{backend}';{suggestion}{tail}")
