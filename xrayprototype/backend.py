"""THE interface every framework backend implements, and the registry of backend names.

The core (data, epoch loop, schedules, metrics, state, plots) never imports a framework and
never branches on a backend's name: it calls the methods below, and reads differences from
``capabilities()``. Backends live in ``xrayprototype.backends.<name>`` and are imported only
when an experiment asks for them.

Batches cross the boundary as numpy arrays: float32 images, already decoded, resized,
augmented and normalised by the core, in the layout ``capabilities().layout``; int64 labels,
or (mixup) float32 target distributions of shape (N, classes).

Training recipes are the core's (``xrayprototype.recipes``): a backend only says in
``capabilities()`` which framework mechanics it has (soft targets, layer freezing,
discriminative learning rates), and the core refuses a recipe whose mechanics are missing.
"""
import abc
import importlib
import importlib.util
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Tuple, Type

import numpy as np

from .config import ModelConfig, OptimConfig
from .errors import BackendUnavailableError, ConfigError, unknown_name


@dataclass
class ModelInfo:
    """One model a backend can build, under a canonical name (``xrayprototype.models``) or a
    name with the backend's native prefix.

    Attributes:
        name: the name a user passes as ``model_name``.
        source: where the architecture comes from, e.g. "torchvision".
        normalization: the input normalisation the model was trained with, a key of the
            core's NORMALIZATIONS (e.g. "imagenet"), or "none" for 0..1 pixels.
        pretrained: where ImageNet weights come from, "" when none exist.
        min_input_size: the smallest input side (px) the network accepts.
        preprocessing_in_model: True when the network scales its input itself (its first
            layers apply the family's own normalisation, e.g. Keras applications'
            ``preprocess_input``): it takes 0..1 pixels (``normalization="none"``), and the
            core refuses an explicit normalisation, which would be a second one.
    """
    name: str
    source: str
    normalization: str = "imagenet"
    pretrained: str = ""
    min_input_size: int = 32
    preprocessing_in_model: bool = False


@dataclass
class Capabilities:
    """What a backend supports; the core validates names against this, never a backend name.

    ``models`` keys are canonical names (``xrayprototype.models.MODEL_NAMES``) or start with
    ``native_model_prefix``. ``input_channels`` are the image channel counts
    (``DataConfig.channels``) whose batches the backend's models take; the core checks the
    setting against it before ``build_model``. The shipped backends build every model for
    3-channel input (grayscale X-rays are replicated to RGB by the core) and declare ``(3,)``.
    """
    models: Dict[str, ModelInfo]
    optimizers: Tuple[str, ...]
    losses: Tuple[str, ...]
    layout: str = "NCHW"                 # image layout of the batches it receives
    native_model_prefix: Optional[str] = None   # e.g. "timm/" accepts any timm model name
    devices: Tuple[str, ...] = ("cpu",)
    soft_targets: bool = False           # train_step takes (N, classes) float targets (mixup)
    layer_freezing: bool = False         # base_layers() / set_frozen_layers() (fine-tune stages)
    discriminative_lr: bool = False      # configure() honours OptimConfig.base_lr_factor
    input_channels: Tuple[int, ...] = (3,)
    explanations: bool = False           # spatial_layers / layer_gradients / penultimate_features
    visualization: bool = False          # conv_layers / conv_kernels / conv_feature_maps /
                                         # export_model (Visualize_* verbs)
    multi_label: bool = False            # set_multi_label(True): sigmoid outputs, multi-hot BCE
    head_layers: Tuple[str, ...] = ()    # custom-head layer names it builds (head.HEAD_LAYERS)
    export_formats: Tuple[str, ...] = ()  # export_onnx() and its like (Export(format=...))
    momentum_cycling: Tuple[str, ...] = ()  # optimizers whose momentum set_momentum changes


