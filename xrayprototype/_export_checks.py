"""The contract check of ``Backend.export_onnx`` (``"onnx"`` in ``capabilities().
export_formats``); ``xrayprototype.testing`` runs it. It needs onnx and onnxruntime (the
``export`` extra) and passes without a word when they are not installed."""
import importlib.util
from pathlib import Path

import numpy as np

from ._backend_checks import Subject, require


def check_export_onnx(subject: Subject, folder: Path) -> None:
    """``export_onnx`` writes a file (after the core's ``finish_onnx_file``) that onnxruntime
    runs on a batch of another size than the example's, giving what ``predict`` gives, and
    leaves the model's predictions as they were (eval mode kept). With ``capabilities().
    multi_label`` the model is built multi-label (3 classes), so that the graph must end in
    the per-class sigmoid; tests/test_export.py checks the softmax of trained models."""
    if any(importlib.util.find_spec(name) is None for name in ("onnx", "onnxruntime")):
        return
    import onnxruntime

    from .export import INPUT_NAME, finish_onnx_file

    multi_label = subject.capabilities.multi_label
    backend, _ = subject.build(3, multi_label=multi_label)
    images, _ = subject.batch(3, classes=3)
    before = backend.predict(images)
    path = folder / "model.onnx"
    backend.export_onnx(path, (3, subject.size, subject.size))
    require(path.is_file() and path.stat().st_size > 0, f"export_onnx() wrote no file {path}")
    finish_onnx_file(path)
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    exported = session.run(None, {INPUT_NAME: images})[0]
    require(exported.shape == before.shape and np.allclose(exported, before, atol=1e-4),
            f"the exported graph's output {exported.tolist()} is not predict()'s "
            f"{before.tolist()} (batch in capabilities().layout in, probabilities out; "
            f"multi_label={multi_label})")
    require(np.allclose(backend.predict(images), before, atol=1e-6),
            "export_onnx() changed the model's predictions (left it in training mode?)")
