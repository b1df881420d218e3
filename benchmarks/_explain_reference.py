"""Part (b) of ``bench_explain.py``: the core's Grad-CAM and Grad-CAM++ against the reference
implementation, pytorch-grad-cam, on ResNet-18 ``layer4`` with the same weights and inputs
(real Kermany test images). See ``bench_explain.py`` for the whole benchmark.
"""
from pathlib import Path

import numpy as np

from _common import shared_dir

PROJECT = "ExplainBench"
METHODS = ("gradcam", "gradcam++")
REFERENCE_IMAGES_PER_CLASS = 16


def agreement(ours: np.ndarray, theirs: np.ndarray) -> dict:
    """Largest and mean absolute difference of two sets of 0..1 maps, and their smallest
    Spearman correlation (pairs of identical constant maps, e.g. both empty, agree: 1)."""
    from xrayprototype.explain import rank_correlation

    correlations = [1.0 if np.ptp(a) == 0 and np.array_equal(a, b) else rank_correlation(a, b)
                    for a, b in zip(ours, theirs)]
    return {"max_abs_difference": float(np.abs(ours - theirs).max()),
            "mean_abs_difference": float(np.abs(ours - theirs).mean()),
            "min_rank_correlation": float(min(correlations)),
            "empty_maps": int(sum(np.ptp(a) == 0 for a in ours))}


def grad_cam_plus_plus_eps(activations, gradients, eps: float = 1e-6) -> np.ndarray:
    """Grad-CAM++ as pytorch-grad-cam computes it: alpha = g^2 / (2 g^2 + sum(A) g^3 + eps).
    The paper's closed form (``explain.grad_cam_plus_plus``) has no eps; with a linear head
    after global pooling g = w / (h w) is small enough (g^2 ~ 1e-8) for eps to matter."""
    a, g = np.asarray(activations, np.float64), np.asarray(gradients, np.float64)
    alpha = g ** 2 / (2 * g ** 2 + a.sum(axis=(2, 3), keepdims=True) * g ** 3 + eps)
    weights = (np.maximum(g, 0) * np.where(g != 0, alpha, 0.0)).sum(axis=(2, 3))
    return np.maximum(np.einsum("nc,nchw->nhw", weights, a), 0.0)


def reference_agreement(workspace: str, trained_size: int) -> dict:
    """The core's Grad-CAM / Grad-CAM++ against pytorch-grad-cam's on ResNet-18 layer4."""
    import torch

    from xrayprototype.backends.pytorch._compat import import_torchvision
    import_torchvision()                # torchvision 0.28 needs the guarded import first
    import pytorch_grad_cam as reference
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    from xrayprototype.backend import create_backend
    from xrayprototype.config import ModelConfig
    from xrayprototype.data.decode import load_image
    from xrayprototype.data.transforms import Normalizer
    from xrayprototype.experiment import Experiment
    from xrayprototype.explain import class_activation_maps, upsample
    from xrayprototype.validation import NORMALIZATIONS
    from xrayprototype.workspace import ExperimentPaths

    test = shared_dir() / "data" / "kermany-224" / "test"
    files = [f for label in ("NORMAL", "PNEUMONIA")
             for f in sorted((test / label).iterdir())[:REFERENCE_IMAGES_PER_CLASS]]
    torch.set_num_threads(1)

    def compare(backend, size, weights):
        normalizer = Normalizer(*NORMALIZATIONS["imagenet"])
        images = normalizer(np.stack([load_image(f, size, channels=3) for f in files]))
        images = np.concatenate([images, images])                     # each for both classes
        classes = np.repeat([0, 1], len(files))
        result = backend.layer_gradients(images, classes)
        model = backend.model.eval()
        tensor = torch.from_numpy(images).permute(0, 3, 1, 2).contiguous()
        row = {"weights": weights, "input_size": size, "layer": result.layer,
               "images": len(files), "maps": len(images)}
        for method, cam_class in (("gradcam", reference.GradCAM),
                                  ("gradcam++", reference.GradCAMPlusPlus)):
            with cam_class(model=model, target_layers=[model.layer4]) as cam:
                theirs = cam(input_tensor=tensor,
                             targets=[ClassifierOutputTarget(int(c)) for c in classes])
            ours = class_activation_maps(result.activations, result.gradients, method)
            row[method] = agreement(upsample(ours, size), theirs)
            if method == "gradcam++":   # the reference adds 1e-6 to alpha's denominator
                row["gradcam++ with the reference's eps"] = agreement(upsample(
                    grad_cam_plus_plus_eps(result.activations, result.gradients), size), theirs)
        return row

    backend = create_backend("pytorch")
    backend.seed(0)
    backend.build_model(ModelConfig("resnet18", use_pretrained=False,
                                    freeze_base_network=False), 2)
    rows = [compare(backend, 224, "random (seed 0)")]
    paths = ExperimentPaths(Path(workspace), PROJECT, "pytorch")
    if paths.exists():                  # the pointing game trained it (not with --backends)
        experiment = Experiment.open(paths)
        experiment.ready_for_prediction()
        rows.append(compare(experiment.backend, trained_size,
                            "trained on synthetic (pointing game's pytorch model)"))
    return {"data": f"kermany-224 test, first {REFERENCE_IMAGES_PER_CLASS} images per class",
            "rows": rows}
