"""Where a model looks: class activation maps (Grad-CAM, Grad-CAM++), their upsampling and
overlays, and the checks made on them (pointing game, heatmap mass outside the lungs, rank
correlation for saliency sanity checks).

The math lives here once, framework-free (numpy, Pillow, matplotlib, scipy); a backend only
returns a layer's activations and the gradients of a class score with respect to them
(``Backend.layer_gradients``). References: Selvaraju et al. 2017 (Grad-CAM), Chattopadhay et al.
2018 (Grad-CAM++), Adebayo et al. 2018 (sanity checks), Zhang et al. 2018 (pointing game).

Example:
    >>> result = backend.layer_gradients(batch, np.array([1, 1]))
    >>> heatmaps = upsample(grad_cam(result.activations, result.gradients), 224)
"""
import re
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np

from .errors import ConfigError, ExperimentError, unknown_name

#: explanation methods by name, with the aliases users type
METHODS = {"gradcam": "gradcam", "grad-cam": "gradcam", "gradcam++": "gradcam++",
           "grad-cam++": "gradcam++", "gradcampp": "gradcam++"}
#: the central lung field as (top, bottom, left, right) fractions of a frontal chest X-ray;
#: heatmap mass outside it (borders and corners, where markers and text sit) is suspicious
CENTRAL_LUNG_REGION = (0.10, 0.85, 0.10, 0.90)
#: the folder under the experiment's logs where explanations are written
EXPLANATIONS_DIR = "explanations"
EXPLANATIONS_CSV = "explanations.csv"
#: overlays are drawn at least this large (px), whatever the model's input size
DISPLAY_SIZE = 224
EPSILON = 1e-7


# ---------------------------------------------------------------------------- CAM math
def method_name(method: str) -> str:
    """The canonical method name; unknown names raise with the close ones."""
    key = str(method).lower()
    if key not in METHODS:
        raise unknown_name("explanation method", method, sorted(set(METHODS.values())),
                           hint="'gradcam' (Selvaraju et al.) or 'gradcam++' (Chattopadhay "
                                "et al.).")
    return METHODS[key]


def grad_cam(activations: np.ndarray, gradients: np.ndarray) -> np.ndarray:
    """Grad-CAM maps (N, h, w): ReLU of the channel sum of activations weighted by the
    spatial mean of their gradients.

    Example:
        >>> grad_cam(np.ones((1, 2, 3, 3)), np.ones((1, 2, 3, 3))).shape
        (1, 3, 3)
    """
    weights = np.asarray(gradients, np.float64).mean(axis=(2, 3))
    cams = np.einsum("nc,nchw->nhw", weights, np.asarray(activations, np.float64))
    return np.maximum(cams, 0.0)


def grad_cam_plus_plus(activations: np.ndarray, gradients: np.ndarray) -> np.ndarray:
    """Grad-CAM++ maps (N, h, w): channel weights are the positive gradients weighted by
    alpha = g^2 / (2 g^2 + sum_hw(A) g^3) (the closed form for an exponential score)."""
    a = np.asarray(activations, np.float64)
    g = np.asarray(gradients, np.float64)
    g2, g3 = g ** 2, g ** 3
    denominator = 2 * g2 + a.sum(axis=(2, 3), keepdims=True) * g3
    alpha = g2 / np.where(denominator != 0, denominator, EPSILON)
    alpha = np.where(g != 0, alpha, 0.0)
    weights = (np.maximum(g, 0) * alpha).sum(axis=(2, 3))
    return np.maximum(np.einsum("nc,nchw->nhw", weights, a), 0.0)


def class_activation_maps(activations: np.ndarray, gradients: np.ndarray,
                          method: str = "gradcam") -> np.ndarray:
    """Raw (not normalised) maps of ``method`` at the layer's resolution, (N, h, w)."""
    return (grad_cam if method_name(method) == "gradcam" else grad_cam_plus_plus)(
        activations, gradients)


def normalise(cams: np.ndarray) -> np.ndarray:
    """Each map scaled to 0..1 (minimum subtracted, divided by the maximum); a constant map
    becomes all zeros."""
    cams = np.asarray(cams, np.float64)
    shifted = cams - cams.min(axis=(1, 2), keepdims=True)
    return shifted / (EPSILON + shifted.max(axis=(1, 2), keepdims=True))


def upsample(cams: np.ndarray, size: int) -> np.ndarray:
    """Normalised maps bilinearly resized to ``size`` x ``size``, float32 in 0..1 (N, size,
    size); the image's pixel grid, corner-aligned as Pillow resizes images."""
    from PIL import Image

    maps = normalise(cams)
    out = np.empty((len(maps), size, size), np.float32)
    for k, cam in enumerate(maps):
        out[k] = np.asarray(Image.fromarray(cam.astype(np.float32), mode="F").resize(
            (size, size), Image.BILINEAR))
    return np.clip(out, 0.0, 1.0)