@dataclass
class LayerGradients:
    """What ``Backend.layer_gradients`` returns for a batch of N images: one layer's output
    and the gradient of each image's chosen class score with respect to it, as numpy.

    Attributes:
        layer: the layer's name, one of ``Backend.spatial_layers()``.
        activations: float32 (N, C, h, w), channels first whatever the backend's layout.
        gradients: float32 (N, C, h, w): d scores[i, class_indices[i]] / d activations[i].
        scores: float64 (N, classes), the class scores (logits, before softmax) of the same
            forward pass, in eval mode.
        probabilities: float64 (N, classes), softmax of ``scores`` (what ``predict`` gives).
    """
    layer: str
    activations: np.ndarray
    gradients: np.ndarray
    scores: np.ndarray
    probabilities: np.ndarray


def check_explanation_layer(layers: List[str], layer: Optional[str]) -> str:
    """``layer``, or the default explanation layer (the last of ``layers``, a backend's
    ``spatial_layers()``); every backend's ``layer_gradients`` checks its argument with it.

    Raises:
        ConfigError: ``layers`` is empty (no spatial map to explain), or ``layer`` is not
            one of them (with close names, naming the default).

    Example:
        >>> check_explanation_layer(["layer3", "layer4"], None)
        'layer4'
    """
    if not layers:
        raise ConfigError("this model has no layer with a spatial output (a feature map): "
                          "Grad-CAM needs a convolutional model; choose e.g. 'resnet18'.")
    if layer is None:
        return layers[-1]
    if layer not in layers:
        raise unknown_name("explanation layer", layer, layers,
                           hint=f"the default is the last spatial block, '{layers[-1]}'.")
    return layer


def usable_cpu_count() -> int:
    """CPU cores this process may run on (its affinity mask where the OS has one, which a
    container or ``taskset`` narrows), at least 1. Backends size their thread pools with it.

    Example:
        >>> usable_cpu_count() >= 1
        True
    """
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # macOS, Windows
        return max(1, os.cpu_count() or 1)


