"""The Gluon model table: canonical names -> ``mxnet.gluon.model_zoo.vision`` / gluoncv
constructors, new heads, frozen bases and pretrained weights (the MXNet model store, or a
local ``.params`` file). Pretrained weights that cannot be found raise PretrainedWeightsError;
there is never a silent fallback to random weights.

Canonical names (``xrayprototype.models``) map onto the zoos' names; every other gluoncv
image-classification model is available as ``"gluoncv/<gluoncv name>"`` (the native prefix;
the part after it is case-insensitive, as in ``gluoncv.model_zoo.get_model``).

Networks are built inside a fresh ``mx.name.NameManager`` so that their parameter names
(``resnetv10_conv0_weight``...) are the same in every process: the exported ``.params`` of a
run load by name into a network built later, and into ``SymbolBlock.imports``.
"""
import os
import re
import warnings
from pathlib import Path
from typing import Dict

from xrayprototype.backend import ModelInfo
from xrayprototype.config import ModelConfig
from xrayprototype.errors import PretrainedWeightsError
from xrayprototype.head import resolve_head
from xrayprototype.models import unknown_model

from ._compat import import_gluoncv, import_mxnet
from .heads import add_head_layers

mx = import_mxnet()
gluoncv = import_gluoncv()
nn = mx.gluon.nn

#: canonical name (``xrayprototype.models.MODEL_NAMES``) -> MXNet / gluoncv model-zoo name
CANONICAL = {"resnet18": "resnet18_v1", "resnet34": "resnet34_v1", "resnet50": "resnet50_v1",
             "resnet101": "resnet101_v1", "resnext50_32x4d": "resnext50_32x4d",
             "resnet50_v2": "resnet50_v2", "resnet101_v2": "resnet101_v2",
             "resnet152_v2": "resnet152_v2",
             "densenet121": "densenet121", "densenet169": "densenet169",
             "densenet201": "densenet201",
             "mobilenet_v2": "mobilenetv2_1.0", "mobilenet_v3_small": "mobilenetv3_small",
             "mobilenet_v3_large": "mobilenetv3_large", "vgg16": "vgg16", "vgg16_bn": "vgg16_bn",
             "vgg19": "vgg19", "squeezenet1_1": "squeezenet1.1", "xception": "xception",
             "inception_v3": "inceptionv3",
             # the rest of Monk v1's Gluon list that has a canonical name
             "resnet152": "resnet152_v1", "alexnet": "alexnet", "vgg11": "vgg11",
             "vgg11_bn": "vgg11_bn", "vgg13": "vgg13", "vgg13_bn": "vgg13_bn",
             "vgg19_bn": "vgg19_bn", "densenet161": "densenet161",
             "squeezenet1_0": "squeezenet1.0", "mobilenet": "mobilenet1.0",
             "mobilenet_0.25": "mobilenet0.25", "mobilenet_0.5": "mobilenet0.5",
             "mobilenet_0.75": "mobilenet0.75"}
#: native models: ``"gluoncv/resnet18_v1b"``
NATIVE_PREFIX = "gluoncv/"
MIN_INPUT = {"xception": 71, "inception_v3": 75, "inceptionv3": 75, "alexnet": 63}
# gluoncv image-classification families; task-specific variants (detection, video...) excluded
_NATIVE = re.compile(r"^(se_)?(resnet\d+_v1[b-es]?|resnet\d+_v2|resnext\d+e?_\d+x\d+d|senet_154e?|"
                     r"densenet\d+|vgg\d+(_bn)?|squeezenet1\.[01]|mobilenet(v2_|v3_)?[\d.]*"
                     r"(small|large)?|xception\d*|inceptionv3|alexnet|darknet53)$")


@mx.init.register
class TorchvisionInit(mx.init.Initializer):
    """torchvision's initialisation (what the pytorch backend trains from): Kaiming-normal
    (fan-out) convolutions, uniform(+-1/sqrt(fan_in)) dense layers; biases 0, BatchNorm 1/0."""

    def _init_weight(self, desc, arr):
        rule = mx.init.Xavier("uniform", "in", 1.0) if arr.ndim == 2 else \
            mx.init.Xavier("gaussian", "out", 2.0)
        rule._init_weight(desc, arr)


