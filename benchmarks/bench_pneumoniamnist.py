"""PneumoniaMNIST benchmark: the three-line prototype on the MedMNIST ``.npz`` file, trained on
its official train split, the epoch chosen on its official val split, evaluated once on test.

    OMP_NUM_THREADS=1 python benchmarks/bench_pneumoniamnist.py [--model resnet18] [--size 40]
                                                                [--epochs 12]

Recipe (PyTorch backend): ResNet18 from random weights (whole network), the 28 px images
upsampled to ``--size``, AdamW with a one-cycle schedule, balanced class weights, light
augmentation (rotation, shift, zoom, horizontal flip); best epoch by validation ROC-AUC (the
only choice made on val; nothing is tuned on test); then ``Evaluate()`` once on the official
624-image test split. Targets (issue 6): accuracy >= 0.95, ROC-AUC >= 0.99; published:
ResNet-50 at 224 px 0.884 / 0.962, AutoML Vision 0.946 / 0.991. Needs ../shared (skips with a
message otherwise). On a small machine shared with other work, one intra-op thread
(``OMP_NUM_THREADS=1``) trains several times faster than threads that wait for each other.
"""
import argparse
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import save_result, shared_dir  # noqa: E402

PROJECT = "PneumoniaMNIST"


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
    gtf.apply_random_rotation(10)
    gtf.apply_random_shift(0.06)
    gtf.apply_random_zoom(0.1)
    gtf.apply_random_horizontal_flip(0.5)
    gtf.Training_Params(best_metric="val_roc_auc")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="resnet18")
    parser.add_argument("--pretrained", action="store_true",
                        help="start from ImageNet weights (efficientnet_lite0 has them offline)")
    parser.add_argument("--size", type=int, default=40)
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workspace", default=None, help="keep the experiment here")
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
        experiment = f"{args.model}-{args.size}"
        gtf = prototype(verbose=1, workspace=workspace)
        gtf.Prototype(PROJECT, experiment, backend="pytorch")
        configure(gtf, npz_file, args)
        summary = gtf.Train()
        dataset = gtf.experiment.state["dataset"]

        gtf = prototype(verbose=1, workspace=workspace)          # as a user reloads it
        gtf.Prototype(PROJECT, experiment, eval_infer=True)
        gtf.Dataset_Params(dataset_path=str(npz_file))            # an npz evaluates on test
        gtf.Dataset()
        accuracy, _ = gtf.Evaluate()
        evaluation = gtf.experiment.state["evaluation"]
        model = gtf.experiment.state.get("model", {})

    per_class = evaluation["per_class"]
    threads = os.environ.get("OMP_NUM_THREADS")
    result = {
        "command": (f"OMP_NUM_THREADS={threads} " if threads else "") +
                   " ".join(["python benchmarks/bench_pneumoniamnist.py", *sys.argv[1:]]),
        "data": "pneumoniamnist_28.npz: official train / val (epoch selection) / test",
        "backend": "pytorch", "model": args.model,
        "pretrained": "ImageNet" if args.pretrained else "none (random weights)",
        "input_size": args.size, "epochs": args.epochs, "batch_size": args.batch_size,
        "learning_rate": args.lr, "seed": args.seed,
        "recipe": "AdamW (wd 1e-4) + one-cycle, balanced class weights, rotate 10 / shift 0.06 "
                  "/ zoom 0.1 / h-flip; best epoch by val ROC-AUC",
        "cores": os.cpu_count(), "intra_op_threads": threads or "all cores",
        "train_images": dataset["num_train"],
        "val_images": dataset["num_val"], "train_seconds": summary["train_time_s"],
        "best_epoch": summary.get("best_epoch"), "best_val_roc_auc": summary.get("best_value"),
        "test_images": evaluation["num_images"], "test_accuracy": accuracy / 100.0,
        "sensitivity_pneumonia": per_class["PNEUMONIA"]["recall"],
        "specificity_normal_recall": per_class["NORMAL"]["recall"],
        "test_roc_auc": evaluation["roc_auc"],
        "majority_baseline_accuracy": evaluation["majority_baseline_accuracy"],
        "num_parameters": model.get("num_parameters"),
        "targets_met": {"accuracy>=0.95": accuracy / 100.0 >= 0.95,
                        "roc_auc>=0.99": (evaluation["roc_auc"] or 0) >= 0.99},
    }
    path = save_result("pneumoniamnist", result)
    print(f"test accuracy {result['test_accuracy']:.4f} (majority baseline "
          f"{result['majority_baseline_accuracy']:.4f}), sensitivity "
          f"{result['sensitivity_pneumonia']:.4f}, specificity "
          f"{result['specificity_normal_recall']:.4f}, ROC-AUC {result['test_roc_auc']:.4f}; "
          f"trained {result['train_seconds'] / 60:.1f} min (best epoch {result['best_epoch']}); "
          f"saved {path}")


if __name__ == "__main__":
    main()
