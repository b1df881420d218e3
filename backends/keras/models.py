"""The Keras model table: canonical names -> ``keras.applications`` constructors (and a small
functional ResNet18/34), a new ``num_classes`` head, a frozen base and pretrained weights.

Input scaling. The core sends pixels; each ``keras.applications`` family expects its own
scaling ("caffe": BGR minus the ImageNet mean on 0..255; "tf": -1..1; "torch": ImageNet
mean/std; EfficientNet and MobileNetV3: 0..255, rescaled inside the network). Those models
declare ``normalization="none"`` and ``preprocessing_in_model=True`` (the core then sends
``pixel / 255`` in 0..1 and refuses an explicit normalisation) and the network starts with
:class:`ApplicationPreprocessing`, which calls the family's own
``keras.applications.<family>.preprocess_input`` on ``x * 255``; the saved ``.keras`` file
therefore carries its preprocessing and takes 0..1 RGB images anywhere. ResNet18/34 (built
here, no ImageNet weights) use the core's "imagenet" normalisation, the same pixels as the
PyTorch backend's ResNet18.

Pretrained weights that cannot be found raise; there is never a silent fallback to random
weights.
"""
import warnings
from pathlib import Path
from typing import Dict, Optional, Tuple

import keras
import numpy as np

from xrayprototype.backend import ModelInfo
from xrayprototype.config import ModelConfig
from xrayprototype.errors import PretrainedWeightsError, unknown_name
from xrayprototype.head import resolve_head
from xrayprototype.models import unknown_model

from .heads import apply_head

#: canonical name -> (keras.applications constructor, preprocess family, min input, kwargs)
APPLICATIONS: Dict[str, Tuple[str, str, int, Dict]] = {
    "resnet50": ("ResNet50", "resnet", 32, {}),
    "resnet101": ("ResNet101", "resnet", 32, {}),
    "resnet152": ("ResNet152", "resnet", 32, {}),
    "resnet50_v2": ("ResNet50V2", "resnet_v2", 32, {}),
    "resnet101_v2": ("ResNet101V2", "resnet_v2", 32, {}),
    "resnet152_v2": ("ResNet152V2", "resnet_v2", 32, {}),
    "densenet121": ("DenseNet121", "densenet", 32, {}),
    "densenet169": ("DenseNet169", "densenet", 32, {}),
    "densenet201": ("DenseNet201", "densenet", 32, {}),
    "mobilenet": ("MobileNet", "mobilenet", 32, {}),
    "mobilenet_0.25": ("MobileNet", "mobilenet", 32, {"alpha": 0.25}),
    "mobilenet_0.5": ("MobileNet", "mobilenet", 32, {"alpha": 0.5}),
    "mobilenet_0.75": ("MobileNet", "mobilenet", 32, {"alpha": 0.75}),
    "mobilenet_v2": ("MobileNetV2", "mobilenet_v2", 32, {}),
    "mobilenet_v3_small": ("MobileNetV3Small", "mobilenet_v3", 32, {}),
    "mobilenet_v3_large": ("MobileNetV3Large", "mobilenet_v3", 32, {}),
    "efficientnet_b0": ("EfficientNetB0", "efficientnet", 32, {}),
    "efficientnet_b1": ("EfficientNetB1", "efficientnet", 32, {}),
    "efficientnet_b2": ("EfficientNetB2", "efficientnet", 32, {}),
    "efficientnet_b3": ("EfficientNetB3", "efficientnet", 32, {}),
    "vgg16": ("VGG16", "vgg16", 32, {}),
    "vgg19": ("VGG19", "vgg19", 32, {}),
    "xception": ("Xception", "xception", 71, {}),
    "inception_v3": ("InceptionV3", "inception_v3", 75, {}),
    "nasnet_mobile": ("NASNetMobile", "nasnet", 224, {}),
    "inception_resnet_v2": ("InceptionResNetV2", "inception_resnet_v2", 75, {}),
}
#: built here (torchvision's BasicBlock layout); no ImageNet weights exist for them in Keras
RESNET_BASIC = {"resnet18": (2, 2, 2, 2), "resnet34": (3, 4, 6, 3)}
#: models whose Keras graph is only right for one input size (NASNet's cell cropping is
#: computed from static shapes); the backend rejects other sizes with a clear error
STATIC_INPUT = {"nasnet_mobile": 224}
#: every model takes RGB (the core replicates grayscale X-rays)
CHANNELS = 3
KERAS_CACHE = "~/.keras/models (or $KERAS_HOME/models)"


