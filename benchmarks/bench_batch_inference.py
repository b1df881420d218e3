"""Streaming batch inference (``Infer(img_dir=, recursive=True, output_csv=)``): throughput
against the backend's own batched predict, and peak memory as the folder grows.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_batch_inference.py \\
        [--backend pytorch] [--model resnet18] [--size 64] [--sizes 250 1000 4000] \\
        [--ratio-images 1000] [--repeats 3]

(OMP_NUM_THREADS=1 on a small shared machine: there, OpenMP threads waiting for each other
make every prediction several times slower and the figures noisy.)

A small experiment is trained for one epoch on the embedded synthetic data (random
initialisation, nothing downloaded; accuracy is not the point), then reopened with
``eval_infer=True``. Real Kermany images (../shared, linked, never copied) are laid out in a
nested tree (``<block>/<class>/<file>``, 500 files per block); without ../shared the synthetic
test images are linked repeatedly.

- ``ratio``: images/s of ``Infer(img_dir=..., recursive=True, output_csv=...)`` (walk, decode,
  predict, one CSV row per image, flushed per chunk) over images/s of the backend's own
  batched predict on the same files decoded the same way, with no CSV
  (``experiment.predict_records``: one loader over all files + ``backend.predict``), both in
  the same process, alternated ``--repeats`` times after a warm-up; the median of the
  per-pair ratios (target >= 0.9).
- ``growth_mb``: in a fresh process that opens the experiment and predicts one image, how
  much the resident memory rises (sampled every 20 ms) while it streams a folder of N images
  into a CSV, for each N of ``--sizes``; beside it the same for the list-returning
  ``Infer(img_dir=..., recursive=True)`` (which holds every result and decoded image).

Figures are saved in ``benchmarks/results/batch_inference.json``.
"""
import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import save_result, shared_dir  # noqa: E402

PROJECT, BLOCK = "BatchInference", 500


def train(root: Path, backend: str, model: str, size: int) -> Path:
    from xrayprototype import prototype
    from xrayprototype.data.synthetic import make_synthetic_chest_xrays

    data = make_synthetic_chest_xrays(root / "data", num_train_per_class=24,
                                      num_test_per_class=8, image_size=size, seed=0)
    workspace = root / "ws"
    gtf = prototype(verbose=0, workspace=workspace)
    gtf.Prototype(PROJECT, model, backend=backend)
    gtf.Default(dataset_path=str(data / "train"), model_name=model, num_epochs=1,
                use_pretrained=False, input_size=size, batch_size=32)
    gtf.Train()
    return workspace


def source_images(root: Path, count: int):
    """``count`` image paths: the Kermany train + test images, else synthetic ones, cycled."""
    shared = shared_dir()
    if shared is not None:
        pool = sorted((shared / "data" / "kermany-224").rglob("*.jpeg"))
        kind = "kermany-224 (real, 224 px JPEG)"
    else:
        pool = sorted((root / "data").rglob("*.jpeg"))
        kind = "synthetic (no ../shared)"
    return [pool[k % len(pool)] for k in range(count)], kind


def link_tree(folder: Path, images) -> Path:
    """Symlink ``images`` into ``folder/<block>/<class>/`` (500 per block)."""
    for k, image in enumerate(images):
        target = folder / f"block{k // BLOCK:03d}" / image.parent.name
        target.mkdir(parents=True, exist_ok=True)
        (target / f"{k:05d}_{image.name}").symlink_to(image)
    return folder


def child(args) -> None:
    """One fresh process: stream (or list) a folder; print images/s, the resident memory once
    the model is loaded and one image predicted, and its peak during the call."""
    from xrayprototype import prototype
    from xrayprototype.evaluation import walk_images

    gtf = prototype(verbose=0, workspace=args.workspace)
    gtf.Prototype(PROJECT, args.model, eval_infer=True)
    gtf.Infer(img_name=str(next(walk_images(Path(args.folder), recursive=True))))  # model in
    sampler = RssSampler()
    started = time.perf_counter()
    with sampler:
        if args.mode == "csv":
            count = gtf.Infer(img_dir=args.folder, recursive=True, output_csv=str(
                Path(args.folder).parent / "out.csv"))["num_images"]
        else:
            count = len(gtf.Infer(img_dir=args.folder, recursive=True))
    seconds = time.perf_counter() - started
    print(json.dumps({"images": count, "seconds": seconds, "images_per_s": count / seconds,
                      "rss_before_mb": sampler.before, "peak_rss_mb": sampler.peak,
                      "growth_mb": sampler.peak - sampler.before,
                      "process_peak_rss_mb": resource.getrusage(
                          resource.RUSAGE_SELF).ru_maxrss / 1024.0}))


