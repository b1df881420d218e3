"""Inference on unlabelled images: one list of results for a few files, or a whole folder tree
streamed to a CSV in bounded memory.

Works on any *predictor*: an object with ``classes``, ``predict_files(files, tta, on_corrupt,
skipped)`` (one row of probabilities per file, NaN rows for unreadable files whose reasons go
into ``skipped``) and ``result_of(file, row, return_raw)`` (the result dict of one file), and
optionally ``batch_size``, ``multi_label`` and ``decision_threshold``: an ``Experiment``, an
ensemble's ``combination.CombinedPredictor`` or an ``onnx_model.OnnxModel``. Framework-free.

Streaming: the files are enumerated lazily (``evaluation.walk_images``), predicted a chunk at
a time (``FILES_PER_CALL_IN_BATCHES`` batches of the predictor's batch size per
``predict_files`` call, which keeps its loader's decoding ahead of the model within a call),
and each chunk's rows are written and flushed before the next chunk is read. Nothing grows
with the folder except counters and the first ``SKIPPED_LISTED`` unreadable files' reasons.
"""
import csv
import math
import time
from itertools import chain, islice
from pathlib import Path
from typing import Callable, Dict, Iterable, Iterator, List, Optional

import numpy as np

from .errors import ConfigError
from .evaluation import decision_rule, image_folder, walk_images

#: what a result holds for a file that could not be decoded
SKIPPED_RESULT = {"predicted_class": None, "score": None, "probabilities": {}}
SKIPPED_MULTI_LABEL = {"predicted_classes": None, "scores": None, "probabilities": {}}
#: unreadable files whose reasons a CSV summary keeps in memory (all are counted and in the CSV)
SKIPPED_LISTED = 100
#: files handed to one ``predict_files`` call, in batches of the predictor's batch size
FILES_PER_CALL_IN_BATCHES = 8
DEFAULT_BATCH_SIZE = 16

ResultOf = Callable[[str, np.ndarray, bool], Dict]


def skipped_result(file: str, reason: str, multi_label: bool = False) -> Dict:
    """The result of a file that could not be decoded: no prediction, ``skipped`` its reason."""
    return dict(SKIPPED_MULTI_LABEL if multi_label else SKIPPED_RESULT, img_name=file,
                skipped=reason)


def result_of_row(predictor, file: str, row: np.ndarray, return_raw: bool = False,
                  img_thresh: Optional[float] = None) -> Dict:
    """The result dict of one file's row of a predictor's ``predict_files``: the one rule
    behind every ``result_of``. ``evaluation.prediction_result`` with the predictor's
    ``decision_threshold`` and ``temperature``, or for a multi-label predictor
    ``multilabel.multilabel_result`` with its ``label_thresholds`` (``img_thresh`` for every
    label when given)."""
    from .evaluation import prediction_result
    from .multilabel import multilabel_result, threshold_vector

    if getattr(predictor, "multi_label", False):
        return multilabel_result(file, row, predictor.classes, threshold_vector(
            predictor.classes, predictor.label_thresholds, img_thresh), return_raw)
    return prediction_result(file, row, predictor.classes, predictor.decision_threshold,
                             return_raw, getattr(predictor, "temperature", None))


def _unreadable(file: str, row: np.ndarray, skipped: Dict[str, str]) -> Optional[str]:
    if file in skipped:
        return skipped[file]
    return "not decoded" if np.isnan(row).any() else None


def predict_list(predictor, files: List[str], tta: bool = False, return_raw: bool = False,
                 on_corrupt: str = "skip", result_of: Optional[ResultOf] = None) -> List[Dict]:
    """One result per file, in order (``Infer``'s list). With ``on_corrupt="skip"`` an
    unreadable file gives ``skipped_result``; with "error" it raises, naming it."""
    result_of = result_of or predictor.result_of
    multi_label = bool(getattr(predictor, "multi_label", False))
    skipped: Dict[str, str] = {}
    rows = predictor.predict_files(files, tta=tta, on_corrupt=on_corrupt, skipped=skipped)
    results = []
    for file, row in zip(files, rows):
        reason = _unreadable(file, row, skipped)
        results.append(skipped_result(file, reason, multi_label) if reason else
                       result_of(file, row, return_raw))
    return results


# ---------------------------------------------------------------------------- the CSV
def rule_of(predictor, result: Dict) -> str:
    """The decision rule of one result, in words: ``"PNEUMONIA if p(PNEUMONIA) >= 0.37"``,
    ``"most probable class"``, or a multi-label model's per-label thresholds."""
    if "thresholds" in result:
        return "each label with p >= its threshold: " + "; ".join(
            f"{label} {t:.4g}" for label, t in result["thresholds"].items())
    decision = getattr(predictor, "decision_threshold", None)
    if decision:
        return f"{decision['positive_class']} if {decision_rule(decision)}"
    return "most probable class"


def csv_columns(classes: List[str], multi_label: bool) -> List[str]:
    """The CSV's columns: file (relative to the folder), the prediction, one probability per
    class, the decision rule, the temperature and the reason a file was skipped."""
    prediction = ["predicted_labels", "scores"] if multi_label else ["predicted_class", "score"]
    return ["file"] + prediction + [f"p_{c}" for c in classes] + \
        ["decision_rule", "temperature", "skipped"]