class Backend(abc.ABC):
    """The framework calls of one experiment: model, optimizer, loss, steps, save and load."""

    #: registry name, e.g. "pytorch"
    name: str = ""
    #: multi-label mode (``set_multi_label``): sigmoid outputs and binary cross-entropy
    multi_label: bool = False

    def set_multi_label(self, enabled: bool) -> None:
        """Multi-label mode, set by the core before ``build_model`` (and kept until changed):
        ``predict`` / ``eval_step`` return independent per-class sigmoid probabilities, the
        loss ``configure`` creates is binary cross-entropy on float32 multi-hot (N, classes)
        targets (``class_weights`` are then per-class positive weights), and ``train_step``
        counts an image correct when every class is right at 0.5. Backends declare it in
        ``capabilities().multi_label``."""
        if enabled and not self.capabilities().multi_label:
            raise ConfigError(f"backend '{self.name}' has no multi-label mode "
                              "(capabilities().multi_label is False); train multi-label data "
                              "with pytorch, gluon or keras.")
        self.multi_label = bool(enabled)

    @classmethod
    @abc.abstractmethod
    def framework_versions(cls) -> Dict[str, str]:
        """Versions of the framework packages, recorded in the experiment state."""

    @abc.abstractmethod
    def capabilities(self) -> Capabilities:
        """Models, optimizers and losses by canonical name, and the batch layout."""

    @abc.abstractmethod
    def build_model(self, config: ModelConfig, num_classes: int) -> Dict:
        """Build ``config.model_name`` for 3-channel input with a new ``num_classes`` head
        (frozen base when asked), load pretrained or ``model_path`` weights; return
        ``{"num_parameters", "trainable_parameters", "device"}``. An unknown or undeclared
        model name raises ConfigError; asked-for weights that cannot be found raise
        PretrainedWeightsError. The core has checked ``DataConfig.channels`` against
        ``capabilities().input_channels`` before."""

    @abc.abstractmethod
    def configure(self, config: OptimConfig, class_weights: Optional[np.ndarray]) -> None:
        """Create the optimizer (over the parameters trainable now) and the loss. The learning
        rate is set per step by the core; with ``capabilities().discriminative_lr`` the base
        network's parameters then train at ``config.base_lr_factor`` times that rate."""

    @abc.abstractmethod
    def set_learning_rate(self, learning_rate: float) -> None:
        """Set the optimizer's learning rate (the core owns every schedule)."""

    @abc.abstractmethod
    def set_momentum(self, momentum: float) -> None:
        """Set the optimizer's momentum: ``beta1`` of the Adam family, else the heavy-ball
        momentum (the core calls it only for optimizers ``optim.cycled_momentum`` names, when
        a schedule cycles the momentum, e.g. one-cycle's ``cycle_momentum``)."""

    @abc.abstractmethod
    def train_step(self, images: np.ndarray, labels: np.ndarray) -> Tuple[float, int]:
        """One optimisation step; return (mean loss, number of correct predictions).

        ``labels`` are int64 class indices (N,), or, with ``capabilities().soft_targets``,
        float32 target distributions (N, classes) (mixup): the loss is then the cross-entropy
        (or focal loss) against the distribution, label smoothing applies on top of it, a
        sample's class weight is its target-weighted mean ``targets @ class_weights``, and a
        prediction is correct when it is the target's dominant class."""

    @abc.abstractmethod
    def eval_step(self, images: np.ndarray, labels: np.ndarray) -> Tuple[float, np.ndarray]:
        """No update; return (mean loss, class probabilities of shape (N, classes))."""

    @abc.abstractmethod
    def predict(self, images: np.ndarray) -> np.ndarray:
        """Class probabilities of shape (N, classes), as float64 numpy."""

    @abc.abstractmethod
    def save(self, stem: Path, with_optimizer: bool = False) -> List[Path]:
        """Write weights (and optimizer state) as files starting with ``stem``; never a pickle
        of Python objects. Return the files written."""

    @abc.abstractmethod
    def load(self, stem: Path, with_optimizer: bool = False) -> None:
        """Load what ``save(stem, with_optimizer)`` wrote into the built model."""

    @abc.abstractmethod
    def seed(self, seed: int) -> None:
        """Seed the framework's random number generators (dropout, head initialisation)."""

    def limit_gpu_memory(self, fraction: float) -> str:
        """Cap the GPU memory this process may take at ``fraction`` (0, 1] of each GPU's
        memory (Monk's Keras ``gpu_memory_fraction``), before the first model is built;
        returns one line saying what was done. This default: the framework has no such cap,
        and says so; a backend that has one overrides it (a no-op with a note when there is
        no GPU)."""
        return (f"gpu_memory_fraction={fraction}: backend '{self.name}' has no per-process GPU "
                "memory cap, so the setting is stored but not applied; the framework takes "
                "GPU memory as it needs it.")

    @abc.abstractmethod
    def named_weights(self) -> List[Tuple[str, np.ndarray]]:
        """The model's tensors (parameters and normalisation statistics) as numpy copies, in
        definition order: the first is the stem's, the last the classification head's.
        Changing them changes nothing in the model."""

    # ----------------------------------------------------------------- explanations
    # Declared by ``capabilities().explanations``; the CAM math, upsampling and overlays are
    # the core's (``xrayprototype.explain``). All three run the model in eval mode and change
    # nothing in it.
    def spatial_layers(self) -> List[str]:
        """Names of the built model's layers whose output is a spatial feature map (N, C, h, w
        or N, h, w, C), input side first; global pooling layers and the head excluded. The
        last is the default explanation layer: the last spatial block before global pooling.
        Empty for a model without spatial features (e.g. a vision transformer)."""
        raise ConfigError(self._cannot_explain())

    def layer_gradients(self, images: np.ndarray, class_indices: np.ndarray,
                        layer: Optional[str] = None) -> "LayerGradients":
        """Activations of ``layer`` (default ``spatial_layers()[-1]``) for a batch of images
        in the backend's layout and the gradients of each image's class score (logit)
        ``class_indices[i]`` with respect to them; see :class:`LayerGradients`. A name that
        is not one of ``spatial_layers()`` raises ConfigError with close names."""
        raise ConfigError(self._cannot_explain())

    def penultimate_features(self, images: np.ndarray) -> np.ndarray:
        """float64 (N, D): the input of the classification head (after global pooling), in
        eval mode; the features that embeddings (t-SNE, PCA) show."""
        raise ConfigError(self._cannot_explain())

    def _cannot_explain(self) -> str:
        return (f"backend '{self.name}' has no explanation hooks (capabilities().explanations "
                "is False); train the experiment with a backend that has them (pytorch, gluon, "
                "keras) to use Explain, Top_Losses or Embeddings.")

    # ----------------------------------------------------------------- Monk v1 models
    def load_monk_model(self, model_dir: Path, trust_pickled_model: bool = False) -> Dict:
        """Make the whole network a Monk v1 run saved in ``model_dir`` (its ``output/models/``:
        the ``final`` model) the model in use, for ``predict`` and ``eval_step`` only; its
        output is taken as class scores (a final softmax or sigmoid of the file is removed).
        Framework files whose loading runs no code are read directly; a pickled Python object
        (PyTorch's ``torch.save(model)``) only with ``trust_pickled_model`` (unpickling runs
        code from the file), and without it is refused before the file is opened. A missing
        or damaged file raises ModelFileError naming it (``monk_workspace.model_file_error``).
        Returns
        ``{"num_parameters", "trainable_parameters", "device", "files"}``."""
        raise ConfigError(f"backend '{self.name}' cannot read Monk v1 models; open the "
                          "experiment with the backend of Monk's library.")

    # ----------------------------------------------------------------- visualization
    # Declared by ``capabilities().visualization``; the grids are drawn by the core
    # (``xrayprototype.visualize``). None of these changes the model.
    def conv_layers(self) -> List[str]:
        """Names of the built model's 2-D convolution layers, input side first (the first is
        the stem's), each one module / block / layer of the framework."""
        raise ConfigError(self.cannot_visualize())

    def conv_kernels(self, layers: List[str]) -> List[Tuple[str, np.ndarray]]:
        """``(name, kernels)`` of each of ``layers`` (names of ``conv_layers()``), kernels as
        float32 (out_channels, in_channels_per_group, kh, kw) numpy copies."""
        raise ConfigError(self.cannot_visualize())

    def conv_feature_maps(self, images: np.ndarray,
                          layers: List[str]) -> List[Tuple[str, np.ndarray]]:
        """``(name, outputs)`` of each of ``layers`` for a batch in the backend's layout, in
        eval mode; outputs float32 (N, C, h, w), channels first whatever the layout."""
        raise ConfigError(self.cannot_visualize())

    def export_model(self, stem: Path, data_shape: Tuple[int, int, int]) -> Path:
        """Write the built model, for an input of ``data_shape`` (channels, height, width), as
        a file a model viewer (Netron) reads, named ``stem`` plus the format's suffix; return
        the file to open. Loading it back must not need this library."""
        raise ConfigError(self.cannot_visualize())

    def export_onnx(self, path: Path, data_shape: Tuple[int, int, int]) -> Path:
        """Write the built model (eval mode) as the ONNX file ``path`` for a batch of images of
        ``data_shape`` (channels, height, width), any batch size: its one input is the float32
        batch ``predict`` takes (``capabilities().layout``, normalised by the core), its one
        output what ``predict`` returns (softmax, or sigmoid in multi-label mode). The file
        runs in ``onnxruntime`` without this library or the framework. Declared by
        ``"onnx"`` in ``capabilities().export_formats``; the core names the file's input and
        output and writes the sidecar (``xrayprototype.export``)."""
        raise ConfigError(f"backend '{self.name}' cannot export to ONNX (capabilities()."
                          "export_formats has no 'onnx'); train the experiment with a backend "
                          "that can (pytorch, gluon, keras) to use Export.")

    def cannot_visualize(self) -> str:
        return (f"backend '{self.name}' has no visualization hooks (capabilities()."
                "visualization is False); Visualize_Kernels, Visualize_Feature_Maps and "
                "Visualize_With_Netron need a backend that has them (pytorch, gluon, keras).")

    def base_layers(self) -> List[str]:
        """Names of the base network's layers that own parameters, input side first (the
        new classification head excluded); ``set_frozen_layers`` counts these."""
        raise ConfigError(f"backend '{self.name}' cannot freeze single layers (fine-tune "
                          "stages and freeze_layers need it); use freeze_base_network, or a "
                          "backend whose capabilities() has layer_freezing.")

    def set_frozen_layers(self, count: int) -> Dict:
        """Freeze the first ``count`` of ``base_layers()`` (frozen BatchNorm layers keep
        their running statistics) and make every other layer, the head included, trainable;
        the core calls ``configure`` afterwards. Return ``{"trainable_parameters": ...}``."""
        self.base_layers()
        raise NotImplementedError

    def snapshot_weights(self):
        """A copy of the model's weights (and normalisation statistics) that
        ``restore_weights`` puts back, e.g. around a learning-rate range test. This default
        goes through ``save`` / ``load`` in a temporary folder."""
        folder = Path(tempfile.mkdtemp(prefix="xrayprototype-snapshot-"))
        self.save(folder / "snapshot")
        return folder

    def restore_weights(self, snapshot) -> None:
        """Put back the weights of ``snapshot_weights()`` (the snapshot is used up)."""
        try:
            self.load(Path(snapshot) / "snapshot")
        finally:
            shutil.rmtree(snapshot, ignore_errors=True)


