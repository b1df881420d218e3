"""The PyTorch ONNX export (``Export(format="onnx")``) with ``torch.onnx``: the model as
``predict`` runs it, NHWC float32 batches in (permuted to NCHW inside the graph), softmax (or
sigmoid, multi-label) probabilities out, any batch size. ``visualize.export_model`` (Netron)
writes its file with the same ``write_onnx``."""
import warnings
from pathlib import Path
from typing import Tuple

import torch
from torch import nn


class _AsPredicted(nn.Module):
    """``model`` between the batches the backend receives and the probabilities it returns."""

    def __init__(self, model: nn.Module, multi_label: bool):
        super().__init__()
        self.model, self.multi_label = model, multi_label

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        logits = self.model(images.permute(0, 3, 1, 2))
        return logits.sigmoid() if self.multi_label else logits.softmax(dim=1)


def write_onnx(module: nn.Module, example: torch.Tensor, path: Path,
               output_name: str = "scores", any_batch_size: bool = False) -> Path:
    """``module`` traced on ``example`` into the ONNX file ``path`` (the opset of the
    installed torch), input "image"; with ``any_batch_size`` the first axis is dynamic."""
    axes = {"image": {0: "batch"}, output_name: {0: "batch"}} if any_batch_size else None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")     # the TorchScript-based exporter's deprecation
        torch.onnx.export(module, (example,), str(path), dynamo=False, input_names=["image"],
                          output_names=[output_name], dynamic_axes=axes)
    return Path(path)


def export_onnx(model: nn.Module, device: torch.device, path: Path,
                data_shape: Tuple[int, int, int], multi_label: bool) -> Path:
    """``path``: the model (in eval mode, as the backend left it) with its activation."""
    channels, height, width = data_shape
    example = torch.zeros(1, height, width, channels, device=device)
    # in eval mode: torch.onnx.export puts the module back in the mode it found it in
    return write_onnx(_AsPredicted(model, multi_label).eval(), example, path, "probabilities",
                      any_batch_size=True)