# ---------------------------------------------------------------------------- checks on maps
def peak(heatmap: np.ndarray) -> tuple:
    """(row, column) of a heatmap's maximum."""
    return tuple(int(v) for v in np.unravel_index(int(np.argmax(heatmap)), heatmap.shape))


def pointing_game(heatmaps: Sequence[np.ndarray], masks: Sequence[np.ndarray]) -> Dict:
    """How often each heatmap's peak falls inside its lesion mask, against the chance a random
    point has (the mean mask-area fraction). Heatmaps are resized to their mask's size.

    Example:
        >>> pointing_game([np.eye(4)], [np.eye(4, dtype=bool)])["hit_rate"]
        1.0
    """
    hits, areas = [], []
    for heatmap, mask in zip(heatmaps, masks):
        mask = np.asarray(mask, bool)
        if heatmap.shape != mask.shape:
            heatmap = upsample(np.asarray(heatmap)[None], mask.shape[0])[0] \
                if mask.shape[0] == mask.shape[1] else _resize_to(heatmap, mask.shape)
        hits.append(bool(mask[peak(heatmap)]))
        areas.append(float(mask.mean()))
    if not hits:
        raise ConfigError("the pointing game needs at least one heatmap with its mask.")
    return {"num_images": len(hits), "hits": int(sum(hits)),
            "hit_rate": float(np.mean(hits)), "random_point_rate": float(np.mean(areas))}


def _resize_to(heatmap: np.ndarray, shape: tuple) -> np.ndarray:
    from PIL import Image

    image = Image.fromarray(np.asarray(heatmap, np.float32), mode="F")
    return np.asarray(image.resize((shape[1], shape[0]), Image.BILINEAR))


def outside_lung_share(heatmap: np.ndarray,
                       region: Sequence[float] = CENTRAL_LUNG_REGION) -> float:
    """Share of the heatmap's mass outside the central lung region (``CENTRAL_LUNG_REGION``:
    fractions top, bottom, left, right of the image); NaN for an empty map (no evidence for
    the class anywhere)."""
    heatmap = np.asarray(heatmap, np.float64)
    rows, columns = heatmap.shape
    top, bottom, left, right = region
    total = heatmap.sum()
    if total <= 0:
        return float("nan")
    inside = heatmap[int(round(top * rows)):int(round(bottom * rows)),
                     int(round(left * columns)):int(round(right * columns))].sum()
    return float(1.0 - inside / total)


def rank_correlation(first: np.ndarray, second: np.ndarray) -> float:
    """Spearman rank correlation of two maps' pixels (the saliency sanity-check measure); NaN
    when either map is constant (an empty map has no ranking to compare)."""
    from scipy.stats import spearmanr

    first, second = np.ravel(first), np.ravel(second)
    if np.ptp(first) == 0 or np.ptp(second) == 0:
        return float("nan")
    return float(spearmanr(first, second).statistic)


# ---------------------------------------------------------------------------- pictures
def overlay(image: np.ndarray, heatmap: np.ndarray, alpha: float = 0.45) -> np.ndarray:
    """The image (H, W, 1 or 3 uint8) with the heatmap (0..1, resized to it) in the jet
    colour map blended on top, as (H, W, 3) uint8."""
    from matplotlib import colormaps

    image = np.asarray(image)
    if image.ndim == 2:
        image = image[:, :, None]
    if image.shape[2] == 1:
        image = np.repeat(image, 3, axis=2)
    if heatmap.shape != image.shape[:2]:
        heatmap = _resize_to(heatmap, image.shape[:2])
    colours = colormaps["jet"](np.clip(heatmap, 0, 1))[:, :, :3] * 255.0
    return np.clip((1 - alpha) * image + alpha * colours, 0, 255).astype(np.uint8)


def file_stem(path: str) -> str:
    """A safe, unique file-name stem for an image path (npz rows included): the file's own
    stem and a short hash of the whole path, so that two folders' ``IM-0001.jpeg`` differ."""
    import hashlib

    name = Path(str(path).replace(":", "_")).name
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", Path(name).stem if "." in name else name)
    digest = hashlib.sha1(str(Path(str(path)).expanduser().resolve()
                              if ":" not in str(path) else path).encode()).hexdigest()[:8]
    return f"{stem}-{digest}"


