"""Explanation benchmark (issue 12, part 2): the pointing game per backend on synthetic chest
X-rays with known lesions, the core's Grad-CAM against the reference implementation
(pytorch-grad-cam) on real Kermany images, and the saliency sanity check per backend.

    OMP_NUM_THREADS=1 python benchmarks/bench_explain.py [--backends pytorch gluon keras]
        [--size 224] [--epochs 8] [--train-per-class 200] [--test-per-class 100]
        [--workspace W [--reuse]] [--no-reference]

(a) Pointing game (Zhang et al. 2018): a ResNet-18 from random weights is trained per backend
    through the facade on synthetic images (``make_synthetic_chest_xrays(..., write_masks=True)``:
    NORMAL / PNEUMONIA, patchy consolidations whose masks mark where the drawn opacity exceeds
    half its maximum). The test PNEUMONIA images are explained for PNEUMONIA (Grad-CAM and
    Grad-CAM++ at the last block); a hit is a heatmap peak inside the image's lesion mask.
    Baselines: a random point (hits with the mean mask-area fraction) and the best fixed
    point (the pixel most often inside the TRAINING masks, scored on the test masks: a model
    that only learned where lesions usually are). Also the share of heatmap mass inside the
    mask (chance: the mask's area fraction). At the last block (7 x 7 at 224 px) and at the
    stage before it (14 x 14).
(b) Reference agreement (PyTorch): the core's Grad-CAM and Grad-CAM++ (backend hook +
    ``explain`` + ``upsample``) against pytorch-grad-cam's ``GradCAM`` / ``GradCAMPlusPlus`` on
    ResNet-18 ``layer4``, same weights and inputs: real Kermany test images at 224 px
    (ImageNet normalisation), each explained for both classes. Weights: random (seed 0;
    ../shared/weights has no ResNet-18 ImageNet weights), and the pointing game's trained
    pytorch model at its own input size. In ``_explain_reference.py``.
(c) Sanity check (Adebayo et al. 2018, cascading randomisation): every test image explained
    for its true class with the trained model, again (the trained model with itself), with
    the head re-initialised, then with the last block re-initialised too; Spearman rank
    correlation of each map with the trained one (empty trained maps left out, counted).

Each backend trains in its own process and is measured in a new one opened with
``eval_infer=True``. Results: ``benchmarks/results/explain.json``.
"""
import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS, in_fresh_process, save_result, shared_dir  # noqa: E402
from _explain_reference import METHODS, PROJECT, reference_agreement  # noqa: E402

ABNORMAL = "PNEUMONIA"
#: test images shown in the figure, each backend's Grad-CAM beside the lesion mask
EXAMPLES = 6
#: ResNet-18's stage before the last, by backend (its map has twice the last block's side)
STAGE_BEFORE = {"pytorch": "layer3", "gluon": "features.6", "keras": "layer3_1_out"}


# ---------------------------------------------------------------------------- training
def train(backend: str, data: str, workspace: str, size: int, epochs: int, batch: int,
          reuse: bool) -> dict:
    """Train resnet18 from random weights on ``data/train`` (10% validation split)."""
    from _common import finished_experiment
    from xrayprototype import prototype

    gtf = prototype(verbose=0, workspace=workspace)
    if reuse and finished_experiment(Path(workspace), PROJECT, backend):
        gtf.Prototype(PROJECT, backend, eval_infer=True)
        return dict(gtf.experiment.state["summary"], reused=True)
    gtf.Prototype(PROJECT, backend, backend=backend)
    gtf.Default(dataset_path=f"{data}/train", model_name="resnet18", freeze_base_network=False,
                num_epochs=epochs, use_pretrained=False)
    gtf.update_input_size(size)
    gtf.update_batch_size(batch)
    gtf.optimizer_adam(1e-3)
    gtf.update_seed(0)
    gtf.update_display_progress(False)
    return gtf.Train()