class RssSampler:
    """The resident memory when entered and its maximum until exit, sampled every 20 ms (the
    process's own peak, ``ru_maxrss``, is set earlier by the framework's import and model
    load, and so hides what the call adds)."""

    def __enter__(self):
        import psutil

        self._process, self._stop = psutil.Process(), threading.Event()
        self.before = self.peak = self._rss()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _rss(self) -> float:
        return self._process.memory_info().rss / 1024.0 ** 2

    def _sample(self):
        while not self._stop.wait(0.02):
            self.peak = max(self.peak, self._rss())

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._rss())


def in_child(args, folder: Path, mode: str) -> dict:
    command = [sys.executable, __file__, "--child", "--mode", mode, "--folder", str(folder),
               "--workspace", str(args.workspace), "--model", args.model]
    done = subprocess.run(command, capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def throughput_ratio(workspace: Path, model: str, folder: Path, repeats: int) -> dict:
    """Median over alternated pairs of (streamed images/s) / (backend's batched images/s)."""
    from xrayprototype import prototype
    from xrayprototype.data import ImageRecords
    from xrayprototype.evaluation import walk_images

    gtf = prototype(verbose=0, workspace=workspace)
    gtf.Prototype(PROJECT, model, eval_infer=True)
    experiment = gtf.experiment.ready_for_prediction()
    files = [str(p) for p in walk_images(folder, recursive=True)]

    def reference() -> float:
        started = time.perf_counter()
        records = ImageRecords(files, [0] * len(files), experiment.classes)
        probabilities, _, _ = experiment.predict_records("infer", records, on_corrupt="skip")
        experiment.stores.drop("infer")
        assert len(probabilities) == len(files)
        return len(files) / (time.perf_counter() - started)

    def streamed() -> float:
        summary = gtf.Infer(img_dir=str(folder), recursive=True,
                            output_csv=str(folder.parent / "ratio.csv"))
        assert summary["num_predicted"] == len(files)
        return summary["images_per_s"]

    reference(), streamed()                                          # warm-up: file cache
    pairs = []
    for _ in range(repeats):
        pairs.append((reference(), streamed()))
    ratios = [s / r for r, s in pairs]
    return {"images": len(files), "reference_images_per_s": [r for r, _ in pairs],
            "streamed_images_per_s": [s for _, s in pairs], "ratios": ratios,
            "ratio": statistics.median(ratios), "batch_size": experiment.batch_size}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", default="pytorch")
    parser.add_argument("--model", default="resnet18")
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--sizes", type=int, nargs="+", default=[250, 1000, 4000])
    parser.add_argument("--ratio-images", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--mode", default="csv", help=argparse.SUPPRESS)
    parser.add_argument("--folder", help=argparse.SUPPRESS)
    parser.add_argument("--workspace", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(args)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        args.workspace = train(root, args.backend, args.model, args.size)
        images, kind = source_images(root, max(args.sizes + [args.ratio_images]))
        folder = link_tree(root / "ratio" / "images", images[:args.ratio_images])
        ratio = throughput_ratio(args.workspace, args.model, folder, args.repeats)
        print(f"{args.backend} {args.model} {args.size}px, {ratio['images']} images: streamed "
              f"to CSV / backend batched predict = {ratio['ratio']:.3f} "
              f"(pairs {[round(r, 3) for r in ratio['ratios']]}; target >= 0.9)", flush=True)
        memory = []
        for count in args.sizes:
            tree = link_tree(root / f"tree{count}" / "images", images[:count])
            row = {"images": count, "csv": in_child(args, tree, "csv"),
                   "list": in_child(args, tree, "list")}
            memory.append(row)
            print(f"{count:6d} images: streamed to CSV peak RSS {row['csv']['peak_rss_mb']:.0f} "
                  f"MB (+{row['csv']['growth_mb']:.1f} MB over the loaded model, "
                  f"{row['csv']['images_per_s']:.0f} images/s); list Infer peak RSS "
                  f"{row['list']['peak_rss_mb']:.0f} MB (+{row['list']['growth_mb']:.1f} MB)",
                  flush=True)
    path = save_result("batch_inference", {
        "backend": args.backend, "model": args.model, "input_size": args.size,
        "images": kind, "throughput": ratio, "target_ratio": 0.9, "memory": memory,
        "command": " ".join(["benchmarks/bench_batch_inference.py"] + sys.argv[1:])})
    print(f"saved {path}")


if __name__ == "__main__":
    main()
