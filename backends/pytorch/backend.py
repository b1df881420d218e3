"""PyTorchBackend: the framework calls of one experiment, nothing else."""
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from xrayprototype.backend import Backend, Capabilities
from xrayprototype.config import ModelConfig, OptimConfig
from xrayprototype.errors import ConfigError
from xrayprototype.optim import LOSSES, OPTIMIZERS

from .models import (TIMM_PREFIX, base_layers, create_model, freeze_base, freeze_first,
                     head_parameters, model_table)


def _optimizer(name: str, parameters, lr: float, p: Dict) -> torch.optim.Optimizer:
    betas = (p.get("beta1", 0.9), p.get("beta2", 0.999))
    builders = {
        "sgd": lambda: torch.optim.SGD(parameters, lr, momentum=p["momentum"],
                                       weight_decay=p["weight_decay"]),
        "nesterov_sgd": lambda: torch.optim.SGD(parameters, lr, momentum=p["momentum"],
                                                weight_decay=p["weight_decay"], nesterov=True),
        "rmsprop": lambda: torch.optim.RMSprop(parameters, lr, alpha=p["decay_rate"],
                                               eps=p["epsilon"], momentum=p["momentum"],
                                               weight_decay=p["weight_decay"]),
        "adam": lambda: torch.optim.Adam(parameters, lr, betas=betas, eps=p["epsilon"],
                                         weight_decay=p["weight_decay"], amsgrad=p["amsgrad"]),
        "adamw": lambda: torch.optim.AdamW(parameters, lr, betas=betas, eps=p["epsilon"],
                                           weight_decay=p["weight_decay"]),
        "adamax": lambda: torch.optim.Adamax(parameters, lr, betas=betas, eps=p["epsilon"],
                                             weight_decay=p["weight_decay"]),
        "adagrad": lambda: torch.optim.Adagrad(parameters, lr, eps=p["epsilon"],
                                               weight_decay=p["weight_decay"]),
        "adadelta": lambda: torch.optim.Adadelta(parameters, lr, rho=p["rho"], eps=p["epsilon"],
                                                 weight_decay=p["weight_decay"]),
    }
    return builders[name]()


