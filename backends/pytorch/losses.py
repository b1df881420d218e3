"""The core's loss names (``xrayprototype.optim.LOSSES``) as one ``nn.Module``: softmax
cross-entropy or focal loss, with label smoothing and class weights, on class indices or on
(N, C) target distributions (mixup).

Example:
    >>> loss_fn = ClassificationLoss("focal", {"gamma": 2.0, "alpha": None,
    ...                               "label_smoothing": 0.0}, None)
    >>> loss = loss_fn(logits, labels)
"""
from typing import Dict, Optional

import torch
import torch.nn.functional as F
from torch import nn

from xrayprototype.losses import GENERIC_LOSSES, batch_loss
from xrayprototype.optim import LOSSES

#: the loss names this backend computes (all of the core's)
LOSS_NAMES = tuple(LOSSES)


class ClassificationLoss(nn.Module):
    """Softmax cross-entropy or focal loss, with label smoothing and class weights; labels are
    class indices, or (N, C) target distributions (mixup, see ``soft_targets``)."""

    def __init__(self, name: str, params: Dict, class_weights: Optional[torch.Tensor]):
        super().__init__()
        self.name, self.smoothing = name, float(params.get("label_smoothing") or 0.0)
        self.params = dict(params)
        self.gamma = float(params.get("gamma") or 0.0)
        alpha = params.get("alpha")
        weights = class_weights
        if alpha is not None:
            alpha = torch.as_tensor(alpha, dtype=torch.float32)
            weights = alpha if weights is None else weights * alpha
        self.register_buffer("weights", weights if weights is not None else None)

    def forward(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        if self.name in GENERIC_LOSSES:
            return self.generic(logits, labels)
        return self.builtin(logits, labels) * float(self.params.get("weight", 1.0))

    def builtin(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Softmax cross-entropy or focal loss."""
        if labels.dim() == 2:
            return self.soft_targets(logits, labels)
        if self.name == "softmax_crossentropy" and self.weights is not None and self.smoothing:
            # F.cross_entropy would weight each smoothing term by its own class; a sample
            # weighs its true class's weight, as on the other backends and with mixup
            return self.soft_targets(logits, F.one_hot(labels, logits.shape[1]).float())
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

    def generic(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Monk's other losses, defined once in ``xrayprototype.losses`` (``TORCH_OPS``)."""
        targets = labels.float() if labels.dim() == 2 else \
            F.one_hot(labels.long(), logits.shape[1]).float()
        weighted = None if self.weights is None else targets @ self.weights.expand(logits.shape[1])
        return batch_loss(TORCH_OPS, self.name, self.params, logits.float(), targets,
                          weighted_targets=weighted)


class MultiLabelLoss(nn.Module):
    """Multi-label mode: binary cross-entropy of each class's sigmoid on float (N, C)
    multi-hot targets, the mean over images and classes; ``pos_weight`` (one per class)
    weighs the positive term of each class (``BCEWithLogitsLoss(pos_weight=...)``); ``scale``
    multiplies the loss (Monk's loss ``weight``)."""

    def __init__(self, pos_weight: Optional[torch.Tensor] = None, scale: float = 1.0):
        super().__init__()
        self.register_buffer("pos_weight", pos_weight)
        self.scale = float(scale)

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return self.scale * F.binary_cross_entropy_with_logits(
            logits, targets.to(logits.dtype), pos_weight=self.pos_weight)


class _TorchOps:
    """The operations ``xrayprototype.losses`` computes with, on torch tensors."""
    log_softmax = staticmethod(lambda z: F.log_softmax(z, dim=1))
    softmax = staticmethod(lambda z: F.softmax(z, dim=1))
    softplus = staticmethod(F.softplus)
    relu = staticmethod(torch.relu)
    abs = staticmethod(torch.abs)
    exp = staticmethod(torch.exp)
    log = staticmethod(torch.log)
    clip_max = staticmethod(lambda x, v: torch.clamp(x, max=v))
    row_sum = staticmethod(lambda x: x.sum(dim=1))
    row_sum_keep = staticmethod(lambda x: x.sum(dim=1, keepdim=True))
    sub_col = staticmethod(lambda x, col: x - col)
    mean = staticmethod(torch.mean)
    sum = staticmethod(torch.sum)


TORCH_OPS = _TorchOps()
