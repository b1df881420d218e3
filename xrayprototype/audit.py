"""The shortcut audit: can the label be predicted without looking at the lungs?

A model can score well by learning where an image came from instead of what it shows: one
class scanned at another hospital, saved at another size or colour mode, or stamped with
another marker. This module asks whether the label is predictable from what says nothing
about the lungs: each image's size, mode, format, file size, DICOM tags and the statistics of
its border strips and corners (``audit_features.py``). A seeded, cross-validated scikit-learn
classifier (one-hot categories + HistGradientBoosting) predicts the label from those alone;
its out-of-fold ROC-AUC (two classes: of the positive class, the one that is not NORMAL; more:
one-vs-rest macro) comes with a stratified bootstrap 95% interval (``intervals.py``), the
features that carry it (permutation importance on the held-out folds, with their share), and
the AUC of each feature group alone, which says WHAT leaks. Folds keep a patient's images
together (StratifiedGroupKFold) when patient groups are known, else StratifiedKFold.

At an out-of-fold AUC of ``WARNING_AUC`` or more the report opens with a WARNING. When an
experiment holds explanations (``logs/explanations/explanations.csv``, written by Explain, with
a column ``outside_lung_share``), the report also summarises how much heatmap mass falls
outside the central lung region. The printed report, the files and the experiment's summary
are made in ``audit_report.py``; the verb is ``prototype.Audit_Shortcuts``.

Example:
    >>> result, table = audit_records(records, seed=0)      # records: data.ImageRecords
    >>> result["auc"]["estimate"], result["warning"], result["top_features"][0]["feature"]
    >>> result, table = audit_files(["a.png", "b.jpeg", ...], ["COVID-19", "NORMAL", ...])
"""
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from .audit_features import BORDER, CATEGORICAL, DICOM, SIZE_FORMAT, feature_group, \
    record_features
from .errors import DatasetError
from .intervals import RESAMPLES, bootstrap_interval
from .metrics import default_positive_class

#: out-of-fold ROC-AUC at or above which the audit warns. Metadata that carries no label
#: information sits at 0.5; 0.70 is the conventional floor of "acceptable discrimination"
#: (Hosmer & Lemeshow), i.e. a model could learn a usable rule from the source alone, and it
#: lies well above chance noise for data sets of a hundred images per class or more (the 97.5th
#: percentile of a chance AUC is about 0.58 there). Below ~30 images per class chance can reach
#: it: the report says so, and the interval shows the uncertainty.
WARNING_AUC = 0.70
FOLDS, TOP_FEATURES, PERMUTATION_REPEATS = 5, 5, 5
SMALL_CLASS = 30
#: where Explain writes its per-image table, relative to an experiment's logs folder
EXPLANATIONS_CSV = Path("explanations") / "explanations.csv"
AUDIT_JSON, AUDIT_CSV, AUDIT_PNG = ("shortcut_audit.json", "shortcut_audit_features.csv",
                                    "shortcut_audit.png")


def audit_auc(labels: np.ndarray, probabilities: np.ndarray,
              positive: int = 1) -> Optional[float]:
    """ROC-AUC of class ``positive`` (two columns) or one-vs-rest macro over the classes
    present (more); None when fewer than two classes are present."""
    from sklearn.metrics import roc_auc_score

    labels, probabilities = np.asarray(labels), np.asarray(probabilities)
    present = np.unique(labels)
    if len(present) < 2:
        return None
    if probabilities.shape[1] == 2:
        return float(roc_auc_score(labels == positive, probabilities[:, positive]))
    return float(np.mean([roc_auc_score(labels == k, probabilities[:, k]) for k in present]))


def cross_validation_folds(labels: np.ndarray, groups: Sequence[str], folds: int = FOLDS,
                           seed: int = 0) -> Tuple[np.ndarray, Dict]:
    """The held-out fold of each image, and how the folds were made: StratifiedGroupKFold
    (shuffled, seeded) when patient groups are known (some group holds several images), else
    StratifiedKFold; fewer folds when a class has fewer images (or patients) than ``folds``."""
    from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold

    labels = np.asarray(labels)
    group_ids = np.unique(np.asarray(groups, dtype=str), return_inverse=True)[1]
    grouped = len(np.unique(group_ids)) < len(labels)
    smallest = min(len(np.unique(group_ids[labels == k])) if grouped else int(np.sum(labels == k))
                   for k in np.unique(labels))
    count = min(int(folds), smallest)
    if count < 2:
        raise DatasetError(f"a class has only {smallest} {'patient' if grouped else 'image'}; "
                           "cross-validation needs at least 2 per class. Add images of that "
                           "class or leave it out.")
    splitter = (StratifiedGroupKFold if grouped else StratifiedKFold)(
        count, shuffle=True, random_state=seed)
    fold_of = np.empty(len(labels), dtype=np.int64)
    split = splitter.split(np.zeros(len(labels)), labels, group_ids if grouped else None)
    for fold, (_, held_out) in enumerate(split):
        fold_of[held_out] = fold
    return fold_of, {"method": type(splitter).__name__, "folds": count, "seed": int(seed),
                     "patients": int(len(np.unique(group_ids))) if grouped else None}