# ---------------------------------------------------------------------------- randomisation
def randomise(backend_name: str, backend, part: str) -> None:
    """Re-initialise, in place, the classification head (``part="head"``) or the last block
    (``"last block"``: ResNet-18's last stage) with the framework's own initialisers."""
    if backend_name == "pytorch":
        import torch
        torch.manual_seed(1)
        for module in backend.model.get_submodule("fc" if part == "head" else "layer4").modules():
            if hasattr(module, "reset_parameters"):
                module.reset_parameters()
    elif backend_name == "gluon":
        from xrayprototype.backends.gluon._compat import import_mxnet
        mx = import_mxnet()
        mx.random.seed(1)
        block = backend.net.output if part == "head" else backend.net.features[7]
        block.collect_params().initialize(mx.init.Xavier(), ctx=backend.ctx, force_reinit=True)
    else:
        import keras
        seed = 1
        model = backend.model
        base = next(layer for layer in model.layers if isinstance(layer, keras.Model))
        layers = [model.get_layer("head")] if part == "head" else \
            [layer for layer in base.layers if layer.name.startswith("layer4_")]
        for layer in layers:
            for weight in layer.weights:            # kernel, bias, gamma, beta, moving_mean, ...
                initializer = getattr(layer, weight.name + "_initializer")
                config = initializer.get_config()
                if "seed" in config:   # a built layer's initializer repeats its first values
                    initializer = type(initializer).from_config(dict(config, seed=seed))
                    seed += 1
                weight.assign(initializer(tuple(weight.shape), dtype=weight.dtype))


# ---------------------------------------------------------------------------- measurements
def _explain(experiment, files, class_name, method, folder):
    from xrayprototype.data.sources import ImageRecords
    from xrayprototype.explain import explain_records

    records = ImageRecords(list(files), [0] * len(files), experiment.classes)
    return explain_records(experiment, records, method, class_name, folder=folder)


def fixed_point_baseline(data: Path) -> float:
    """Hit rate on the test masks of the pixel most often inside the training masks."""
    from xrayprototype.data.synthetic import read_mask

    train = [read_mask(f) for f in sorted((data / "train" / ABNORMAL).iterdir())]
    point = np.unravel_index(int(np.argmax(np.mean(train, axis=0))), train[0].shape)
    test = [read_mask(f) for f in sorted((data / "test" / ABNORMAL).iterdir())]
    return float(np.mean([mask[point] for mask in test]))


def pointing(experiment, backend_name: str, data: Path, folder: Path) -> tuple:
    """The pointing game of each method over the test images of the abnormal class, at the
    default layer (the last block) and at the stage before it (twice the map's side); and the
    first ``EXAMPLES`` Grad-CAM heatmaps of the last block, for the figure."""
    from xrayprototype.data.synthetic import read_mask
    from xrayprototype.explain import pointing_game

    files = sorted(str(f) for f in (data / "test" / ABNORMAL).iterdir())
    masks = [read_mask(f) for f in files]
    out = {}
    for which, layer in (("last block", None), ("stage before", STAGE_BEFORE[backend_name])):
        for method in METHODS:
            results = _explain_at(experiment, files, method, layer, folder / f"{which}-{method}")
            game = pointing_game([r["heatmap"] for r in results], masks)
            right = [k for k, r in enumerate(results) if r["predicted_class"] == ABNORMAL]
            game["hit_rate_correctly_classified"] = pointing_game(
                [results[k]["heatmap"] for k in right], [masks[k] for k in right])["hit_rate"] \
                if right else None
            game["layer"] = results[0]["layer"]
            if which == "last block" and method == "gradcam":
                examples = [r["heatmap"] for r in results[:EXAMPLES]]
            game["mass_in_mask"] = float(np.mean([(r["heatmap"] * m).sum() / r["heatmap"].sum()
                                                  for r, m in zip(results, masks)
                                                  if r["heatmap"].sum() > 0]))
            out.setdefault(which, {})[method] = game
    return out, examples


def _explain_at(experiment, files, method, layer, folder):
    from xrayprototype.data.sources import ImageRecords
    from xrayprototype.explain import explain_records

    records = ImageRecords(list(files), [0] * len(files), experiment.classes)
    return explain_records(experiment, records, method, ABNORMAL, layer, folder=folder)


def sanity(experiment, backend_name: str, data: Path, folder: Path) -> dict:
    """Spearman correlations with the trained maps: again, head randomised, + last block."""
    from xrayprototype.explain import rank_correlation

    def maps(name):
        heatmaps = []
        for label in experiment.classes:
            files = sorted(str(f) for f in (data / "test" / label).iterdir())
            heatmaps += [r["heatmap"] for r in _explain(experiment, files, label, "gradcam",
                                                        folder / name)]
        return heatmaps

    trained = maps("trained")
    kept = [k for k, m in enumerate(trained) if np.ptp(m) > 0]     # an empty map has no ranks
    out = {"images": len(trained), "empty_trained_maps": len(trained) - len(kept)}
    stages = [("trained_again", None), ("head", "head"), ("head+last_block", "last block")]
    for name, part in stages:
        if part:
            randomise(backend_name, experiment.backend, part)
        other = maps(name)
        values = np.array([rank_correlation(trained[k], other[k]) for k in kept] or [np.nan])
        out[name] = {"mean": float(values.mean()), "min": float(values.min()),
                     "max": float(values.max())}
    return out


