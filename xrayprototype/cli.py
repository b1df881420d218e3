"""Command line: ``xrayprototype train | evaluate | infer | demo``, wrapping the facade.

Example:
    xrayprototype train --project Pneumonia --experiment resnet18 \\
        --dataset chest_xray/train --model resnet18 --epochs 5
    xrayprototype evaluate --project Pneumonia --experiment resnet18 --dataset chest_xray/test
    xrayprototype infer --project Pneumonia --experiment resnet18 --image chest.jpeg
    xrayprototype demo
"""
import argparse
import json
import sys
from typing import List, Optional

from .errors import XrayPrototypeError


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--workspace", help="workspace root (default ./workspace or "
                                            "$XRAYPROTOTYPE_WORKSPACE)")
    parser.add_argument("--quiet", action="store_true", help="no progress output")


def _experiment_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--project", required=True)
    parser.add_argument("--experiment", required=True)
    _common(parser)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="xrayprototype", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)

    train = commands.add_parser("train", help="train a new experiment")
    _experiment_args(train)
    train.add_argument("--dataset", required=True,
                       help="folder of class sub-folders, or a MedMNIST .npz (train + val splits)")
    train.add_argument("--csv", help="CSV of file,label rows (then --dataset is its image folder)")
    train.add_argument("--backend", default="pytorch")
    train.add_argument("--model", default="resnet18")
    train.add_argument("--epochs", type=int, default=5)
    train.add_argument("--input-size", type=int, default=224)
    train.add_argument("--batch-size", type=int, default=16)
    train.add_argument("--learning-rate", type=float)
    train.add_argument("--no-pretrained", action="store_true", help="train from random weights")
    train.add_argument("--unfreeze", action="store_true", help="train the whole network")
    train.add_argument("--resume", action="store_true", help="continue an interrupted run")

    evaluate = commands.add_parser("evaluate", help="evaluate a trained experiment")
    _experiment_args(evaluate)
    evaluate.add_argument("--dataset", required=True,
                          help="folder of class sub-folders, or file.npz (its test split; "
                               "file.npz:val for another)")
    evaluate.add_argument("--csv")

    infer = commands.add_parser("infer", help="predict images with a trained experiment")
    _experiment_args(infer)
    target = infer.add_mutually_exclusive_group(required=True)
    target.add_argument("--image")
    target.add_argument("--dir")

    demo = commands.add_parser("demo", help="quick prototype on the embedded synthetic data")
    _common(demo)
    demo.add_argument("--backend", default="pytorch")
    demo.add_argument("--model", default="resnet18")
    demo.add_argument("--epochs", type=int, default=5)
    demo.add_argument("--input-size", type=int, default=64)
    return parser


def _train(args, prototype) -> dict:
    gtf = prototype(verbose=0 if args.quiet else 1, workspace=args.workspace)
    if args.resume:
        gtf.Prototype(args.project, args.experiment, resume_train=True)
        return gtf.Train()
    gtf.Prototype(args.project, args.experiment, backend=args.backend)
    gtf.Default(dataset_path=args.dataset, path_to_csv=args.csv, model_name=args.model,
                freeze_base_network=not args.unfreeze, num_epochs=args.epochs,
                use_pretrained=not args.no_pretrained, input_size=args.input_size,
                batch_size=args.batch_size)
    if args.learning_rate:
        gtf.update_learning_rate(args.learning_rate)
    return gtf.Train()


def _open(args, prototype):
    gtf = prototype(verbose=0 if args.quiet else 1, workspace=args.workspace)
    gtf.Prototype(args.project, args.experiment, eval_infer=True)
    return gtf


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    from .prototype import prototype
    try:
        if args.command == "train":
            result = _train(args, prototype)
        elif args.command == "evaluate":
            gtf = _open(args, prototype)
            gtf.Dataset_Params(dataset_path=args.dataset, path_to_csv=args.csv)
            gtf.Dataset()
            accuracy, per_class = gtf.Evaluate()
            result = {"accuracy": accuracy, "per_class": per_class}
        elif args.command == "infer":
            gtf = _open(args, prototype)
            result = gtf.Infer(img_name=args.image) if args.image else gtf.Infer(img_dir=args.dir)
        else:
            from .demo import run_demo
            result = run_demo(workspace=args.workspace, backend=args.backend, model=args.model,
                              epochs=args.epochs, input_size=args.input_size,
                              verbose=0 if args.quiet else 1)
    except XrayPrototypeError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if args.quiet:
        print(json.dumps(result, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