class ClassificationLoss(nn.Module):
    """Softmax cross-entropy or focal loss, with label smoothing and class weights; labels are
    class indices, or (N, C) target distributions (mixup, see ``soft_targets``)."""

    def __init__(self, name: str, params: Dict, class_weights: Optional[torch.Tensor]):
        super().__init__()
        self.name, self.smoothing = name, float(params.get("label_smoothing") or 0.0)
        self.gamma = float(params.get("gamma") or 0.0)
        alpha = params.get("alpha")
        weights = class_weights
        if alpha is not None:
            alpha = torch.as_tensor(alpha, dtype=torch.float32)
            weights = alpha if weights is None else weights * alpha
        self.register_buffer("weights", weights if weights is not None else None)

    def forward(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        if labels.dim() == 2:
            return self.soft_targets(logits, labels)
        if self.name == "softmax_crossentropy":
            return F.cross_entropy(logits, labels, weight=self.weights,
                                   label_smoothing=self.smoothing)
        per_sample = F.cross_entropy(logits, labels, reduction="none",
                                     label_smoothing=self.smoothing)
        true_probability = logits.softmax(dim=1).gather(1, labels[:, None]).squeeze(1)
        focal = (1.0 - true_probability).clamp(min=0).pow(self.gamma) * per_sample
        if self.weights is not None:
            weight = self.weights.expand(logits.shape[1])[labels]
            return (focal * weight).sum() / weight.sum()
        return focal.mean()

    def soft_targets(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Cross-entropy (focal: ``-sum_c t_c (1 - p_c)^gamma log p_c``) against smoothed
        target distributions; a sample's weight is ``targets @ class_weights``."""
        classes = logits.shape[1]
        smoothed = targets * (1.0 - self.smoothing) + self.smoothing / classes
        log_p = logits.log_softmax(dim=1)
        if self.name == "focal":
            log_p = (1.0 - log_p.exp()).clamp(min=0).pow(self.gamma) * log_p
        per_sample = -(smoothed * log_p).sum(dim=1)
        if self.weights is None:
            return per_sample.mean()
        weight = targets @ self.weights.expand(classes)
        return (per_sample * weight).sum() / weight.sum()


class PyTorchBackend(Backend):
    """torchvision / timm models trained with torch.optim, saved as safetensors."""

    name = "pytorch"

    def __init__(self):
        self.model: Optional[nn.Module] = None
        self.optimizer: Optional[torch.optim.Optimizer] = None
        self.loss_fn: Optional[nn.Module] = None
        self.device = torch.device("cpu")
        self._training_mode: Optional[bool] = None

    @classmethod
    def framework_versions(cls) -> Dict[str, str]:
        from importlib.metadata import PackageNotFoundError, version

        from ._compat import import_torchvision
        try:
            timm_version = version("timm")      # metadata, not `import timm` (about 1 s)
        except PackageNotFoundError:
            timm_version = "not installed"
        return {"torch": torch.__version__, "torchvision": import_torchvision().__version__,
                "timm": timm_version}

    def capabilities(self) -> Capabilities:
        devices = ("cpu", "cuda") if torch.cuda.is_available() else ("cpu",)
        return Capabilities(model_table(), tuple(OPTIMIZERS), tuple(LOSSES), "NHWC",
                            TIMM_PREFIX, devices, soft_targets=True, layer_freezing=True,
                            discriminative_lr=True)

    def build_model(self, config: ModelConfig, num_classes: int, channels: int) -> Dict:
        if channels != 3:
            raise ConfigError("the pytorch backend feeds 3-channel images (grayscale X-rays are "
                              f"replicated); got channels={channels}.")
        self.device = torch.device("cuda" if config.use_gpu and torch.cuda.is_available() else "cpu")
        model = create_model(config.model_name, num_classes, config.use_pretrained,
                             config.dropout, config.model_path)
        if config.freeze_base_network:
            freeze_base(model)
        # channels_last: NHWC batches become NCHW views without a copy, and convolutions run
        # 10-25% faster on CPU (measured for ResNet18 at 64-224 px) than in contiguous NCHW
        self.model = model.to(self.device, memory_format=torch.channels_last)
        self._track_frozen_norms()
        return {"num_parameters": sum(p.numel() for p in model.parameters()),
                "trainable_parameters": self._trainable_count(), "device": str(self.device)}

    def _trainable_count(self) -> int:
        return sum(p.numel() for p in self.model.parameters() if p.requires_grad)

    def _track_frozen_norms(self) -> None:
        self._frozen_norms = [m for m in self.model.modules()
                              if isinstance(m, nn.modules.batchnorm._BatchNorm)
                              and not any(p.requires_grad for p in m.parameters())]
        self._training_mode = None

    def base_layers(self) -> List[str]:
        return [name for name, _ in base_layers(self.model)]

    def set_frozen_layers(self, count: int) -> Dict:
        freeze_first(self.model, count)
        self._track_frozen_norms()
        return {"trainable_parameters": self._trainable_count()}

    def configure(self, config: OptimConfig, class_weights: Optional[np.ndarray]) -> None:
        """One parameter group, or with ``base_lr_factor`` != 1 the head's and the base's,
        the base's carrying ``lr_scale`` (``set_learning_rate`` multiplies by it)."""
        trainable = [p for p in self.model.parameters() if p.requires_grad]
        head = {id(p) for p in head_parameters(self.model)}
        base = [p for p in trainable if id(p) not in head]
        groups = trainable
        if config.base_lr_factor != 1.0 and base:
            groups = [{"params": [p for p in trainable if id(p) in head], "lr_scale": 1.0},
                      {"params": base, "lr_scale": float(config.base_lr_factor)}]
        self.optimizer = _optimizer(config.optimizer, groups, config.learning_rate,
                                    config.optimizer_params)
        weights = None if class_weights is None else torch.as_tensor(class_weights, dtype=torch.float32)
        self.loss_fn = ClassificationLoss(config.loss, config.loss_params, weights).to(self.device)

    def set_learning_rate(self, learning_rate: float) -> None:
        for group in self.optimizer.param_groups:
            group["lr"] = learning_rate * group.get("lr_scale", 1.0)

    def _mode(self, training: bool) -> None:
        if self._training_mode is training:
            return
        self.model.train(training)
        for norm in self._frozen_norms:  # a frozen base keeps its running statistics
            norm.eval()
        self._training_mode = training

    def _tensors(self, images: np.ndarray, labels: Optional[np.ndarray] = None):
        """NHWC numpy -> an NCHW tensor in channels_last memory (a view, no copy on CPU)."""
        x = torch.from_numpy(images).permute(0, 3, 1, 2).to(self.device, non_blocking=True)
        y = None if labels is None else torch.from_numpy(labels).to(self.device, non_blocking=True)
        return x, y

    def train_step(self, images: np.ndarray, labels: np.ndarray) -> Tuple[float, int]:
        self._mode(True)
        x, y = self._tensors(images, labels)
        logits = self.model(x)
        loss = self.loss_fn(logits, y)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        target = y.argmax(1) if y.dim() == 2 else y        # mixup: the dominant label
        return float(loss.detach()), int((logits.detach().argmax(1) == target).sum())

    def eval_step(self, images: np.ndarray, labels: np.ndarray) -> Tuple[float, np.ndarray]:
        self._mode(False)
        x, y = self._tensors(images, labels)
        with torch.inference_mode():
            logits = self.model(x)
            loss = self.loss_fn(logits, y) if self.loss_fn is not None else F.cross_entropy(logits, y)
        return float(loss), logits.softmax(dim=1).double().cpu().numpy()

    def predict(self, images: np.ndarray) -> np.ndarray:
        self._mode(False)
        x, _ = self._tensors(images)
        with torch.inference_mode():
            return self.model(x).softmax(dim=1).double().cpu().numpy()

    def save(self, stem: Path, with_optimizer: bool = False) -> List[Path]:
        from safetensors.torch import save_file

        weights = Path(f"{stem}.safetensors")
        state = {k: v.detach().contiguous().cpu() for k, v in self.model.state_dict().items()}
        save_file(state, str(weights))
        written = [weights]
        if with_optimizer and self.optimizer is not None:
            optimizer_file = Path(f"{stem}.optimizer.pt")
            torch.save(self.optimizer.state_dict(), optimizer_file)
            written.append(optimizer_file)
        return written

    def load(self, stem: Path, with_optimizer: bool = False) -> None:
        from safetensors.torch import load_file

        self.model.load_state_dict(load_file(f"{stem}.safetensors", device=str(self.device)))
        if with_optimizer:
            state = torch.load(f"{stem}.optimizer.pt", map_location=self.device, weights_only=True)
            self.optimizer.load_state_dict(state)

    def seed(self, seed: int) -> None:
        torch.manual_seed(seed)

    def peak_memory(self) -> Dict[str, int]:
        if self.device.type == "cuda":
            return {"gpu_bytes": int(torch.cuda.max_memory_allocated(self.device))}
        return {}

    def reset_peak_memory(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