@dataclass
class BackendEntry:
    module: str
    class_name: str
    framework_module: str
    extra: str
    aliases: Tuple[str, ...] = field(default_factory=tuple)


REGISTRY: Dict[str, BackendEntry] = {
    "pytorch": BackendEntry("xrayprototype.backends.pytorch", "PyTorchBackend", "torch",
                            "pytorch", ("torch",)),
    "gluon": BackendEntry("xrayprototype.backends.gluon", "GluonBackend", "mxnet",
                          "gluon", ("mxnet",)),
    "keras": BackendEntry("xrayprototype.backends.keras", "KerasBackend", "tensorflow",
                          "keras", ("tensorflow", "tf")),
}
DEFAULT_BACKEND = "pytorch"


def canonical_backend_name(name: str) -> str:
    """``"torch"`` -> ``"pytorch"``; unknown names raise with a suggestion."""
    lowered = str(name).lower()
    for key, entry in REGISTRY.items():
        if lowered == key or lowered in entry.aliases:
            return key
    raise unknown_name("backend", name, [n for key, e in REGISTRY.items() for n in (key, *e.aliases)])


def install_command(name: str) -> str:
    extra = REGISTRY[canonical_backend_name(name)].extra
    return f"pip install -c constraints.txt 'xrayprototype[{extra}]'"


def is_installed(name: str) -> bool:
    """Whether the backend's framework is installed, without importing it."""
    entry = REGISTRY[canonical_backend_name(name)]
    return importlib.util.find_spec(entry.framework_module) is not None and \
        importlib.util.find_spec(entry.module) is not None


def installed_backends() -> List[str]:
    return [name for name in REGISTRY if is_installed(name)]


def get_backend_class(name: str) -> Type[Backend]:
    """Import and return the Backend subclass registered as ``name``."""
    key = canonical_backend_name(name)
    entry = REGISTRY[key]
    if importlib.util.find_spec(entry.module) is None:
        raise BackendUnavailableError(
            f"backend '{key}' is not part of this xrayprototype version (available: "
            f"{', '.join(n for n in REGISTRY if importlib.util.find_spec(REGISTRY[n].module))}).")
    if not is_installed(key):
        raise BackendUnavailableError(
            f"backend '{key}' needs {entry.framework_module}, which is not installed here; "
            f"install it with: {install_command(key)}  (installed backends: "
            f"{', '.join(installed_backends()) or 'none'})")
    module = importlib.import_module(entry.module)
    return getattr(module, entry.class_name)


def create_backend(name: str, **options) -> Backend:
    return get_backend_class(name)(**options)
