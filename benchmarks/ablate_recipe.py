"""Which training default costs ranking quality? One-factor ablations judged by patient-grouped
cross-validation on the official Kermany *train* split (the test split is never read here).

    python benchmarks/ablate_recipe.py [--size 64] [--epochs 3] [--folds 3] [--workers 2]
                                       [--variants baseline,no_label_smoothing,...]

Every variant starts from ``--base`` (``previous``: the recipe ``bench_kermany.py`` ran before
issue 16; ``defaults``: this library's defaults) and changes one thing. Each (variant, fold)
trains EfficientNet-Lite0 from its ImageNet weights on the other folds and validates on the
held-out fold, whose patients it never saw (``StratifiedGroupKFold`` on the library's patient
groups). The criterion, fixed before any run: the mean over folds of the validation ROC-AUC of
the model each variant's own best-epoch rule keeps, and its difference from the base paired by
fold (the folds are shared, so fold difficulty cancels). Figures are printed and saved in
``benchmarks/results/ablate_recipe-<base>-<size>.json``. Needs ../shared.
"""
import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import save_result, shared_dir  # noqa: E402

#: the recipe bench_kermany.py ran before issue 16 (--augment light --mixup 0, best by val_loss)
PREVIOUS = [("optimizer_adamw", [1e-3], {"weight_decay": 1e-4}),
            ("lr_onecycle", [], {"pct_start": 0.2, "final_div_factor": 1e4,
                                 "cycle_momentum": False}),
            ("loss_softmax_crossentropy", [], {"label_smoothing": 0.1,
                                               "class_weights": "balanced"}),
            ("Training_Params", [], {"best_metric": "val_loss"})]
#: every run's augmentation: bench_kermany.py's "light" preset, which the issue's run used
TRAIN = {"train": True}
LIGHT = [("apply_random_horizontal_flip", [0.5], TRAIN), ("apply_random_rotation", [10], TRAIN),
         ("apply_random_zoom", [0.1], TRAIN), ("apply_random_shift", [0.05], TRAIN)]
#: fastai's aug_transforms adds lighting (brightness/contrast 0.2) and warp (0.2) by default
FASTAI_EXTRA_AUG = [("apply_random_brightness_contrast", [0.2, 0.2], TRAIN),
                    ("apply_random_perspective", [0.2, 0.75], TRAIN)]

#: variant -> the calls it adds after the base (one factor each, toward established practice)
VARIANTS = {
    "baseline": [],
    "no_augmentation": [("reset_transforms", [], {})],
    "no_label_smoothing": [("loss_softmax_crossentropy", [], {"label_smoothing": 0.0,
                                                              "class_weights": "balanced"})],
    "no_class_weights": [("update_class_weights", [None], {})],
    "weight_decay_0.01": [("optimizer_adamw", [1e-3], {"weight_decay": 0.01})],
    "adam_fastai_betas": [("optimizer_adamw", [1e-3], {"weight_decay": 1e-4, "beta2": 0.99,
                                                       "epsilon": 1e-5})],
    "onecycle_fastai_shape": [("lr_onecycle", [], {"pct_start": 0.25, "final_div_factor": 1e5,
                                                   "cycle_momentum": False})],
    "no_warmup_cosine": [("lr_cosine", [], {})],
    "momentum_cycling": [("lr_onecycle", [], {"pct_start": 0.2, "final_div_factor": 1e4,
                                              "cycle_momentum": True})],
    "fastai_augmentation": FASTAI_EXTRA_AUG,
    # with --base defaults: the recipe before issue 16 against the library's defaults
    "previous_recipe": PREVIOUS,
}


def folds_of(train_dir: Path, folds: int, seed: int, root: Path) -> list:
    """[(train_folder, val_folder)] of symlinks, one pair per fold, split by patient."""
    from sklearn.model_selection import StratifiedGroupKFold

    from xrayprototype.config import DEFAULT_GROUP_PATTERN
    from xrayprototype.data.sources import load_records

    records = load_records(str(train_dir), group_pattern=DEFAULT_GROUP_PATTERN)
    splitter = StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=seed)
    pairs = []
    for fold, (train_idx, val_idx) in enumerate(
            splitter.split(records.paths, records.labels, records.groups)):
        pair = []
        for split, indices in (("train", train_idx), ("val", val_idx)):
            folder = root / f"fold{fold}" / split
            for index in indices:
                path = Path(records.paths[index])
                link = folder / records.classes[records.labels[index]] / path.name
                link.parent.mkdir(parents=True, exist_ok=True)
                link.symlink_to(path)
            pair.append(str(folder))
        pairs.append(tuple(pair))
    return pairs


