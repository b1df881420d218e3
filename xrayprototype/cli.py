"""Command line: ``xrayprototype train | evaluate | infer | explain | calibrate | export |
audit | fetch | demo``, on ``Experiment``.

Example:
    xrayprototype train --project Pneumonia --experiment resnet18 \\
        --dataset chest_xray/train --model resnet18 --epochs 5
    xrayprototype evaluate --project Pneumonia --experiment resnet18 --dataset chest_xray/test
    xrayprototype infer --project Pneumonia --experiment resnet18 --image chest.jpeg
    xrayprototype infer --project Pneumonia --experiment resnet18 --dir scans --recursive \\
        --csv predictions.csv
    xrayprototype infer --onnx export/model.onnx --dir scans --csv predictions.csv
    xrayprototype explain --project Pneumonia --experiment resnet18 --dir chest_xray/test/NORMAL
    xrayprototype calibrate --project Pneumonia --experiment resnet18
    xrayprototype export --project Pneumonia --experiment resnet18 --out onnx_model
    xrayprototype audit --dataset chest_xray/train
    xrayprototype demo
    xrayprototype fetch --list
    xrayprototype fetch pneumoniamnist --root data
"""
import argparse
import json
import sys
from pathlib import Path
from typing import List, Optional

from .errors import ConfigError, XrayPrototypeError
from .experiment import Experiment
from .workspace import ExperimentPaths, append_run_log, resolve_root


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

    infer = commands.add_parser("infer", help="predict images with a trained experiment, an "
                                              "ensemble or an exported ONNX model")
    infer.add_argument("--project", help="the experiment's project (with --experiment)")
    model = infer.add_mutually_exclusive_group(required=True)
    model.add_argument("--experiment")
    model.add_argument("--ensemble", help="an ensemble of the workspace (ensembles/NAME)")
    model.add_argument("--onnx", help="an exported model.onnx (its JSON beside it); no "
                                      "workspace needed")
    _common(infer)
    target = infer.add_mutually_exclusive_group(required=True)
    target.add_argument("--image")
    target.add_argument("--dir")
    infer.add_argument("--recursive", action="store_true", help="with --dir: sub-folders too")
    infer.add_argument("--csv", help="with --dir: stream the predictions into this CSV")

    explain = commands.add_parser("explain", help="Grad-CAM heatmaps of images (overlay PNGs)")
    _experiment_args(explain)
    target = explain.add_mutually_exclusive_group(required=True)
    target.add_argument("--image")
    target.add_argument("--dir")
    explain.add_argument("--method", default="gradcam", help="gradcam or gradcam++")
    explain.add_argument("--class-name", help="class to explain (default: the predicted one)")
    explain.add_argument("--layer", help="convolutional layer (default: the last spatial block)")

    export = commands.add_parser("export", help="write the best model as model.onnx plus its "
                                                "sidecar model.json (runs without this library)")
    _experiment_args(export)
    export.add_argument("--out", help="folder (or .onnx file) to write; default "
                                      "<experiment>/export/")
    export.add_argument("--format", default="onnx", help="onnx (the only format)")

    calibrate = commands.add_parser("calibrate", help="fit a temperature on the validation split")
    _experiment_args(calibrate)
    calibrate.add_argument("--reset", action="store_true", help="remove the temperature")

    audit = commands.add_parser("audit", help="shortcut audit of a data set: can the label be "
                                              "predicted from image metadata alone?")
    _common(audit)
    audit.add_argument("--dataset", required=True,
                       help="folder of class sub-folders (or train/ and val/), or an .npz")
    audit.add_argument("--csv", help="CSV of file,label rows (then --dataset is its folder)")
    audit.add_argument("--group-column", help="the CSV column naming the patient")
    audit.add_argument("--seed", type=int, default=0)

    fetch = commands.add_parser("fetch", help="download a public data set (checksum checked, "
                                              "resumable, cached); --list shows them")
    fetch.add_argument("name", nargs="?", help="pneumoniamnist, kermany or covid-ieee8023")
    fetch.add_argument("--list", action="store_true", help="list the data sets and checksums")
    fetch.add_argument("--root", help="data folder (default $XRAYPROTOTYPE_DATA or the cache)")
    fetch.add_argument("--url", help="download from this address instead")
    fetch.add_argument("--known-hash", help="require this checksum (sha256:... or md5:...)")
    fetch.add_argument("--allow-unverified", action="store_true",
                       help="download a set with no published checksum (warns its SHA-256)")
    fetch.add_argument("--quiet", action="store_true", help="no progress output")

    demo = commands.add_parser("demo", help="quick prototype on the embedded synthetic data")
    _common(demo)
    demo.add_argument("--backend", default="pytorch")
    demo.add_argument("--model", default="resnet18")
    demo.add_argument("--epochs", type=int, default=5)
    demo.add_argument("--input-size", type=int, default=64)
    return parser


