"""Does ImageNet pre-training help on the real data? Keras MobileNet (alpha 0.25) fine-tuned
from the ImageNet weights in ../shared/weights/keras against the same model from random
weights, both through the facade, evaluated on the official Kermany test split (624 images).

    python benchmarks/bench_keras_pretrained.py [--images 400] [--size 128] [--epochs 5]
                                                 [--fine-tune-all]

Both runs: the same ``--images`` training images (half NORMAL, half PNEUMONIA, first files of
the Kermany train split; the core carves a patient-grouped validation split out of them),
Adam 1e-3, batch 16, the best epoch by validation accuracy; evaluation reopens each
experiment with ``eval_infer=True``. The starting weights differ:
``model_path=../shared/weights/keras/mobilenet_2_5_224_tf_no_top.h5`` or
``use_pretrained=False``, and so does what trains, each run getting its usual recipe: the
pretrained model trains its head on the frozen base (BatchNorm in inference mode, the Keras
transfer-learning recipe and the facade's default), the random one trains the whole network
(a frozen random base would be no baseline). ``--fine-tune-all`` trains the whole network in
both. Needs ../shared (skips with a message otherwise).
"""
import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import kermany_subset, save_result, shared_dir  # noqa: E402

WEIGHTS = Path("weights") / "keras" / "mobilenet_2_5_224_tf_no_top.h5"
MODEL = "mobilenet_0.25"


def run(name: str, train_dir: Path, test_dir: Path, args, workspace: Path,
        model_path) -> dict:
    from xrayprototype import prototype

    gtf = prototype(verbose=0, workspace=workspace)
    gtf.Prototype("KerasPretrained", name, backend="keras")
    gtf.Default(dataset_path=str(train_dir), model_name=MODEL,
                freeze_base_network=model_path is not None and not args.fine_tune_all,
                num_epochs=args.epochs, use_pretrained=model_path is not None)
    if model_path:
        gtf.update_model_path(str(model_path))
    gtf.update_input_size(args.size)
    gtf.update_batch_size(16)
    gtf.update_display_progress(False)
    started = time.perf_counter()
    summary = gtf.Train()
    seconds = time.perf_counter() - started

    gtf = prototype(verbose=0, workspace=workspace)
    gtf.Prototype("KerasPretrained", name, eval_infer=True)
    gtf.Dataset_Params(dataset_path=str(test_dir))
    gtf.Dataset()
    accuracy, _ = gtf.Evaluate()
    evaluation = gtf.experiment.state["evaluation"]
    return {"test_accuracy": accuracy / 100.0, "test_roc_auc": evaluation["roc_auc"],
            "test_images": evaluation["num_images"], "best_val_accuracy": summary["best_val_accuracy"],
            "best_epoch": summary["best_epoch"], "train_seconds": seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=400)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--fine-tune-all", action="store_true",
                        help="train the whole pretrained network too (default: its head)")
    args = parser.parse_args()
    shared = shared_dir()
    if shared is None or not (shared / WEIGHTS).is_file():
        print(f"skipped: needs ../shared with data/kermany-224 and {WEIGHTS}")
        return
    results = {"command": "python benchmarks/bench_keras_pretrained.py " + " ".join(sys.argv[1:]),
               "model": MODEL, "train_images": args.images, "input_size": args.size,
               "epochs": args.epochs, "batch_size": 16,
               "pretrained_trains": "whole network" if args.fine_tune_all else "head (frozen base)",
               "random_trains": "whole network", "data": "kermany-224 (real); test = official 624 images"}
    with tempfile.TemporaryDirectory() as tmp:
        half = args.images // 2
        train_dir = kermany_subset(Path(tmp) / "train", {"NORMAL": half,
                                                         "PNEUMONIA": args.images - half})
        test_dir = shared / "data" / "kermany-224" / "test"
        for name, model_path in (("imagenet", shared / WEIGHTS), ("random", None)):
            results[name] = run(name, train_dir, test_dir, args, Path(tmp) / "ws", model_path)
            row = results[name]
            print(f"{name:>8}: test accuracy {row['test_accuracy']:.4f}, ROC-AUC "
                  f"{row['test_roc_auc']:.4f} on {row['test_images']} images (best val acc "
                  f"{row['best_val_accuracy']:.4f} at epoch {row['best_epoch']}; "
                  f"{row['train_seconds']:.0f} s)", flush=True)
    results["pretrained_beats_random"] = \
        results["imagenet"]["test_accuracy"] > results["random"]["test_accuracy"]
    path = save_result("keras_pretrained", results)
    print(f"pretrained beats random: {results['pretrained_beats_random']}; saved {path}")


if __name__ == "__main__":
    main()