def run_one(job: dict) -> dict:
    """Train one (variant, fold); the per-epoch validation records."""
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import torch

    torch.set_num_threads(job["threads"])
    from xrayprototype import prototype

    gtf = prototype(verbose=0, workspace=job["workspace"])
    gtf.Prototype("Ablate", f"{job['variant']}-fold{job['fold']}", backend="pytorch")
    gtf.Default(dataset_path=list(job["pair"]), model_name="efficientnet_lite0",
                freeze_base_network=False, num_epochs=job["epochs"], use_pretrained=True,
                input_size=job["size"], batch_size=32)
    gtf.update_seed(job["seed"])
    gtf.update_display_progress(False)
    for verb, args, kwargs in job["base"] + LIGHT + VARIANTS[job["variant"]]:
        getattr(gtf, verb)(*args, **kwargs)
    started = time.perf_counter()
    summary = gtf.Train()
    lines = gtf.experiment.paths.metrics_file.read_text().splitlines()
    val = [r for r in map(json.loads, lines) if r["split"] == "val"]
    return {"variant": job["variant"], "fold": job["fold"], "best_epoch": summary["best_epoch"],
            "val_roc_auc": [r["roc_auc"] for r in val], "val_loss": [r["loss"] for r in val],
            "kept_roc_auc": next(r["roc_auc"] for r in val
                                 if r["epoch"] == summary["best_epoch"]),
            "seconds": time.perf_counter() - started}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--folds", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=2, help="processes, one thread each")
    parser.add_argument("--base", choices=("previous", "defaults"), default="previous")
    parser.add_argument("--variants", default=",".join(VARIANTS))
    args = parser.parse_args()
    shared = shared_dir()
    if shared is None:
        print("skipped: needs ../shared/data/kermany-224 (or $XRAYPROTOTYPE_SHARED)")
        return
    import numpy as np
    from concurrent.futures import ProcessPoolExecutor
    from multiprocessing import get_context

    variants = [v for v in args.variants.split(",") if v]
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        raise SystemExit(f"unknown variants {unknown}; known: {sorted(VARIANTS)}")
    if "baseline" not in variants:
        variants.insert(0, "baseline")
    base = PREVIOUS if args.base == "previous" else []
    with tempfile.TemporaryDirectory() as tmp:
        pairs = folds_of(shared / "data" / "kermany-224" / "train", args.folds, args.seed,
                         Path(tmp) / "folds")
        jobs = [{"variant": v, "fold": f, "pair": pair, "epochs": args.epochs,
                 "size": args.size, "seed": args.seed, "base": base, "threads": 1,
                 "workspace": str(Path(tmp) / "ws")}
                for f, pair in enumerate(pairs) for v in variants]
        with ProcessPoolExecutor(args.workers, mp_context=get_context("spawn")) as pool:
            runs = []
            for run in pool.map(run_one, jobs):
                runs.append(run)
                print(f"{run['variant']:>24} fold {run['fold']}: kept epoch "
                      f"{run['best_epoch']} val ROC-AUC {run['kept_roc_auc']:.4f} "
                      f"(per epoch {[round(a, 4) for a in run['val_roc_auc']]}) "
                      f"{run['seconds']:.0f} s", flush=True)
    baseline = {r["fold"]: r["kept_roc_auc"] for r in runs if r["variant"] == "baseline"}
    table = {}
    for variant in variants:
        rows = sorted((r for r in runs if r["variant"] == variant), key=lambda r: r["fold"])
        kept = np.array([r["kept_roc_auc"] for r in rows])
        last = np.array([r["val_roc_auc"][-1] for r in rows])
        diff = kept - np.array([baseline[r["fold"]] for r in rows])
        table[variant] = {"cv_roc_auc": float(kept.mean()), "cv_roc_auc_sd": float(kept.std()),
                          "paired_diff": float(diff.mean()),
                          "paired_diff_sd": float(diff.std()),
                          "folds_better": int((diff > 0).sum()),
                          "last_epoch_roc_auc": float(last.mean())}
    print(f"\n{'variant':>24} | CV ROC-AUC (kept epoch) | vs base, paired | folds better "
          f"| last epoch")
    for variant, row in table.items():
        print(f"{variant:>24} | {row['cv_roc_auc']:.4f} +- {row['cv_roc_auc_sd']:.4f} | "
              f"{row['paired_diff']:+.4f} +- {row['paired_diff_sd']:.4f} | "
              f"{row['folds_better']}/{args.folds} | {row['last_epoch_roc_auc']:.4f}")
    path = save_result(f"ablate_recipe-{args.base}-{args.size}", {
        "command": "python benchmarks/ablate_recipe.py " + " ".join(sys.argv[1:]),
        "criterion": "mean over patient-grouped folds of Kermany train of the validation "
                     "ROC-AUC at the epoch each variant's rule keeps; paired by fold",
        "model": "efficientnet_lite0 (ImageNet)", "input_size": args.size,
        "epochs": args.epochs, "folds": args.folds, "seed": args.seed, "base": args.base,
        "table": table, "runs": runs})
    print(f"saved {path}")


if __name__ == "__main__":
    main()
