"""Shared helpers of the benchmark scripts: where the real data is, and small subsets of it."""
import os
import time
from pathlib import Path
from typing import Dict, Optional

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"


def shared_dir() -> Optional[Path]:
    """``$XRAYPROTOTYPE_SHARED`` or ``../shared`` beside the repository, if present."""
    candidate = Path(os.environ.get("XRAYPROTOTYPE_SHARED", REPO.parent / "shared"))
    return candidate if (candidate / "data").is_dir() else None


def kermany_subset(out_dir: Path, per_class: Dict[str, int], split: str = "train",
                   offset: int = 0) -> Optional[Path]:
    """Symlink the first ``per_class[c]`` (after ``offset``) images of each class of the real
    Kermany ``split`` into ``out_dir/<class>/``; None when ../shared is absent."""
    shared = shared_dir()
    if shared is None:
        return None
    source = shared / "data" / "kermany-224" / split
    for name, count in per_class.items():
        target = out_dir / name
        target.mkdir(parents=True, exist_ok=True)
        for image in sorted((source / name).iterdir())[offset:offset + count]:
            link = target / image.name
            if not link.exists():
                link.symlink_to(image)
    return out_dir


def finished_experiment(workspace: Path, project: str, experiment: str) -> bool:
    """Whether ``workspace/project/experiment`` holds a finished training run (``--reuse``)."""
    from xrayprototype.state import STATUS_TRAINED, read_state

    path = Path(workspace) / project / experiment / "experiment.json"
    return path.is_file() and read_state(path).get("status") == STATUS_TRAINED


def save_result(name: str, payload: dict) -> Path:
    import json

    RESULTS.mkdir(parents=True, exist_ok=True)
    payload = dict(payload, measured_at=time.strftime("%Y-%m-%d %H:%M:%S"))
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(payload, indent=2))
    return path