def _reporter(args, paths):
    """Print (unless --quiet) and append to the experiment's logs/run.log."""
    def report(text: str) -> None:
        if not args.quiet:
            print(text, flush=True)
        append_run_log(paths, text)
    return report


def _paths(args):
    return ExperimentPaths(resolve_root(args.workspace), args.project, args.experiment)


def _train(args) -> dict:
    paths = _paths(args)
    report = _reporter(args, paths)
    if args.resume:
        experiment = Experiment.open(paths, "resume", report=report)
    else:
        experiment = Experiment.create(paths, args.backend, report=report)
        optim = {"learning_rate": args.learning_rate} if args.learning_rate else {}
        experiment.update({
            "data": {"dataset_path": args.dataset, "path_to_csv": args.csv,
                     "input_size": args.input_size, "batch_size": args.batch_size},
            "model": {"model_name": args.model, "freeze_base_network": not args.unfreeze,
                      "use_pretrained": not args.no_pretrained},
            "train": {"num_epochs": args.epochs}, "optim": optim})
        data = experiment.load_data()
        report(f"classes {data.classes}; train {len(data.train)}, val {len(data.val)}")
    experiment.show_progress = not args.quiet
    paths.logs.mkdir(parents=True, exist_ok=True)
    summary = experiment.train()
    from .training import describe_best

    report(f"{describe_best(summary)}; saved in {paths.dir}")
    return summary


def _opened(args):
    paths = _paths(args)
    experiment = Experiment.open(paths, "eval_infer", report=_reporter(args, paths))
    experiment.show_progress = not args.quiet
    return experiment.ready_for_prediction()


def _evaluate(args) -> dict:
    from .evaluation import report_lines

    experiment = _opened(args)
    experiment.set_evaluation_data({"dataset_path": args.dataset, "path_to_csv": args.csv})
    experiment.load_eval_data()
    metrics = experiment.evaluate()
    for line in report_lines(metrics, experiment.paths.logs):
        experiment.report(line)
    return {"accuracy": 100.0 * metrics["accuracy"], "per_class": metrics["monk_per_class"]}


def _predictor(args):
    """(predictor, report) of ``infer``: the experiment, the ensemble's members combined, or
    the exported ONNX file."""
    if args.onnx:
        from .onnx_model import OnnxModel

        return OnnxModel(args.onnx), (lambda text: None) if args.quiet else print
    if args.ensemble:
        from .ensemble import ENSEMBLE_FILE, ensemble
        from .workspace import ensemble_dir

        root = resolve_root(args.workspace)
        if not (ensemble_dir(root, args.ensemble) / ENSEMBLE_FILE).is_file():
            raise ConfigError(f"no ensemble '{args.ensemble}' in the workspace {root}; create "
                              "it with ensemble().Ensemble(name) and Add_Experiment first.")
        combined = ensemble(verbose=0, workspace=root)
        combined.Ensemble(args.ensemble)
        return combined.predictor(), (lambda text: None) if args.quiet else print
    if not args.project:
        raise ConfigError("give --project with --experiment (or --ensemble NAME, or --onnx "
                          "FILE).")
    experiment = _opened(args)
    return experiment, experiment.report