def _classifier(table, seed: int):
    from sklearn.compose import ColumnTransformer
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder

    categorical = [c for c in table.columns if c in CATEGORICAL]
    numeric = [c for c in table.columns if c not in CATEGORICAL]
    parts = [("numeric", "passthrough", numeric)] if numeric else []
    if categorical:
        parts.append(("categories", OneHotEncoder(handle_unknown="ignore", sparse_output=False,
                                                  max_categories=20), categorical))
    # sklearn's default leaf of 20 images cannot split a training fold of a few dozen images
    leaf = int(np.clip(len(table) // 20, 2, 20))
    return make_pipeline(ColumnTransformer(parts), HistGradientBoostingClassifier(
        max_iter=100, min_samples_leaf=leaf, random_state=seed))


def _probabilities(model, table, num_classes: int) -> np.ndarray:
    """predict_proba in all classes' columns (a class missing from a training fold gets 0)."""
    out = np.zeros((len(table), num_classes))
    out[:, model.classes_] = model.predict_proba(table)
    return out


def out_of_fold(table, labels: np.ndarray, fold_of: np.ndarray, num_classes: int,
                positive: int, seed: int = 0, importance: bool = False):
    """Out-of-fold probabilities of a classifier on the columns of ``table``; with
    ``importance`` also the permutation importance (drop of AUC) of each column, averaged over
    the held-out folds (weighted by their size)."""
    from sklearn.inspection import permutation_importance

    def scorer(model, x, y):
        return audit_auc(y, _probabilities(model, x, num_classes), positive) or 0.5

    probabilities = np.zeros((len(labels), num_classes))
    drops, weights = [], []
    for fold in np.unique(fold_of):
        train, held = fold_of != fold, fold_of == fold
        model = _classifier(table, seed).fit(table[train], labels[train])
        probabilities[held] = _probabilities(model, table[held], num_classes)
        if importance and len(np.unique(labels[held])) > 1:
            result = permutation_importance(model, table[held], labels[held], scoring=scorer,
                                            n_repeats=PERMUTATION_REPEATS, random_state=seed)
            drops.append(result.importances_mean)
            weights.append(int(held.sum()))
    mean_drop = np.average(drops, axis=0, weights=weights) if drops else None
    return probabilities, mean_drop


def _importance_rows(columns: List[str], drops: Optional[np.ndarray]) -> List[Dict]:
    """Features by falling importance, with their share of the positive importance."""
    if drops is None:
        return []
    positive = np.clip(drops, 0.0, None)
    total = positive.sum()
    rows = [{"feature": c, "group": feature_group(c), "importance": float(d),
             "share": float(p / total) if total > 0 else 0.0}
            for c, d, p in zip(columns, drops, positive)]
    return sorted(rows, key=lambda r: -r["importance"])


def audit_records(records, seed: int = 0, folds: int = FOLDS, resamples: int = RESAMPLES,
                  table=None, explanations_csv=None,
                  splits: Optional[Sequence[str]] = None) -> Tuple[Dict, object]:
    """Audit ``records`` (``data.ImageRecords``: files or in-memory rows, labels, groups).

    Args:
        records: the labelled images.
        seed: seeds the folds, the classifier, the permutations and the bootstrap.
        folds: cross-validation folds (fewer when a class is smaller).
        resamples: bootstrap resamples of the AUC interval.
        table: precomputed ``audit_features.record_features(records)``, to skip reading.
        explanations_csv: Explain's per-image table, summarised when it exists.
        splits: the split of each image (train / val / eval), kept in the table.

    Returns:
        ``(result, table)``: the result dict (see ``report_lines``) and the per-image feature
        DataFrame with ``file``, ``label``, ``group``, ``fold`` (and ``split``) columns added.
    """
    labels, classes = _checked_labels(records)
    table = record_features(records) if table is None else table
    varying = [c for c in table.columns if table[c].nunique(dropna=False) > 1]
    fold_of, cv = cross_validation_folds(labels, records.groups, folds, seed)
    positive = classes.index(default_positive_class(classes)) if len(classes) == 2 else 1
    if varying:
        probabilities, drops = out_of_fold(table[varying], labels, fold_of, len(classes),
                                           positive, seed, importance=True)
    else:          # every feature is the same for every image: nothing can leak
        probabilities, drops = np.full((len(labels), len(classes)), 1.0 / len(classes)), None
    auc = bootstrap_interval(lambda y, p: audit_auc(y, p, positive), labels, probabilities,
                             resamples=resamples, seed=seed)
    result = _result(records, labels, classes, positive, auc, cv, table, varying, drops)
    result["group_auc"] = _group_aucs(table, varying, labels, fold_of, len(classes),
                                      positive, seed)
    result["leaking_group"] = _leaking_group(result)
    result["message"] = warning_message(result)
    result["explanations"] = explanation_summary(explanations_csv)
    return result, _annotated(table, records, labels, fold_of, splits)


def audit_files(files: Sequence[str], labels: Sequence, groups: Optional[Sequence[str]] = None,
                classes: Optional[Sequence[str]] = None, **options) -> Tuple[Dict, object]:
    """Audit a list of image files with their labels (class names, or indices of ``classes``)
    and optional patient groups; ``options`` go to ``audit_records``.

    Example:
        >>> result, table = audit_files(paths, ["COVID-19"] * 90 + ["NORMAL"] * 90, groups=ids)
    """
    from .data import ImageRecords

    if len(files) == 0:
        raise DatasetError("no image files to audit; pass a list of paths and their labels.")
    if len(labels) != len(files):
        raise DatasetError(f"{len(files)} files but {len(labels)} labels; give one label each.")
    names = [str(v) for v in labels]
    if classes is None:
        classes = sorted(set(names))
    elif all(isinstance(v, (int, np.integer)) for v in labels):
        names = [str(classes[int(v)]) for v in labels]
    unknown = sorted(set(names) - set(map(str, classes)))
    if unknown:
        raise DatasetError(f"labels {unknown} are not among the classes {list(classes)}.")
    indices = [list(map(str, classes)).index(n) for n in names]
    records = ImageRecords([str(f) for f in files], np.array(indices), list(map(str, classes)),
                           list(map(str, groups)) if groups is not None else [], "list of files")
    return audit_records(records, **options)


def _checked_labels(records) -> Tuple[np.ndarray, List[str]]:
    where = getattr(records, "origin", "") or "the data set"
    if len(records) == 0:
        raise DatasetError(f"{where} holds no images to audit; check the path (class "
                           "sub-folders with images, a CSV of file,label rows, or an .npz).")
    labels = np.asarray(records.labels, dtype=np.int64)
    present = np.unique(labels)
    if len(present) < 2:
        raise DatasetError(f"{where} holds only class {records.classes[present[0]]!r}; the "
                           "audit predicts the label, so it needs images of at least two "
                           "classes.")
    return labels, list(records.classes)


def _result(records, labels, classes, positive, auc, cv, table, varying, drops) -> Dict:
    counts = np.bincount(labels, minlength=len(classes))
    rows = _importance_rows(varying, drops)
    warning = auc["estimate"] is not None and auc["estimate"] >= WARNING_AUC
    return {"dataset": getattr(records, "origin", ""), "num_images": int(len(labels)),
            "classes": classes, "class_counts": dict(zip(classes, map(int, counts))),
            "auc_of": classes[positive] if len(classes) == 2 else "one-vs-rest macro",
            "auc": auc, "warning": bool(warning), "warning_level": WARNING_AUC,
            "small_data": bool(counts[counts > 0].min() < SMALL_CLASS), "cv": cv,
            "classifier": "one-hot categories + HistGradientBoostingClassifier",
            "top_features": [r for r in rows if r["importance"] > 0][:TOP_FEATURES],
            "ranked_features": rows,
            "group_share": {g: float(sum(r["share"] for r in rows if r["group"] == g))
                            for g in sorted({r["group"] for r in rows})},
            "constant_features": [c for c in table.columns if c not in varying],
            "unreadable_files": int((table.get("format") == "unreadable").sum())
            if "format" in table else 0}


def _group_aucs(table, varying, labels, fold_of, num_classes, positive, seed) -> Dict:
    """Out-of-fold AUC of each feature group alone (None: every feature of it is constant)."""
    aucs = {}
    for group in (SIZE_FORMAT, DICOM, BORDER):
        columns = [c for c in varying if feature_group(c) == group]
        if columns:
            probabilities, _ = out_of_fold(table[columns], labels, fold_of, num_classes,
                                           positive, seed)
            aucs[group] = audit_auc(labels, probabilities, positive)
        else:
            aucs[group] = None
    return aucs


def _leaking_group(result: Dict) -> Optional[str]:
    """The group carrying the largest share of the importance among those whose features alone
    reach ``WARNING_AUC`` (all groups when none does); None without a warning."""
    if not result["warning"]:
        return None
    strong = [g for g, a in result["group_auc"].items() if a is not None and a >= WARNING_AUC]
    candidates = strong or [g for g, a in result["group_auc"].items() if a is not None]
    return max(candidates, key=lambda g: (result["group_share"].get(g, 0.0),
                                          result["group_auc"][g]), default=None)


def _annotated(table, records, labels, fold_of, splits):
    table = table.copy()
    table.insert(0, "fold", fold_of)
    if splits is not None:
        table.insert(0, "split", list(splits))
    table.insert(0, "group", list(records.groups))
    table.insert(0, "label", [records.classes[k] for k in labels])
    table.insert(0, "file", list(records.paths))
    return table


def explanation_summary(csv_path) -> Dict:
    """Mean ``outside_lung_share`` of Explain's images and the share of images above 0.5, or
    ``{"status": "no explanations yet"}`` when the file is absent."""
    import pandas as pd

    if csv_path is None or not Path(csv_path).is_file():
        return {"status": "no explanations yet"}
    table = pd.read_csv(csv_path)
    if "outside_lung_share" not in table or table["outside_lung_share"].dropna().empty:
        return {"status": f"{csv_path} has no outside_lung_share values"}
    share = table["outside_lung_share"].dropna().astype(float)
    return {"status": "ok", "file": str(csv_path), "images": int(len(share)),
            "mean_outside_lung_share": float(share.mean()),
            "share_of_images_above_half": float((share > 0.5).mean())}


#: features that also depend on what the image shows: a compressed file's size (opacities
#: change how well a JPEG compresses) and the border pixels (anatomy can reach the edges)
CONTENT_DEPENDENT = ("file_size_kb", "bytes_per_pixel")


def content_caveat(result: Dict) -> str:
    """A caution when the strongest carriers also depend on image content, else ''."""
    carriers = result["top_features"][:3]
    if not carriers or not all(r["feature"] in CONTENT_DEPENDENT or r["group"] == BORDER
                               for r in carriers):
        return ""
    return (" Note: these features (file size, border pixels) also depend on what the image "
            "shows, so part of the signal may be the disease itself; compare the classes in "
            "shortcut_audit.png and look where Explain's heatmaps fall (outside_lung_share) "
            "before concluding it is a shortcut.")


def warning_message(result: Dict) -> str:
    """One sentence: the warning and what to do, or why there is none."""
    auc, level = result["auc"], result["warning_level"]
    figure = auc_text(auc)
    if not result["warning"]:
        return (f"no shortcut found: image metadata alone predicts the label with out-of-fold "
                f"ROC-AUC {figure} (warning at >= {level:.2f}).")
    carriers = ", ".join(f"{r['feature']} {100 * r['share']:.0f}%"
                         for r in result["top_features"][:3])
    alone = ", ".join(f"{g} {a:.2f}" for g, a in result["group_auc"].items() if a is not None)
    return (f"WARNING: the label can be predicted without looking at the lungs: out-of-fold "
            f"ROC-AUC {figure} from image metadata alone (>= {level:.2f}), carried mostly by "
            f"the {result['leaking_group']} features ({carriers}; each group alone: {alone}). "
            "A model trained on this data "
            "may learn where an image came from instead of the disease: take every class from "
            "the same source(s), or save all images at one size, mode and format (crop away "
            "borders with markers), then run Audit_Shortcuts() again." + content_caveat(result))


def auc_text(auc: Dict) -> str:
    if auc["estimate"] is None:
        return "undefined"
    low_high = auc["interval"]
    interval = f" [{low_high[0]:.3f}, {low_high[1]:.3f}]" if low_high else ""
    return f"{auc['estimate']:.3f}{interval}"