def make_images(root: Path, count: int) -> tuple:
    """(train_dir, val_dir, description): ``count`` real Kermany training images (half per
    class) and 32 validation images when ../shared is present, else the synthetic set."""
    per_class = {"NORMAL": count // 2, "PNEUMONIA": count - count // 2}
    train = kermany_subset(root / "train", per_class)
    if train is not None:
        val = kermany_subset(root / "val", {"NORMAL": 16, "PNEUMONIA": 16}, offset=1000)
        return train, val, "kermany-224 (real)"
    from xrayprototype.data.synthetic import make_synthetic_chest_xrays
    data = make_synthetic_chest_xrays(root / "synthetic", count // 2, 16, image_size=224)
    return data / "train", data / "test", "synthetic 224 px"


def facade_run(train_dir: Path, val_dir: Path, size: int, epochs: int, workspace: Path,
               backend: str = "pytorch", model: str = "resnet18", batch_size: int = 32) -> dict:
    """Train through the facade (from scratch, whole network) and read its own epoch records.

    Epoch 1 (decoding into the cache, warm-up) is reported apart; ``train_images_per_s`` is
    the mean of the later epochs' training phase; ``end_to_end`` is Train()'s wall time,
    validation and checkpoints included, per training image.
    """
    import json

    import numpy as np

    from xrayprototype import prototype

    gtf = prototype(verbose=0, workspace=workspace)
    gtf.Prototype("Bench", f"{backend}-{model}-{size}", backend=backend)
    gtf.Default(dataset_path=[str(train_dir), str(val_dir)], model_name=model,
                freeze_base_network=False, num_epochs=epochs, use_pretrained=False)
    gtf.update_input_size(size)
    gtf.update_batch_size(batch_size)
    gtf.update_display_progress(False)
    started = time.perf_counter()
    gtf.Train()
    wall = time.perf_counter() - started
    lines = gtf.experiment.paths.metrics_file.read_text().splitlines()
    train = [r for r in map(json.loads, lines) if r["split"] == "train"]
    later = [r["images_per_s"] for r in train[1:] or train]
    return {"train_images_per_s": float(np.mean(later)), "best_epoch_images_per_s": max(later),
            "epoch1_images_per_s": train[0]["images_per_s"],
            "end_to_end_images_per_s": train[0]["images"] * epochs / wall}


def in_fresh_process(function, *args):
    """Run one measurement in a new Python process, as a user's script would run: neither
    loop inherits the other's memory, caches or thread pools."""
    from concurrent.futures import ProcessPoolExecutor
    from multiprocessing import get_context

    with ProcessPoolExecutor(1, mp_context=get_context("spawn")) as pool:
        return pool.submit(function, *args).result()


def mean_runs(runs: list) -> dict:
    """Mean of each figure over repeated runs, except best-epoch figures: their maximum."""
    import numpy as np

    return {key: (max if key.startswith("best") else np.mean)([r[key] for r in runs])
            for key in runs[0]}


def alternate(first, second, repeats: int) -> tuple:
    """Call ``first()`` and ``second()`` ``repeats`` times each, alternating which goes first
    (on a small shared machine the first of a pair measured up to 10% slower); returns the
    two lists of results."""
    results = ([], [])
    for repeat in range(repeats):
        order = (0, 1) if repeat % 2 == 0 else (1, 0)
        for side in order:
            results[side].append((first, second)[side]())
    return results


def apply_augmentation(gtf, rotation: float = 0.0, zoom: float = 0.0, shift: float = 0.0,
                       brightness_contrast: float = 0.0, horizontal_flip: float = 0.5) -> None:
    """The accuracy benchmarks' augmentation presets, through the facade's ``apply_*`` verbs
    (``train=True``: Monk's default ``train=False`` applies a transform to no images)."""
    if horizontal_flip:
        gtf.apply_random_horizontal_flip(horizontal_flip, train=True)
    if rotation:
        gtf.apply_random_rotation(rotation, train=True)
    if zoom:
        gtf.apply_random_zoom(zoom, train=True)
    if shift:
        gtf.apply_random_shift(shift, train=True)
    if brightness_contrast:
        gtf.apply_random_brightness_contrast(brightness_contrast, brightness_contrast,
                                             train=True)


def augmentation_text(rotation: float = 0.0, zoom: float = 0.0, shift: float = 0.0,
                      brightness_contrast: float = 0.0, horizontal_flip: float = 0.5) -> str:
    parts = [f"{name} {value}" for name, value in (
        ("h-flip", horizontal_flip), ("rotate", rotation), ("zoom", zoom), ("shift", shift),
        ("brightness-contrast", brightness_contrast)) if value]
    return " / ".join(parts) or "no augmentation"


def test_figures(evaluation: dict, positive: str = "PNEUMONIA", negative: str = "NORMAL") -> dict:
    """The figures BENCHMARKS.md reports, from a saved ``state["evaluation"]``."""
    per_class = evaluation["per_class"]
    return {"test_images": evaluation["num_images"], "test_accuracy": evaluation["accuracy"],
            "sensitivity_pneumonia": per_class[positive]["recall"],
            "specificity_normal_recall": per_class[negative]["recall"],
            "test_roc_auc": evaluation["roc_auc"], "test_pr_auc": evaluation.get("pr_auc"),
            "decision_rule": evaluation.get("decision_rule"), "tta": evaluation.get("tta"),
            "majority_baseline_accuracy": evaluation["majority_baseline_accuracy"]}


def print_test_figures(label: str, row: dict) -> None:
    print(f"{label}: test accuracy {row['test_accuracy']:.4f} (majority baseline "
          f"{row['majority_baseline_accuracy']:.4f}), sensitivity {row['sensitivity_pneumonia']:.4f}, "
          f"specificity {row['specificity_normal_recall']:.4f}, ROC-AUC {row['test_roc_auc']:.4f}, "
          f"decision {row['decision_rule']}", flush=True)


def evaluate_decision_rules(tool, threshold, tta: bool) -> dict:
    """Evaluate a reopened experiment (a ``prototype``) or an ``ensemble`` on its evaluation set
    under each decision rule: the most probable class ("argmax") and, when ``threshold`` (a
    ``Select_Threshold`` record) is given, that validation-chosen threshold; each without and,
    with ``tta``, with flip TTA. The recipe's own rule (threshold if given, TTA if asked) runs
    last, so the saved evaluation is the recipe's. Returns ``{"argmax": figures, ...}``."""
    def set_rule(decision) -> None:
        if hasattr(tool, "experiment"):
            tool.experiment.set_decision_threshold(decision)
        elif decision is None:
            tool.update_decision_threshold(None)
        else:                                   # the ensemble's own record, as it chose it
            tool.state["decision_threshold"] = decision

    def saved_evaluation() -> dict:
        return (tool.experiment.state if hasattr(tool, "experiment") else tool.state)["evaluation"]

    variants = {}
    for rule in ["argmax"] + (["threshold"] if threshold else []):
        set_rule(threshold if rule == "threshold" else None)
        for with_tta in ([False, True] if tta else [False]):
            tool.Evaluate(tta=with_tta)
            variants[rule + ("+tta" if with_tta else "")] = test_figures(saved_evaluation())
    return variants


def primary_rule(threshold, tta: bool) -> str:
    return ("threshold" if threshold else "argmax") + ("+tta" if tta else "")