def model_table() -> Dict[str, ModelInfo]:
    """Canonical name -> ModelInfo for every model this backend builds."""
    table = {name: ModelInfo(name, f"keras.applications.{ctor}", "none",
                             f"keras.applications ImageNet weights (Keras cache {KERAS_CACHE})",
                             min_input_size=minimum, preprocessing_in_model=True)
             for name, (ctor, _, minimum, _) in APPLICATIONS.items()}
    for name in RESNET_BASIC:
        table[name] = ModelInfo(name, "xrayprototype (Keras functional, torchvision layout)",
                                "imagenet", "", min_input_size=32)
    return table


@keras.saving.register_keras_serializable(package="xrayprototype")
class ApplicationPreprocessing(keras.layers.Layer):
    """``keras.applications.<family>.preprocess_input(x * 255)`` as a saved layer.

    Args:
        family: a ``keras.applications`` module with a ``preprocess_input``, e.g. "resnet".

    Example:
        >>> layer = ApplicationPreprocessing("mobilenet_v2")   # 0..1 RGB -> -1..1
    """

    FAMILIES = sorted({family for _, family, _, _ in APPLICATIONS.values()})

    def __init__(self, family: str, **kwargs):
        super().__init__(**kwargs)
        if family not in self.FAMILIES:  # only known functions, also when loading a file
            raise unknown_name("preprocessing family", family, self.FAMILIES)
        self.family = family
        self._function = getattr(keras.applications, family).preprocess_input

    def call(self, inputs):
        return self._function(inputs * 255.0)

    def get_config(self) -> Dict:
        return dict(super().get_config(), family=self.family)


