"""The PyTorch explanation hooks: a layer's activations and the gradients of a class score with
respect to them (forward hooks + ``torch.autograd.grad``), and the classification head's input.

The CAM math is the core's (``xrayprototype.explain``); this file only reads tensors.
"""
from typing import Dict, List, Tuple

import numpy as np
import torch
from torch import nn

from xrayprototype.backend import LayerGradients

from .models import head_parameters

#: global pools reduce a feature map to a vector; they are never an explanation layer
GLOBAL_POOLS = (nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)
#: the input side probed to find which layers give spatial maps
PROBE_SIZE = 96


def head_module(model: nn.Module) -> Tuple[str, nn.Module]:
    """(name, module) of the smallest module owning every head parameter."""
    head = {id(p) for p in head_parameters(model)}
    owners = [(name, module) for name, module in model.named_modules()
              if head and head <= {id(p) for p in module.parameters()}]
    return owners[-1]


def _is_global_pool(module: nn.Module) -> bool:
    return isinstance(module, GLOBAL_POOLS) or type(module).__name__ == "SelectAdaptivePool2d"


#: modules that pass a map through unchanged at inference: never chosen as the layer
PASS_THROUGH = (nn.Dropout, nn.Dropout2d, nn.Identity)


def spatial_layers(model: nn.Module, device: torch.device) -> List[str]:
    """Names of the modules whose output is 4-D and whose forward completes before the head
    starts, in that order, each called once per forward pass; global pools, pass-through
    modules and the model itself excluded. The last is the last spatial block before global
    pooling (``layer4`` of a ResNet, ``features`` of a DenseNet)."""
    head_name, head = head_module(model)
    calls: Dict[str, int] = {}
    order: List[str] = []
    head_started = []

    def record(name):
        def hook(_module, _inputs, output):
            calls[name] = calls.get(name, 0) + 1
            if not head_started and isinstance(output, torch.Tensor) and output.dim() == 4 \
                    and name not in order:
                order.append(name)
        return hook

    handles = [module.register_forward_hook(record(name))
               for name, module in model.named_modules()
               if name and not _is_global_pool(module) and not isinstance(module, PASS_THROUGH)]
    handles.append(head.register_forward_pre_hook(lambda *_: head_started.append(True)))
    training = model.training
    try:
        model.eval()
        with torch.inference_mode():
            model(torch.zeros(1, 3, PROBE_SIZE, PROBE_SIZE, device=device))
    finally:
        model.train(training)
        for handle in handles:
            handle.remove()
    return [name for name in order if calls[name] == 1]


def layer_gradients(model: nn.Module, x: torch.Tensor, class_indices: np.ndarray,
                    layer: str) -> LayerGradients:
    """One forward pass with a hook keeping ``layer``'s output, then d score / d output."""
    module = model.get_submodule(layer)
    kept = {}

    def keep(_module, _inputs, output):
        kept["activations"] = output
        return output.clone()      # a later in-place op (densenet's relu) changes the clone

    handle = module.register_forward_hook(keep)
    try:
        with torch.enable_grad():
            x = x.detach().clone().requires_grad_(True)   # a graph even for a frozen base
            scores = model(x)
            index = torch.as_tensor(np.asarray(class_indices, dtype=np.int64), device=x.device)
            chosen = scores.gather(1, index[:, None]).sum()
            gradients, = torch.autograd.grad(chosen, kept["activations"])
    finally:
        handle.remove()
    scores = scores.detach().double()
    return LayerGradients(layer, kept["activations"].detach().float().cpu().numpy(),
                          gradients.detach().float().cpu().numpy(), scores.cpu().numpy(),
                          scores.softmax(dim=1).cpu().numpy())


def penultimate_features(model: nn.Module, x: torch.Tensor) -> np.ndarray:
    """The head's input for batch ``x``; a spatial input (squeezenet) is averaged over space."""
    kept = {}

    def keep(_module, inputs):
        kept["features"] = inputs[0]

    handle = head_module(model)[1].register_forward_pre_hook(keep)
    try:
        with torch.inference_mode():
            model(x)
    finally:
        handle.remove()
    features = kept["features"]
    if features.dim() == 4:
        features = features.mean(dim=(2, 3))
    return features.flatten(1).double().cpu().numpy()