def measure(backend: str, data: str, workspace: str) -> dict:
    """In a new process: open the trained experiment (eval_infer), evaluate on test, play the
    pointing game, then the sanity check (it changes the weights in memory: last)."""
    from xrayprototype import prototype

    data = Path(data)
    gtf = prototype(verbose=0, workspace=workspace)
    gtf.Prototype(PROJECT, backend, eval_infer=True)
    gtf.Dataset_Params(dataset_path=str(data / "test"))
    gtf.Dataset()
    accuracy, _ = gtf.Evaluate()
    evaluation = gtf.experiment.state["evaluation"]
    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        games, examples = pointing(gtf.experiment, backend, data, Path(tmp) / "pointing")
        seconds = time.perf_counter() - started
        checks = sanity(gtf.experiment, backend, data, Path(tmp) / "sanity")
    return {"test_accuracy": accuracy / 100.0, "test_roc_auc": evaluation.get("roc_auc"),
            "layer": gtf.experiment.backend.spatial_layers()[-1], "pointing_game": games,
            "pointing_seconds": seconds, "sanity": checks, "examples": examples}


# ---------------------------------------------------------------------------- report
def overlay_figure(data: Path, examples: dict, path: Path) -> Path:
    """The first test PNEUMONIA images with their lesion masks (top row), then each backend's
    Grad-CAM overlay with its peak marked (x: inside the mask, o: outside)."""
    from PIL import Image

    from xrayprototype.data.synthetic import read_mask
    from xrayprototype.explain import overlay, peak
    from xrayprototype.plots import _pyplot

    plt = _pyplot()
    files = sorted((data / "test" / ABNORMAL).iterdir())[:EXAMPLES]
    fig, axes = plt.subplots(1 + len(examples), len(files), squeeze=False,
                             figsize=(1.9 * len(files), 2.0 * (1 + len(examples))))
    for column, image_file in enumerate(files):
        image = np.asarray(Image.open(image_file).convert("RGB"))
        mask = read_mask(image_file)
        axes[0, column].imshow(image)
        axes[0, column].contour(mask, levels=[0.5], colors="red", linewidths=1)
        for row, (backend, heatmaps) in enumerate(examples.items(), start=1):
            axes[row, column].imshow(overlay(image, heatmaps[column]))
            y, x = peak(heatmaps[column])
            axes[row, column].plot(x, y, "wx" if mask[y, x] else "wo", markersize=8,
                                   markeredgewidth=2, fillstyle="none")
    for axis in axes.ravel():
        axis.set_xticks([])
        axis.set_yticks([])
    for row, label in enumerate(["lesion mask"] + list(examples)):
        axes[row, 0].set_ylabel(label)
    fig.suptitle("Grad-CAM of PNEUMONIA at the last block; peak: x inside the lesion, o outside",
                 fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=72)
    plt.close(fig)
    return path


def print_report(result: dict) -> None:
    print("\n(a) pointing game, test PNEUMONIA images explained for PNEUMONIA (fixed point "
          f"baseline {result['fixed_point_hit_rate']:.3f})")
    print(f"{'backend':8} {'acc':>6} {'layer':14} {'method':10} {'hits':>9} {'rate':>6} "
          f"{'random pt':>9} {'mass in mask':>12}")
    for name, row in result["backends"].items():
        for which, games in row["pointing_game"].items():
            for method, game in games.items():
                print(f"{name:8} {row['test_accuracy']:6.3f} {game['layer']:14} {method:10} "
                      f"{game['hits']:>4}/{game['num_images']:<4} {game['hit_rate']:6.3f} "
                      f"{game['random_point_rate']:9.3f} {game['mass_in_mask']:12.3f}")
    print("\n(c) sanity check: Spearman with the trained maps (mean [min, max])")
    for name, row in result["backends"].items():
        parts = [f"{k} {v['mean']:.3f} [{v['min']:.2f}, {v['max']:.2f}]"
                 for k, v in row["sanity"].items() if isinstance(v, dict)]
        print(f"{name:8} " + "; ".join(parts) + f" (empty trained maps "
              f"{row['sanity']['empty_trained_maps']}/{row['sanity']['images']})")
    if result.get("reference"):
        print("\n(b) core vs pytorch-grad-cam, ResNet-18 layer4, " + result["reference"]["data"])
        for row in result["reference"]["rows"]:
            for method in METHODS + ("gradcam++ with the reference's eps",):
                figures = row[method]
                print(f"{row['weights'][:30]:30} {row['input_size']:4} px {method:36} max |diff| "
                      f"{figures['max_abs_difference']:.2e}  min Spearman "
                      f"{figures['min_rank_correlation']:.4f}")