def _infer(args):
    from .batch_inference import predict_folder_to_csv, predict_list, summary_lines
    from .evaluation import image_files
    from .prediction import describe_result

    if (args.csv or args.recursive) and not args.dir:
        raise ConfigError("--csv and --recursive apply to a folder: give --dir.")
    predictor, report = _predictor(args)
    if args.csv:
        summary = predict_folder_to_csv(predictor, args.dir, args.csv, args.recursive,
                                        progress=not args.quiet)
        for line in summary_lines(summary):
            report(line)
        return summary
    files = [str(f) for f in image_files(args.image, args.dir, args.recursive)]
    results = predict_list(predictor, files, on_corrupt="skip" if args.dir else "error")
    for result in results:
        report(describe_result(result))
    return results[0] if args.image else results


def _explain(args):
    from .data.sources import ImageRecords
    from .evaluation import image_files
    from .explain import explain_records

    experiment = _opened(args)
    files = [str(f) for f in image_files(args.image, args.dir)]
    results = explain_records(experiment, ImageRecords(files, [0] * len(files),
                                                       experiment.classes),
                              args.method, args.class_name, args.layer)
    for result in results:
        experiment.report(f"{result['img_name']}: {result['method']} of {result['class_name']} "
                          f"(p={result['probability']:.3f}) -> {result['overlay_png']}")
    return [{k: v for k, v in r.items() if k != "heatmap"} for r in results]


def _export(args):
    from .export import export_experiment

    experiment = _opened(args)
    written = export_experiment(experiment, args.format, args.out)
    experiment.report(f"exported {written['model']} and its sidecar {written['sidecar']}")
    return written


def _calibrate(args):
    experiment = _opened(args)
    record = experiment.calibrate(reset=args.reset)
    experiment.report("temperature removed" if record is None else
                      f"temperature {record['temperature']:.3f} fitted on "
                      f"{record['num_images']} validation images: ECE {record['ece_before']:.4f}"
                      f" -> {record['ece_after']:.4f}")
    return record


def _audit(args):
    """The shortcut audit of a data set, before any training; files go to
    ``<workspace>/_audits/<data set folder name>/``."""
    from .audit import audit_records
    from .audit_report import path_records, report_lines, save_audit
    from .config import DataConfig
    from .workspace import validate_name

    records, splits = path_records(args.dataset, args.csv, DataConfig(), args.seed,
                                   args.group_column)
    result, table = audit_records(records, seed=args.seed, splits=splits)
    name = validate_name(Path(args.dataset).name.replace(".", "_") or "dataset", "data set")
    folder = resolve_root(args.workspace) / "_audits" / name
    folder.mkdir(parents=True, exist_ok=True)
    files = save_audit(result, table, folder)
    if not args.quiet:
        for line in report_lines(result):
            print(line, flush=True)
    return dict({k: result[k] for k in ("dataset", "num_images", "auc", "warning", "message")},
                files=files)


def _fetch(args):
    """``xrayprototype fetch NAME`` / ``--list`` (xrayprototype.datasets)."""
    from .datasets import fetch, list_datasets

    if args.list:
        entries = list_datasets()
        if not args.quiet:
            for entry in entries:
                print(f"{entry['name']}: {entry['title']}\n  licence: {entry['licence']}\n"
                      f"  checksum: {entry['known_hash'] or 'none'} ({entry['hash_source']})",
                      flush=True)
        return entries
    if not args.name:
        from .errors import ConfigError
        raise ConfigError("fetch needs a data set name (xrayprototype fetch kermany) or --list.")
    path = fetch(args.name, args.root, url=args.url, known_hash=args.known_hash,
                 allow_unverified=args.allow_unverified, progress=not args.quiet)
    usage = next(e["usage"] for e in list_datasets() if e["name"] == args.name)
    if not args.quiet:
        print(f"{args.name}: {path}\n  use: {usage.replace('PATH', str(path))}",
              flush=True)
    return {"name": args.name, "path": str(path), "usage": usage}


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "train":
            result = _train(args)
        elif args.command == "evaluate":
            result = _evaluate(args)
        elif args.command == "infer":
            result = _infer(args)
        elif args.command == "fetch":
            result = _fetch(args)
        elif args.command in ("explain", "calibrate", "audit", "export"):
            result = {"explain": _explain, "calibrate": _calibrate, "audit": _audit,
                      "export": _export}[args.command](args)
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
