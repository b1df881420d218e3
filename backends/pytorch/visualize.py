"""The PyTorch visualization hooks: convolution kernels, convolution outputs (forward hooks)
and the model exported for Netron (ONNX when the ``onnx`` package is installed, else
TorchScript). The grids are drawn by the core (``xrayprototype.visualize``)."""
import importlib.util
from pathlib import Path
from typing import List, Tuple

import numpy as np
import torch
from torch import nn

from .export import write_onnx


def conv_layers(model: nn.Module) -> List[str]:
    """Names of the ``nn.Conv2d`` modules (timm's subclasses included), definition order."""
    return [name for name, module in model.named_modules() if isinstance(module, nn.Conv2d)]


def conv_kernels(model: nn.Module, layers: List[str]) -> List[Tuple[str, np.ndarray]]:
    return [(name, model.get_submodule(name).weight.detach().float().cpu().numpy().copy())
            for name in layers]


def conv_feature_maps(model: nn.Module, x: torch.Tensor,
                      layers: List[str]) -> List[Tuple[str, np.ndarray]]:
    """One inference pass with forward hooks keeping each layer's (first) output."""
    kept = {}

    def keep(name):
        def hook(_module, _inputs, output):
            kept.setdefault(name, output.detach().float().cpu().numpy())
        return hook

    handles = [model.get_submodule(name).register_forward_hook(keep(name)) for name in layers]
    try:
        with torch.inference_mode():
            model(x)
    finally:
        for handle in handles:
            handle.remove()
    return [(name, np.ascontiguousarray(kept[name], dtype=np.float32)) for name in layers]


def export_model(model: nn.Module, device: torch.device, stem: Path,
                 data_shape: Tuple[int, int, int]) -> Path:
    """``stem.onnx`` (opset of the installed torch) when ``onnx`` is installed, else
    ``stem.pt`` (TorchScript, ``torch.jit.load`` reads it); both hold the graph and weights."""
    dummy = torch.zeros(1, *data_shape, device=device)
    if importlib.util.find_spec("onnx") is not None:
        return write_onnx(model, dummy, Path(f"{stem}.onnx"))
    path = Path(f"{stem}.pt")
    with torch.no_grad():
        torch.jit.trace(model, dummy).save(str(path))
    return path
