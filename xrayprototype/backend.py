"""THE interface every framework backend implements, and the registry of backend names.

The core (data, epoch loop, schedules, metrics, state, plots) never imports a framework and
never branches on a backend's name: it calls the methods below, and reads differences from
``capabilities()``. Backends live in ``xrayprototype.backends.<name>`` and are imported only
when an experiment asks for them.

Batches cross the boundary as numpy arrays: float32 images, already decoded, resized,
augmented and normalised by the core, in the layout ``capabilities().layout``; int64 labels.
"""
import abc
import importlib
import importlib.util
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Tuple, Type

import numpy as np

from .config import ModelConfig, OptimConfig
from .errors import BackendUnavailableError, unknown_name


@dataclass
class ModelInfo:
    """One model a backend can build under a canonical name."""
    name: str
    source: str                          # where the architecture comes from, e.g. "torchvision"
    normalization: str = "imagenet"      # a key of NORMALIZATIONS in prototype, or "none"
    pretrained: str = ""                 # where ImageNet weights come from, "" when none exist
    min_input_size: int = 32


@dataclass
class Capabilities:
    """What a backend supports; the core validates names against this, never a backend name."""
    models: Dict[str, ModelInfo]
    optimizers: Tuple[str, ...]
    losses: Tuple[str, ...]
    layout: str = "NCHW"                 # image layout of the batches it receives
    native_model_prefix: Optional[str] = None   # e.g. "timm/" accepts any timm model name
    devices: Tuple[str, ...] = ("cpu",)


class Backend(abc.ABC):
    """The framework calls of one experiment: model, optimizer, loss, steps, save and load."""

    #: registry name, e.g. "pytorch"
    name: str = ""

    @classmethod
    @abc.abstractmethod
    def framework_versions(cls) -> Dict[str, str]:
        """Versions of the framework packages, recorded in the experiment state."""

    @abc.abstractmethod
    def capabilities(self) -> Capabilities:
        """Models, optimizers and losses by canonical name, and the batch layout."""

    @abc.abstractmethod
    def build_model(self, config: ModelConfig, num_classes: int, channels: int) -> Dict:
        """Build the network with a new ``num_classes`` head (frozen base when asked), load
        pretrained or ``model_path`` weights; return ``{"num_parameters", "trainable_parameters",
        "device"}``. Raises PretrainedWeightsError when asked-for weights cannot be found."""

    @abc.abstractmethod
    def configure(self, config: OptimConfig, class_weights: Optional[np.ndarray]) -> None:
        """Create the optimizer and the loss. The learning rate is set per step by the core."""

    @abc.abstractmethod
    def set_learning_rate(self, learning_rate: float) -> None:
        """Set the optimizer's learning rate (the core owns every schedule)."""

    @abc.abstractmethod
    def train_step(self, images: np.ndarray, labels: np.ndarray) -> Tuple[float, int]:
        """One optimisation step; return (mean loss, number of correct predictions)."""

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

    def peak_memory(self) -> Dict[str, int]:
        """Peak accelerator memory in bytes, e.g. ``{"gpu_bytes": ...}``; {} on CPU."""
        return {}

    def reset_peak_memory(self) -> None:
        """Start a new peak-memory measurement."""


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