def _conv_bn(x, filters: int, kernel: int, stride: int, name: str, relu: bool = True):
    if kernel > 1:
        x = keras.layers.ZeroPadding2D(kernel // 2, name=f"{name}_pad")(x)
    x = keras.layers.Conv2D(filters, kernel, stride, use_bias=False, name=f"{name}_conv")(x)
    x = keras.layers.BatchNormalization(epsilon=1e-5, momentum=0.9, name=f"{name}_bn")(x)
    return keras.layers.ReLU(name=f"{name}_relu")(x) if relu else x


def _basic_block(x, filters: int, stride: int, name: str):
    shortcut = x
    if stride != 1 or x.shape[-1] != filters:
        shortcut = _conv_bn(x, filters, 1, stride, f"{name}_down", relu=False)
    y = _conv_bn(x, filters, 3, stride, f"{name}_1")
    y = _conv_bn(y, filters, 3, 1, f"{name}_2", relu=False)
    y = keras.layers.Add(name=f"{name}_add")([shortcut, y])
    return keras.layers.ReLU(name=f"{name}_out")(y)


def resnet_basic(name: str) -> keras.Model:
    """ResNet18/34 body (no head) with torchvision's layer layout, as a functional model.

    Example:
        >>> base = resnet_basic("resnet18")   # (None, None, None, 3) -> (..., 512) features
    """
    inputs = keras.Input((None, None, CHANNELS), name=f"{name}_input")
    x = _conv_bn(inputs, 64, 7, 2, "stem")
    x = keras.layers.ZeroPadding2D(1, name="stem_pool_pad")(x)
    x = keras.layers.MaxPooling2D(3, 2, name="stem_pool")(x)
    for stage, blocks in enumerate(RESNET_BASIC[name]):
        for block in range(blocks):
            stride = 2 if stage > 0 and block == 0 else 1
            x = _basic_block(x, 64 * 2 ** stage, stride, f"layer{stage + 1}_{block}")
    return keras.Model(inputs, x, name=name)


def _download_error(name: str, err: Exception) -> PretrainedWeightsError:
    text = str(err)
    origin = next((w for w in text.split() if w.startswith("http")), "").rstrip(":")
    file = origin.rsplit("/", 1)[-1] if origin else "the ImageNet weights file"
    return PretrainedWeightsError(
        f"ImageNet weights for keras model '{name}' are not in the Keras cache and could not be "
        f"downloaded ({type(err).__name__}: {text[:300]}). Put {file} "
        f"{'(from ' + origin + ') ' if origin else ''}in {KERAS_CACHE}, or pass "
        "model_path=<no-top weights file (.h5 / .weights.h5)>, or use_pretrained=False.")


def input_shape(name: str) -> Tuple[Optional[int], Optional[int], int]:
    """(height, width, channels) of the model's input; None where any size works."""
    size = STATIC_INPUT.get(name)
    return (size, size, CHANNELS)


def _application(name: str, weights: Optional[str]) -> keras.Model:
    ctor, family, _, kwargs = APPLICATIONS[name]
    constructor = getattr(keras.applications, ctor)
    if family == "mobilenet_v3":
        kwargs = dict(kwargs, include_preprocessing=True)
    with warnings.catch_warnings():  # "weights for input shape (224, 224) will be loaded"
        warnings.simplefilter("ignore", UserWarning)
        return constructor(include_top=False, weights=weights,
                           input_shape=input_shape(name), **kwargs)


def _base_network(name: str, pretrained: bool, model_path: Optional[str]):
    if name in RESNET_BASIC:
        if pretrained and not model_path:
            raise PretrainedWeightsError(
                f"keras.applications has no ImageNet weights for '{name}' (this backend builds "
                "it from scratch); train it with use_pretrained=False, pass model_path=<a "
                f"weights file of this {name}>, or pick a pretrained keras model such as "
                "'resnet50' or 'mobilenet_v2'.")
        base = resnet_basic(name)
        if model_path:
            try:
                base.load_weights(model_path)
            except Exception as err:  # noqa: BLE001  (ValueError, OSError from h5py, ...)
                raise PretrainedWeightsError(
                    f"could not load model_path '{model_path}' into keras model '{name}' "
                    f"({type(err).__name__}: {str(err)[:300]}); give a weights file of this "
                    f"{name}'s base network (.weights.h5, as base.save_weights writes it), "
                    "not a whole .keras model.") from None
        return base
    weights = model_path or ("imagenet" if pretrained else None)
    try:
        return _application(name, weights)
    except Exception as err:  # noqa: BLE001  (offline: "URL fetch failure on https://...")
        if "URL fetch failure" in str(err) or "urlopen" in str(err).lower():
            raise _download_error(name, err) from None
        if model_path:
            raise PretrainedWeightsError(
                f"could not load model_path '{model_path}' into keras model '{name}' "
                f"({type(err).__name__}: {str(err)[:300]}); give the no-top weights file of "
                f"this architecture (as keras.applications.{APPLICATIONS[name][0]}"
                "(include_top=False, weights=PATH) accepts).") from None
        raise


def create_model(config: ModelConfig, num_classes: int) -> keras.Model:
    """Input -> (the family's preprocessing) -> base -> pooling -> (dropout) -> logits, with
    ``config.model_path`` / ImageNet / random base weights and, with ``freeze_base_network``,
    a frozen base (its BatchNorm layers keep their statistics).

    Example:
        >>> model = create_model(ModelConfig("mobilenet_v2", use_pretrained=False,
        ...                                  freeze_base_network=True), 2)
    """
    name, model_path = config.model_name, config.model_path
    if name not in APPLICATIONS and name not in RESNET_BASIC:
        raise unknown_model(name, "keras", model_table())
    if model_path and not Path(model_path).expanduser().is_file():
        raise PretrainedWeightsError(
            f"model_path '{model_path}' does not exist; give the path of a no-top Keras "
            "weights file (.h5 or .weights.h5) of this architecture.")
    model_path = str(Path(model_path).expanduser()) if model_path else None
    base = _base_network(name, config.use_pretrained, model_path)
    inputs = keras.Input(input_shape(name), name="image")
    x = inputs
    if name in APPLICATIONS:
        x = ApplicationPreprocessing(APPLICATIONS[name][1], name="preprocess")(x)
    if config.freeze_base_network:  # frozen BatchNorm layers keep their running statistics
        base.trainable = False
        x = base(x, training=False)
    else:
        x = base(x)
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    if config.dropout:
        x = keras.layers.Dropout(config.dropout, name="dropout")(x)
    plan = resolve_head(config.custom_head, num_classes)     # Monk's append_* layers
    outputs = apply_head(x, plan) if plan else keras.layers.Dense(num_classes, name="head")(x)
    return keras.Model(inputs, outputs, name=f"xrayprototype_{name}")


def base_layers(model: keras.Model) -> list:
    """(name, layer) of every layer of the base network that owns weights, in order (input side
    first; nested models flattened), the head excluded: the layers ``freeze_first`` counts."""
    layers = []

    def visit(layer):
        if isinstance(layer, keras.Model):
            for child in layer.layers:
                visit(child)
        elif layer.weights:
            layers.append((layer.name, layer))
    visit(next(layer for layer in model.layers if isinstance(layer, keras.Model)))
    return layers


def freeze_first(model: keras.Model, count: int) -> None:
    """Freeze the first ``count`` base layers (a frozen BatchNorm layer runs in inference mode,
    keeping its statistics); everything else, the head included, trains."""
    model.trainable = True            # recursive: every layer trainable again
    for position, (_, layer) in enumerate(base_layers(model)):
        layer.trainable = position >= count


def parameter_count(model: keras.Model) -> int:
    """Learnable parameters, frozen or not (as ``torch`` counts them): BatchNorm moving
    statistics and other non-trainable state are not parameters."""
    frozen = [layer for layer in model.layers if not layer.trainable]
    for layer in frozen:
        layer.trainable = True
    try:
        return sum(int(np.prod(v.shape)) for v in model.trainable_weights)
    finally:
        for layer in frozen:
            layer.trainable = False