# ---------------------------------------------------------------------------- an experiment
def explanations_dir(experiment) -> Path:
    folder = experiment.paths.logs / EXPLANATIONS_DIR
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def explain_records(experiment, records, method: str = "gradcam",
                    class_name: Optional[str] = None, layer: Optional[str] = None,
                    folder: Optional[Path] = None) -> List[Dict]:
    """Explain every image of ``records`` with the experiment's best model: for each, the
    class explained (``class_name``, default the class the model predicts with its decision
    rule), the heatmap at the model's input size, and an overlay PNG plus the heatmap as
    ``.npy`` in ``folder`` (default ``logs/explanations``); appends to explanations.csv.

    Returns one dict per image: img_name, class_name, predicted_class, probability (of the
    explained class), method, layer, heatmap (float32 array), overlay_png, heatmap_npy,
    peak (row, column as fractions), outside_lung_share.
    """
    method = method_name(method)
    experiment.ready_for_prediction()
    backend = experiment.backend
    if not backend.capabilities().explanations:
        raise ConfigError(backend._cannot_explain())
    classes = experiment.classes
    if class_name is not None and class_name not in classes:
        raise unknown_name("class", class_name, classes)
    folder = Path(folder) if folder else explanations_dir(experiment)
    folder.mkdir(parents=True, exist_ok=True)
    results = []
    loader = experiment.loader("explain", records, on_corrupt="error")
    try:
        for batch in loader.epoch(0):
            results += _explain_batch(experiment, records, batch, method, class_name, layer,
                                      folder)
    finally:
        experiment.stores.drop("explain")
    _append_csv(folder, results)
    return results


def _explain_batch(experiment, records, batch, method, class_name, layer, folder) -> List[Dict]:
    from .evaluation import decide

    classes = experiment.classes
    probabilities = experiment.calibrated(experiment.backend.predict(batch.images))
    predicted = decide(probabilities, classes, experiment.decision_threshold)
    chosen = predicted if class_name is None else np.full(len(predicted),
                                                          classes.index(class_name))
    result = experiment.backend.layer_gradients(batch.images, chosen, layer)
    cams = class_activation_maps(result.activations, result.gradients, method)
    heatmaps = upsample(cams, experiment.config.data.input_size)
    display = _display_images(experiment, records, batch.indices)
    out = []
    for k, index in enumerate(batch.indices):
        name = records.paths[index]
        label = re.sub(r"[^A-Za-z0-9_.-]+", "_", classes[chosen[k]])
        stem = f"{file_stem(name)}.{method.replace('+', 'p')}.{label}"
        png, npy = folder / f"{stem}.png", folder / f"{stem}.npy"
        _save_png(overlay(display[k], heatmaps[k]), png)
        np.save(npy, heatmaps[k])
        row, column = peak(heatmaps[k])
        out.append({"img_name": name, "class_name": classes[chosen[k]],
                    "predicted_class": classes[predicted[k]],
                    "probability": float(probabilities[k, chosen[k]]), "method": method,
                    "layer": result.layer, "heatmap": heatmaps[k], "overlay_png": str(png),
                    "heatmap_npy": str(npy),
                    "peak": (row / heatmaps.shape[1], column / heatmaps.shape[2]),
                    "outside_lung_share": outside_lung_share(heatmaps[k])})
    return out


def _display_images(experiment, records, indices) -> List[np.ndarray]:
    """The images as the model saw them (same resize), at least DISPLAY_SIZE px, RGB."""
    from .data.geometry import Geometry
    from .data.loader import ImageStore

    data = experiment.config.data
    size = max(DISPLAY_SIZE, data.input_size)
    store = ImageStore(records.subset(indices), size, 3, data.resize_mode, cache=False,
                       on_corrupt="error", geometry=Geometry.of(data))   # resize, crop, grey
    return [store.get(k) for k in range(len(indices))]


def _save_png(pixels: np.ndarray, path: Path) -> None:
    from PIL import Image

    Image.fromarray(pixels).save(path)


def _append_csv(folder: Path, results: List[Dict]) -> Path:
    import pandas as pd

    path = folder / EXPLANATIONS_CSV
    columns = ["img_name", "class_name", "predicted_class", "probability", "method", "layer",
               "outside_lung_share", "overlay_png", "heatmap_npy"]
    table = pd.DataFrame([{c: r[c] for c in columns} for r in results], columns=columns)
    table.to_csv(path, mode="a", header=not path.exists(), index=False)
    return path


def require_evaluation(experiment) -> Dict:
    """The stored evaluation; raises when Evaluate has not run for the model in use."""
    evaluation = experiment.state.get("evaluation") or {}
    if not evaluation:
        raise ExperimentError("no evaluation of the current model yet; call Evaluate() first "
                              "(Top_Losses and Embeddings read its predictions).")
    return evaluation