def settings(args, data: Path) -> dict:
    """The run's command, data, recipe and the fixed-point baseline (the result's header)."""
    from xrayprototype.data.synthetic import MASK_FRACTION

    return {"command": command_line(),
            "data": f"synthetic NORMAL / PNEUMONIA, {args.size} px, seed 0: "
                    f"{args.train_per_class} train + {args.test_per_class} test per class; "
                    f"masks at {MASK_FRACTION} of the drawn opacity's maximum",
            "model": "resnet18 from random weights, whole network", "epochs": args.epochs,
            "batch_size": args.batch_size, "optimizer": "adam 1e-3", "input_size": args.size,
            "cores": os.cpu_count(), "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
            "fixed_point_hit_rate": fixed_point_baseline(data), "backends": {}}


def command_line() -> str:
    """This run's command, less where it kept its files (--workspace, --reuse)."""
    argv, kept = sys.argv[1:], []
    while argv:
        argument = argv.pop(0)
        if argument == "--workspace":
            argv.pop(0)
        elif argument != "--reuse" and not argument.startswith("--workspace="):
            kept.append(argument)
    return " ".join(["OMP_NUM_THREADS=1 python benchmarks/bench_explain.py"] + kept)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backends", nargs="+", default=["pytorch", "gluon", "keras"])
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--train-per-class", type=int, default=200)
    parser.add_argument("--test-per-class", type=int, default=100)
    parser.add_argument("--workspace", default=None, help="keep the data and experiments here")
    parser.add_argument("--reuse", action="store_true",
                        help="with --workspace: reuse finished training runs there")
    parser.add_argument("--name", default="explain", help="results file stem")
    parser.add_argument("--no-reference", dest="reference", action="store_false",
                        help="skip (b), the comparison with pytorch-grad-cam")
    args = parser.parse_args()
    from xrayprototype.backend import is_installed
    from xrayprototype.data.synthetic import make_synthetic_chest_xrays

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(args.workspace or tmp).resolve()
        data = make_synthetic_chest_xrays(root / "data", args.train_per_class,
                                          args.test_per_class, image_size=args.size, seed=0,
                                          write_masks=True)
        workspace = str(root / "ws")
        result, examples = settings(args, data), {}
        for backend in args.backends:
            if not is_installed(backend):
                print(f"{backend}: not installed, skipped")
                continue
            started = time.perf_counter()
            summary = in_fresh_process(train, backend, str(data), workspace, args.size,
                                       args.epochs, args.batch_size, args.reuse)
            wall = time.perf_counter() - started
            row = in_fresh_process(measure, backend, str(data), workspace)
            examples[backend] = row.pop("examples")
            row.update(train_seconds=summary.get("train_time_s"),
                       best_val_accuracy=summary.get("best_val_accuracy"))
            if not summary.get("reused"):          # the process's wall time, start included
                row["train_wall_seconds"] = wall
            result["backends"][backend] = row
            print(f"{backend}: trained in {summary.get('train_time_s', 0):.0f} s, test accuracy "
                  f"{row['test_accuracy']:.3f}", flush=True)
        if examples:
            result["figure"] = str(overlay_figure(data, examples, RESULTS / f"{args.name}.png")
                                   .relative_to(RESULTS.parent.parent))
        if args.reference and shared_dir() is not None and is_installed("pytorch"):
            result["reference"] = in_fresh_process(reference_agreement, workspace, args.size)
    print_report(result)
    print(f"saved {save_result(args.name, result)}")


if __name__ == "__main__":
    main()
