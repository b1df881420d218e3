"""What a model gets wrong and how its features group: the most confidently wrong images of an
evaluation (top losses) with their heatmaps, and 2-D embeddings (t-SNE, PCA) of the
penultimate features, coloured by class with the errors marked.

Framework-free: the features come from ``Backend.penultimate_features``, the heatmaps from
``explain.explain_records``; scikit-learn embeds, matplotlib draws, pandas writes the CSVs.

Example:
    >>> table = top_losses(experiment, 16)          # after experiment.evaluate()
    >>> coordinates = embeddings(experiment, experiment.eval_records, "tsne")
"""
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np

from .data.sources import ImageRecords
from .errors import ConfigError, ExperimentError, unknown_name
from .evaluation import PREDICTIONS_CSV, decide
from .explain import explain_records, explanations_dir, require_evaluation

TOP_LOSSES_PNG, TOP_LOSSES_CSV = "top_losses.png", "top_losses.csv"
EMBEDDING_METHODS = ("tsne", "pca")


# ---------------------------------------------------------------------------- top losses
def confidently_wrong(predictions, classes: List[str], count: int):
    """The ``count`` wrong rows of a predictions table with the highest loss, -log p(true
    class), highest first (fewer when fewer are wrong), with columns loss and p_true."""
    wrong = predictions[predictions["true_label"] != predictions["predicted_label"]].copy()
    p_true = np.array([row[f"p_{row['true_label']}"] for _, row in wrong.iterrows()],
                      dtype=np.float64)
    wrong["p_true"] = p_true
    wrong["loss"] = -np.log(np.clip(p_true, 1e-12, 1.0))
    wrong["p_predicted"] = [row[f"p_{row['predicted_label']}"] for _, row in wrong.iterrows()]
    return wrong.sort_values("loss", ascending=False, kind="stable").head(int(count))


def _records_of(experiment, files: List[str]) -> ImageRecords:
    """The evaluation's images named in its predictions table (files on disk, or rows of the
    evaluation records in memory, e.g. an npz split)."""
    records = experiment.eval_records
    if records is not None and set(files) <= set(records.paths):
        where = {path: k for k, path in enumerate(records.paths)}
        return records.subset([where[f] for f in files])
    missing = [f for f in files if not Path(f).is_file()]
    if missing:
        raise ExperimentError(f"the evaluated image {missing[0]} cannot be read any more; call "
                              "Dataset_Params(dataset_path=...) and Dataset() with the "
                              "evaluation set, then Evaluate() again.")
    return ImageRecords(list(files), [0] * len(files), experiment.classes)


def top_losses(experiment, count: int = 16, method: str = "gradcam") -> "object":
    """The ``count`` most confidently wrong images of the last evaluation, each explained for
    the class it was wrongly given; writes ``logs/top_losses.png`` (image, overlay, true and
    predicted class, probability, loss) and ``logs/top_losses.csv``. Returns the table."""
    import pandas as pd

    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        raise ConfigError(f"Top_Losses needs a positive number of images, got {count!r}.")
    require_evaluation(experiment)
    source = experiment.paths.logs / PREDICTIONS_CSV
    if not source.is_file():
        raise ExperimentError(f"{source} is missing; call Evaluate() again to write it.")
    table = confidently_wrong(pd.read_csv(source), experiment.classes, count)
    logs = experiment.paths.logs
    if table.empty:
        table.to_csv(logs / TOP_LOSSES_CSV, index=False)
        return table
    records = _records_of(experiment, list(table["file"]))
    folder = explanations_dir(experiment) / "top_losses"
    explained = {}
    for name in experiment.classes:        # explain each image for its predicted class
        rows = np.flatnonzero(table["predicted_label"].to_numpy() == name)
        if len(rows):
            for result in explain_records(experiment, records.subset(rows), method, name,
                                          folder=folder):
                explained[result["img_name"]] = result
    table["overlay_png"] = [explained[f]["overlay_png"] for f in records.paths]
    columns = ["file", "true_label", "predicted_label", "p_predicted", "p_true", "loss",
               "overlay_png"]
    table[columns].to_csv(logs / TOP_LOSSES_CSV, index=False)
    _gallery(table, [explained[f] for f in records.paths], logs / TOP_LOSSES_PNG)
    return table[columns].reset_index(drop=True)


