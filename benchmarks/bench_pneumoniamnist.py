"""PneumoniaMNIST benchmark: the three-line prototype on the MedMNIST ``.npz`` file, trained on
its official train split, the epoch (and threshold) chosen on its official val split,
evaluated once on test.

    OMP_NUM_THREADS=1 python benchmarks/bench_pneumoniamnist.py [--model resnet18] [--size 40]
        [--epochs 12] [--pretrained] [--augment light|strong] [--mixup 0.2] [--tta] [--youden]
        [--workspace W]

Recipe (PyTorch backend): the model (ResNet18 from random weights by default; ``--pretrained``
starts from ImageNet weights, offline for efficientnet_lite0), whole network trained, the 28 px
images upsampled to ``--size``, AdamW with a one-cycle schedule, balanced class weights,
augmentation ``light`` (rotation 10, shift 0.06, zoom 0.1, h-flip) or ``strong`` (adds
brightness / contrast 0.2; zoom 0.15, shift 0.08), optional mixup; best epoch by validation
ROC-AUC; ``--youden``: threshold by maximum Youden J on val (else the most probable class);
``--tta``: flip test-time augmentation. Nothing is tuned on test: the recipe's figures are those
of its own rule; the other rule (argmax) and the evaluation without TTA are reported beside, on
the same official 624-image test split, for information.
Targets (issue 6): accuracy >= 0.95, ROC-AUC >= 0.99; published: ResNet-50 at 224 px 0.884 /
0.962, AutoML Vision 0.946 / 0.991. Needs ../shared (skips with a message otherwise). On a
small machine shared with other work, one intra-op thread (``OMP_NUM_THREADS=1``) trains
several times faster than threads that wait for each other.

Results go to ``benchmarks/results/pneumoniamnist-<experiment>.json``; with ``--workspace`` the
experiment stays for ``bench_ensemble.py``.
"""
import argparse
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (apply_augmentation, augmentation_text,  # noqa: E402
                     evaluate_decision_rules, finished_experiment, primary_rule,
                     print_test_figures, save_result, shared_dir)

PROJECT = "PneumoniaMNIST"


AUGMENTATIONS = {
    "light": {"rotation": 10, "shift": 0.06, "zoom": 0.1},
    "strong": {"rotation": 10, "shift": 0.08, "zoom": 0.15, "brightness_contrast": 0.2},
}


def configure(gtf, npz_file: Path, args) -> None:
    gtf.Default(dataset_path=str(npz_file), model_name=args.model, freeze_base_network=False,
                num_epochs=args.epochs, use_pretrained=args.pretrained)
    gtf.update_input_size(args.size)
    gtf.update_batch_size(args.batch_size)
    gtf.update_seed(args.seed)
    gtf.update_display_progress(args.progress)
    gtf.optimizer_adamw(args.lr, weight_decay=1e-4)
    gtf.lr_onecycle(pct_start=0.2)
    gtf.loss_softmax_crossentropy(class_weights="balanced")
    apply_augmentation(gtf, **AUGMENTATIONS[args.augment])
    if args.mixup:
        gtf.update_mixup(args.mixup)
    gtf.Training_Params(best_metric="val_roc_auc")