INITIALIZER = TorchvisionInit()


class ModelTable(dict):
    """Model names -> ModelInfo, looked up case-insensitively like ``gluoncv.get_model``
    (``"ResNet34_v2"`` finds ``"resnet34_v2"``); a gluoncv name is found with or without the
    native prefix (Monk's gluon scripts write ``"resnet18_v1b"``), listed with it."""

    @staticmethod
    def _key(table, name) -> str:
        lowered = str(name).lower()
        if not dict.__contains__(table, lowered) and \
                dict.__contains__(table, NATIVE_PREFIX + lowered):
            return NATIVE_PREFIX + lowered
        return lowered

    def __contains__(self, name) -> bool:
        return dict.__contains__(self, self._key(self, name))

    def __getitem__(self, name) -> ModelInfo:
        return dict.__getitem__(self, self._key(self, name))

    def get(self, name, default=None):
        return dict.get(self, self._key(self, name), default)


#: the names ``mxnet.gluon.model_zoo.vision.get_model`` knows (it keeps them in a local dict)
VISION_NAMES = frozenset(
    [f"resnet{d}_v{v}" for d in (18, 34, 50, 101, 152) for v in (1, 2)]
    + [f"vgg{d}{bn}" for d in (11, 13, 16, 19) for bn in ("", "_bn")]
    + [f"densenet{d}" for d in (121, 161, 169, 201)]
    + [f"mobilenet{w}" for w in ("1.0", "0.75", "0.5", "0.25")]
    + [f"mobilenetv2_{w}" for w in ("1.0", "0.75", "0.5", "0.25")]
    + ["alexnet", "squeezenet1.0", "squeezenet1.1", "inceptionv3"])


def model_table() -> ModelTable:
    """Canonical names, then every gluoncv image-classification name with the native prefix
    (``"gluoncv/resnet18_v1b"``; ``"gluoncv/resnet18_v1"`` is the model of ``"resnet18"``)."""
    table = ModelTable()
    store = f"MXNet model store ({model_root()})"
    for canonical, native in CANONICAL.items():
        source = "mxnet.gluon.model_zoo.vision" if native in VISION_NAMES else "gluoncv"
        table[canonical] = ModelInfo(canonical, source, "imagenet", store,
                                     MIN_INPUT.get(canonical, 32))
    for native in gluoncv.model_zoo.get_model_list():
        if _NATIVE.match(native):
            name = NATIVE_PREFIX + native
            table[name] = ModelInfo(name, "gluoncv", "imagenet", store, MIN_INPUT.get(native, 32))
    return table


def model_root() -> str:
    """Where the model stores keep weights: ``$MXNET_HOME/models``, default ``~/.mxnet/models``."""
    return os.path.join(os.path.expanduser(os.environ.get("MXNET_HOME", "~/.mxnet")), "models")


def native_name(name: str) -> str:
    """Canonical or ``"gluoncv/<name>"`` name (any case) -> the model zoo's name; unknown
    names raise."""
    lowered = str(name).lower()
    if lowered in CANONICAL:
        return CANONICAL[lowered]
    table = model_table()
    if lowered.startswith(NATIVE_PREFIX) and lowered in table:
        return lowered[len(NATIVE_PREFIX):]
    if NATIVE_PREFIX + lowered in table:            # a bare gluoncv name (Monk's spelling)
        return lowered
    raise unknown_model(name, "gluon", table, f"Any gluoncv classification model: "
                        f"'{NATIVE_PREFIX}<gluoncv name>'.", NATIVE_PREFIX)


def _store_file(native: str, from_vision: bool) -> str:
    store = mx.gluon.model_zoo.model_store if from_vision else gluoncv.model_zoo.model_store
    try:
        return f"{native}-{store.short_hash(native)}.params"
    except (ValueError, KeyError):
        return f"{native}-<hash>.params"