def csv_row(file: str, result: Dict, rule: str) -> Dict:
    """One CSV row of a result dict (multi-label labels and scores joined by ``;``)."""
    row = {"file": file, "skipped": result.get("skipped") or ""}
    if result.get("skipped"):
        return row
    if "predicted_classes" in result:
        row.update(predicted_labels=";".join(result["predicted_classes"]),
                   scores=";".join(repr(s) for s in result["scores"]))
    else:
        row.update(predicted_class=result["predicted_class"], score=result["score"])
    row.update({f"p_{c}": p for c, p in result["probabilities"].items()})
    row.update(decision_rule=rule, temperature=result.get("temperature", ""))
    return row


def chunks(items: Iterable, size: int) -> Iterator[List]:
    """Consecutive lists of ``size`` items (the last one shorter), read lazily."""
    iterator = iter(items)
    while True:
        chunk = list(islice(iterator, size))
        if not chunk:
            return
        yield chunk


class _Tally:
    """What the summary counts while rows stream past (bounded: no row is kept)."""

    def __init__(self):
        self.num_images = self.num_predicted = 0
        self.skipped: Dict[str, str] = {}
        self.num_skipped = 0
        self.class_counts: Dict[str, int] = {}

    def add(self, file: str, result: Dict) -> None:
        self.num_images += 1
        if result.get("skipped"):
            self.num_skipped += 1
            if len(self.skipped) < SKIPPED_LISTED:
                self.skipped[file] = result["skipped"]
            return
        self.num_predicted += 1
        labels = result["predicted_classes"] if "predicted_classes" in result \
            else [result["predicted_class"]]
        for label in labels or ["(no label)"]:
            self.class_counts[label] = self.class_counts.get(label, 0) + 1


def predict_folder_to_csv(predictor, img_dir, output_csv, recursive: bool = True,
                          tta: bool = False, result_of: Optional[ResultOf] = None,
                          progress: bool = False, batch_size: Optional[int] = None) -> Dict:
    """Predict every image of ``img_dir`` (its whole tree with ``recursive``) into
    ``output_csv``, streaming: rows are appended and flushed a chunk at a time, unreadable
    files are skipped (a row with their reason), and a tqdm bar counts images when
    ``progress``.

    Returns:
        ``{"csv", "num_images", "num_predicted", "num_skipped", "skipped": {file: reason}
        (the first SKIPPED_LISTED), "seconds", "images_per_s", "class_counts"}``, files
        relative to ``img_dir``.

    Example:
        >>> predict_folder_to_csv(experiment, "scans", "predictions.csv")["num_predicted"]
    """
    folder = image_folder(img_dir=str(img_dir))
    files = walk_images(folder, recursive)
    first = next(files, None)
    if first is None:
        raise ConfigError(f"folder '{img_dir}' holds no images"
                          f"{'' if recursive else ' (sub-folders are read with recursive=True)'}"
                          f"; nothing was written to {output_csv}.")
    output_csv = Path(output_csv)
    output_csv.parent.mkdir(parents=True, exist_ok=True)
    result_of = result_of or predictor.result_of
    multi_label = bool(getattr(predictor, "multi_label", False))
    size = int(batch_size or getattr(predictor, "batch_size", None) or DEFAULT_BATCH_SIZE)
    tally, started = _Tally(), time.perf_counter()
    bar = _progress_bar(progress)
    with open(output_csv, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, csv_columns(list(predictor.classes), multi_label))
        writer.writeheader()
        for chunk in chunks(chain([first], files), size * FILES_PER_CALL_IN_BATCHES):
            names = [str(path) for path in chunk]
            for name, result in zip(names, predict_list(predictor, names, tta,
                                                        result_of=result_of)):
                relative = Path(name).relative_to(folder).as_posix()
                writer.writerow(csv_row(relative, result, rule_of(predictor, result)))
                tally.add(relative, result)
            handle.flush()
            if bar is not None:
                bar.update(len(chunk))
    if bar is not None:
        bar.close()
    seconds = time.perf_counter() - started
    return {"csv": str(output_csv), "num_images": tally.num_images,
            "num_predicted": tally.num_predicted, "num_skipped": tally.num_skipped,
            "skipped": tally.skipped, "seconds": seconds,
            "images_per_s": tally.num_images / seconds if seconds > 0 else math.nan,
            "class_counts": dict(sorted(tally.class_counts.items()))}


def _progress_bar(progress: bool):
    if not progress:
        return None
    from tqdm.auto import tqdm

    return tqdm(unit="image", desc="predicting")


def summary_lines(summary: Dict) -> List[str]:
    """The printed report of ``predict_folder_to_csv``'s summary."""
    lines = [f"predicted {summary['num_predicted']} of {summary['num_images']} images in "
             f"{summary['seconds']:.1f} s ({summary['images_per_s']:.1f} images/s) -> "
             f"{summary['csv']}",
             "  predicted: " + (", ".join(f"{c} {n}" for c, n in
                                          summary["class_counts"].items()) or "none")]
    if summary["num_skipped"]:
        listed = summary["skipped"]
        more = summary["num_skipped"] - len(listed)
        lines.append(f"  skipped {summary['num_skipped']} unreadable files (listed in the CSV's "
                     f"skipped column){f', first {len(listed)}' if more else ''}:")
        lines += [f"    {file}: {reason}" for file, reason in listed.items()]
    return lines