def _gallery(table, explained: List[Dict], path: Path) -> Path:
    """Pairs of (image, overlay) per row of up to 4 pairs, titled true / predicted / p / loss."""
    from PIL import Image

    from .plots import _pyplot

    plt = _pyplot()
    pairs_per_row = min(4, len(table))
    rows = int(np.ceil(len(table) / pairs_per_row))
    fig, axes = plt.subplots(rows, 2 * pairs_per_row, squeeze=False,
                             figsize=(3.2 * pairs_per_row * 2 / 1.6, 2.4 * rows))
    for axis in axes.ravel():
        axis.axis("off")
    for k, ((_, row), result) in enumerate(zip(table.iterrows(), explained)):
        overlay = np.asarray(Image.open(result["overlay_png"]).convert("RGB"))
        image = _plain_image(result, overlay.shape[0])
        left, right = axes[k // pairs_per_row, 2 * (k % pairs_per_row): 2 * (k % pairs_per_row) + 2]
        left.imshow(image, cmap="gray")
        right.imshow(overlay)
        left.set_title(f"true {row['true_label']}\n{Path(str(row['file'])).name[:22]}",
                       fontsize=7)
        right.set_title(f"pred {row['predicted_label']} p={row['p_predicted']:.2f}\n"
                        f"loss {row['loss']:.2f}", fontsize=7)
    fig.suptitle("top losses: most confidently wrong images (Grad-CAM of the predicted class)",
                 fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _plain_image(result: Dict, size: int) -> np.ndarray:
    from .data.decode import load_image

    try:
        return load_image(result["img_name"], size, channels=1)[:, :, 0]
    except Exception:  # noqa: BLE001  (in-memory rows: the overlay alone is shown)
        return np.zeros((size, size), np.uint8)


# ---------------------------------------------------------------------------- embeddings
def penultimate_features(experiment, records: ImageRecords) -> tuple:
    """(features (N, D), probabilities (N, classes), labels, indices) of every decodable
    image, with the best model (probabilities as the experiment predicts them)."""
    experiment.ready_for_prediction()
    backend = experiment.backend
    if not backend.capabilities().explanations:
        raise ConfigError(backend._cannot_explain())
    features, probabilities, labels, indices = [], [], [], []
    try:
        for batch in experiment.loader("embed", records).epoch(0):
            features.append(backend.penultimate_features(batch.images))
            probabilities.append(experiment.calibrated(backend.predict(batch.images)))
            labels.append(batch.labels)
            indices.append(batch.indices)
    finally:
        experiment.stores.drop("embed")
    if not features:
        raise ExperimentError(f"no image of {records.origin or 'the evaluation set'} could be "
                              "decoded.")
    return (np.concatenate(features), np.concatenate(probabilities), np.concatenate(labels),
            np.concatenate(indices))


def embed(features: np.ndarray, method: str = "tsne", seed: int = 0) -> np.ndarray:
    """(N, 2) coordinates: PCA, or t-SNE (after PCA to at most 50 dimensions, perplexity
    min(30, (N - 1) / 3), PCA initialisation, seeded)."""
    from sklearn.decomposition import PCA

    if method not in EMBEDDING_METHODS:
        raise unknown_name("embedding method", method, EMBEDDING_METHODS)
    features = np.asarray(features, np.float64)
    if len(features) < 4:
        raise ConfigError(f"an embedding needs at least 4 images, got {len(features)}.")
    reduced = PCA(n_components=min(50, *features.shape), random_state=seed).fit_transform(
        features) if method == "tsne" else features
    if method == "pca":
        return PCA(n_components=2, random_state=seed).fit_transform(reduced)
    from sklearn.manifold import TSNE

    perplexity = float(min(30.0, max(1.0, (len(features) - 1) / 3.0)))
    return TSNE(n_components=2, perplexity=perplexity, init="pca",
                random_state=seed).fit_transform(reduced)


def embeddings(experiment, records: ImageRecords, method: str = "tsne",
               name: Optional[str] = None) -> "object":
    """Embed the penultimate features of ``records``; writes ``logs/embeddings_<method>.png``
    (coloured by true class, errors marked) and ``.csv`` (file, true and predicted class,
    correct, x, y). Returns the table."""
    import pandas as pd

    if method not in EMBEDDING_METHODS:
        raise unknown_name("embedding method", method, EMBEDDING_METHODS)
    features, probabilities, labels, indices = penultimate_features(experiment, records)
    classes = experiment.classes
    predicted = decide(probabilities, classes, experiment.decision_threshold)
    xy = embed(features, method, experiment.config.train.seed)
    table = pd.DataFrame({"file": [records.paths[i] for i in indices],
                          "true_label": [classes[k] for k in labels],
                          "predicted_label": [classes[k] for k in predicted],
                          "correct": predicted == labels, "x": xy[:, 0], "y": xy[:, 1]})
    stem = experiment.paths.logs / f"embeddings_{name or method}"
    stem.parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(f"{stem}.csv", index=False)
    _scatter(table, classes, method, Path(f"{stem}.png"))
    return table


def _scatter(table, classes: List[str], method: str, path: Path) -> Path:
    from .plots import _pyplot

    plt = _pyplot()
    fig, axis = plt.subplots(figsize=(6, 5))
    for k, name in enumerate(classes):
        rows = table[table["true_label"] == name]
        colour = plt.get_cmap("tab10")(k % 10)
        right, wrong = rows[rows["correct"]], rows[~rows["correct"]]
        axis.scatter(right["x"], right["y"], s=18, color=colour, alpha=0.7, label=name)
        axis.scatter(wrong["x"], wrong["y"], s=60, color=colour, marker="X",
                     edgecolors="black", linewidths=0.8,
                     label=f"{name}, misclassified ({len(wrong)})")
    axis.set_title(f"{method.upper()} of penultimate features ({len(table)} images)")
    axis.set_xticks([])
    axis.set_yticks([])
    axis.legend(fontsize=7, loc="best")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