def _zoo_model(native: str, pretrained: bool):
    from_vision = native in VISION_NAMES
    get = mx.gluon.model_zoo.vision.get_model if from_vision else gluoncv.model_zoo.get_model
    if not pretrained:
        return get(native, pretrained=False)
    root = model_root()
    try:
        return get(native, pretrained=True, root=root)
    except Exception as err:  # offline: requests / URLError / OSError, or no weights published
        expected = Path(root) / _store_file(native, from_vision)
        raise PretrainedWeightsError(
            f"ImageNet weights for '{native}' are not in the MXNet model store and could not "
            f"be downloaded ({type(err).__name__}: {err}). Put {expected.name} in {root} "
            "(or set MXNET_HOME), or pass model_path=<file>.params, or use_pretrained=False "
            "to train from scratch.") from None


def _set_child(block, name: str, child) -> None:
    """Replace a registered child, even by one of another type (Gluon refuses that)."""
    block._children[name] = child
    object.__setattr__(block, name, child)


def _global_pools(features) -> None:
    """Fixed-size final average pools (DenseNet's 7x7, Inception's 8x8) become global pools:
    the same at ImageNet size, and any input size works."""
    if not isinstance(features, nn.HybridSequential):
        return
    for key, child in list(features._children.items())[-3:]:
        if isinstance(child, nn.AvgPool2D):
            features._children[key] = nn.GlobalAvgPool2D()


def _new_head(net, old, num_classes: int, dropout: float, plan=None):
    with net.name_scope():
        head = nn.HybridSequential(prefix="fc_")       # parameters: <model>_fc_dense0_weight ...
        with head.name_scope():
            if dropout:
                head.add(nn.Dropout(dropout))
            pooled = not any(isinstance(c, nn.AvgPool2D)
                             for c in getattr(old, "_children", {}).values())
            if plan:            # the custom head (xrayprototype.head), on pooled features
                head.add(*([] if pooled else [nn.GlobalAvgPool2D()]))
                add_head_layers(head, plan)
            elif any(isinstance(c, nn.AvgPool2D) for c in getattr(old, "_children", {}).values()):
                # squeezenet: a 1x1-convolution classifier, pooled afterwards
                head.add(nn.Conv2D(num_classes, 1), nn.Activation("relu"),
                         nn.GlobalAvgPool2D(), nn.Flatten())
            else:
                head.add(nn.Dense(num_classes))
    return head


def head_name(net) -> str:
    return "output" if "output" in net._children else "fc"


def create_model(config: ModelConfig, num_classes: int):
    """``config.model_name`` with a fresh ``num_classes`` head (after ``config.dropout``),
    initialised on the CPU (the backend moves it to its device), and with
    ``freeze_base_network`` only the head trainable.

    Weights: ``model_path`` (a local ``.params``) when given, else the model store when
    ``use_pretrained``, else torchvision-style random initialisation.

    Example:
        >>> net = create_model(ModelConfig("resnet18", use_pretrained=False), 2)
    """
    native = native_name(config.model_name)
    with mx.name.NameManager():   # the same parameter names in every process
        net = _zoo_model(native, config.use_pretrained and not config.model_path)
        if "features" in net._children:
            _global_pools(net.features)
        where = head_name(net)
        _set_child(net, where, _new_head(net, net._children[where], num_classes, config.dropout,
                                         resolve_head(config.custom_head, num_classes)))
    if config.model_path:
        load_weights_file(net, config.model_path)
    with warnings.catch_warnings():  # "already initialized": the loaded weights stay
        warnings.simplefilter("ignore")
        net.initialize(INITIALIZER, ctx=mx.cpu())
    _finish_shapes(net)
    if config.freeze_base_network:
        freeze_base(net)
    return net


def _finish_shapes(net) -> None:
    """Give every parameter whose shape does not depend on the input size its shape and
    values now (Gluon defers them to the first batch), so that weights can be read, counted
    and loaded before any batch; layers sized by the input (VGG's first Dense) wait for it."""
    first, second = inferred_shapes(net, 224), inferred_shapes(net, 256)
    for name, param in net.collect_params().items():
        if param._deferred_init and name in first and first[name] == second[name]:
            param.shape = first[name]
            param._finish_deferred_init()