def recipe_text(args) -> str:
    parts = ["AdamW (wd 1e-4) + one-cycle", "balanced class weights",
             augmentation_text(**AUGMENTATIONS[args.augment])]
    if args.mixup:
        parts.append(f"mixup {args.mixup}")
    parts += ["best epoch by val ROC-AUC", "Youden threshold on val" if args.youden else "argmax",
              "flip TTA" if args.tta else "no TTA"]
    return ", ".join(parts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="resnet18")
    parser.add_argument("--pretrained", action="store_true",
                        help="start from ImageNet weights (efficientnet_lite0 has them offline)")
    parser.add_argument("--size", type=int, default=40)
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--augment", choices=sorted(AUGMENTATIONS), default="light")
    parser.add_argument("--mixup", type=float, default=0.0, help="mixup alpha; 0: off")
    parser.add_argument("--tta", action="store_true", help="flip test-time augmentation")
    parser.add_argument("--youden", action="store_true",
                        help="decision threshold by maximum Youden J on the val split")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workspace", default=None, help="keep the experiment here")
    parser.add_argument("--name", default="", help="suffix of the experiment's name")
    parser.add_argument("--reuse", action="store_true",
                        help="with --workspace: a finished training run there is reused (then "
                             "only the threshold and the test evaluations run)")
    parser.add_argument("--progress", action="store_true", help="show progress bars")
    args = parser.parse_args()
    shared = shared_dir()
    npz_file = shared / "data" / "pneumoniamnist" / "pneumoniamnist_28.npz" if shared else None
    if npz_file is None or not npz_file.is_file():
        print("skipped: needs ../shared/data/pneumoniamnist/pneumoniamnist_28.npz "
              "(or $XRAYPROTOTYPE_SHARED)")
        return
    from xrayprototype import prototype

    with tempfile.TemporaryDirectory() as tmp:
        workspace = Path(args.workspace or Path(tmp) / "ws")
        experiment = f"{args.model}-{args.size}" + ("-imagenet" if args.pretrained else "") + \
            (f"-{args.name}" if args.name else "")
        gtf = prototype(verbose=1, workspace=workspace)
        if args.reuse and finished_experiment(workspace, PROJECT, experiment):
            gtf.Prototype(PROJECT, experiment, resume_train=True)
            gtf.Dataset()
            summary = gtf.experiment.state["summary"]
        else:
            gtf.Prototype(PROJECT, experiment, backend="pytorch")
            configure(gtf, npz_file, args)
            summary = gtf.Train()
        dataset = gtf.experiment.state["dataset"]
        threshold = gtf.Select_Threshold(method="youden", tta=args.tta) if args.youden else None

        gtf = prototype(verbose=1, workspace=workspace)          # as a user reloads it
        gtf.Prototype(PROJECT, experiment, eval_infer=True)
        gtf.Dataset_Params(dataset_path=str(npz_file))            # an npz evaluates on test
        gtf.Dataset()
        evaluations = evaluate_decision_rules(gtf, threshold, args.tta)
        model = gtf.experiment.state.get("model", {})

    figures = evaluations[primary_rule(threshold, args.tta)]
    threads = os.environ.get("OMP_NUM_THREADS")
    result = {
        "command": (f"OMP_NUM_THREADS={threads} " if threads else "") +
                   " ".join(["python benchmarks/bench_pneumoniamnist.py",
                             *(a for a in sys.argv[1:] if a != "--reuse")]),
        "data": "pneumoniamnist_28.npz: official train / val (epoch selection) / test",
        "backend": "pytorch", "model": args.model, "experiment": f"{PROJECT}/{experiment}",
        "pretrained": "ImageNet" if args.pretrained else "none (random weights)",
        "input_size": args.size, "epochs": args.epochs, "batch_size": args.batch_size,
        "learning_rate": args.lr, "seed": args.seed, "recipe": recipe_text(args),
        "cores": os.cpu_count(), "intra_op_threads": threads or "all cores",
        "train_images": dataset["num_train"],
        "val_images": dataset["num_val"], "train_seconds": summary["train_time_s"],
        "best_epoch": summary.get("best_epoch"), "best_val_roc_auc": summary.get("best_value"),
        "threshold": threshold, **figures, "num_parameters": model.get("num_parameters"),
        "latency_ms_per_image": model.get("latency_ms_per_image"),
        "targets_met": {"accuracy>=0.95": figures["test_accuracy"] >= 0.95,
                        "roc_auc>=0.99": (figures["test_roc_auc"] or 0) >= 0.99},
    }
    result["all_decision_rules"] = evaluations       # for information; the recipe's is above
    path = save_result(f"pneumoniamnist-{experiment}", result)
    for rule, row in evaluations.items():
        print_test_figures(rule, row)
    print(f"trained {result['train_seconds'] / 60:.1f} min (best epoch {result['best_epoch']}); "
          f"saved {path}")


if __name__ == "__main__":
    main()