def inferred_shapes(net, size: int, channels: int = 3) -> Dict[str, tuple]:
    """Parameter name -> shape for a ``size`` x ``size`` input, without running the network;
    ``"__arguments__"`` lists the learnable ones (the rest are BatchNorm statistics)."""
    symbol = net(mx.sym.var("data"))
    args, _, aux = symbol.infer_shape(data=(1, channels, size, size))
    names = symbol.list_arguments() + symbol.list_auxiliary_states()
    shapes = dict(zip(names, args + aux))
    shapes["__arguments__"] = tuple(symbol.list_arguments())
    return shapes


def _compatible(param, value) -> bool:
    shape = tuple(param.shape or ())
    return len(shape) == len(value.shape) and all(a in (0, b) for a, b in zip(shape, value.shape))


def load_weights_file(net, path: str, ctx=None) -> Dict[str, int]:
    """Load a local ``.params`` file into ``net``: from ``save_parameters`` (structural names
    such as ``features.0.weight``) or ``export`` (``arg:``/``aux:`` names); tensors whose name or
    shape does not match (the old ImageNet head) are skipped."""
    file = Path(path).expanduser()
    if not file.is_file():
        raise PretrainedWeightsError(f"model_path '{path}' does not exist; give the path of an "
                                     "MXNet .params file (save_parameters or export).")
    try:
        loaded = mx.nd.load(str(file))
    except Exception as err:  # noqa: BLE001  (MXNetError: Invalid NDArray file format)
        reason = [line for line in str(err).splitlines() if line.strip()][-1:] or [""]
        raise PretrainedWeightsError(
            f"model_path '{file}' ({file.stat().st_size} bytes) cannot be read: it is truncated "
            f"or not an MXNet .params file ({type(err).__name__}: {reason[0][:200]}); give a "
            ".params file written by save_parameters() or export().") from None
    if not isinstance(loaded, dict):
        raise PretrainedWeightsError(f"{file.name} holds no named parameters; save it with "
                                     "net.save_parameters() or net.export().")
    exported = any(k.startswith(("arg:", "aux:")) for k in loaded)
    own = net.collect_params() if exported else net._collect_params_with_prefix()
    usable = 0
    for key, value in loaded.items():
        key = key[4:] if exported else key
        if key in own and _compatible(own[key], value):
            own[key]._load_init(value, ctx or mx.cpu())
            usable += 1
    if not usable:
        raise PretrainedWeightsError(f"no tensor of {file.name} matches the model's names and "
                                     "shapes; is it a .params file of the same architecture?")
    return {"loaded": usable, "skipped": len(loaded) - usable}


def head_parameters(net) -> list:
    return list(net._children[head_name(net)].collect_params().values())


def base_layers(net) -> list:
    """(name, block) of every block that owns parameters itself, in definition order (input
    side first), the classification head excluded: the layers ``freeze_first`` counts."""
    head, layers = net._children[head_name(net)], []

    def visit(block):
        if block is head:
            return
        if block._reg_params:
            layers.append((block.name, block))
        for child in block._children.values():
            visit(child)
    visit(net)
    return layers


def freeze_first(net, count: int) -> None:
    """Freeze the first ``count`` base layers (their BatchNorm layers use their running
    statistics); everything else, the head included, trains."""
    frozen = {id(p) for _, block in base_layers(net)[:count] for p in block._reg_params.values()}
    for param in net.collect_params().values():   # BatchNorm statistics stay "null" anyway
        param.grad_req = "null" if id(param) in frozen else "write"

    def global_stats(block):
        if isinstance(block, nn.BatchNorm):
            block._kwargs["use_global_stats"] = block.beta.grad_req == "null"
    net.apply(global_stats)


def freeze_base(net) -> None:
    """Only the head trains; frozen BatchNorm layers keep their running statistics."""
    head = {id(p) for p in head_parameters(net)}
    for param in net.collect_params().values():
        if id(param) not in head:
            param.grad_req = "null"

    def global_stats(block):
        if isinstance(block, nn.BatchNorm) and block.beta.grad_req == "null":
            block._kwargs["use_global_stats"] = True
    net.apply(global_stats)
