"""Single-image ``Infer`` time against the model's own batch-of-1 latency, per backend.

    .venv/bin/python benchmarks/bench_infer_latency.py [--backends pytorch gluon keras]
        [--model resnet18] [--size 64] [--repeats 30] [--label after]

For each backend: a small experiment is trained for one epoch on the embedded synthetic data
(random initialisation, nothing downloaded), reopened with ``eval_infer=True`` as a new session
would, and then, in the same process and on the same image files:

- ``infer_ms``: the median wall time of ``gtf.Infer(img_name=...)`` (decode, resize,
  normalise, predict, result dict), over ``--repeats`` calls after 3 warm-up calls;
- ``model_ms``: the median wall time of the backend's own ``predict`` on one preprocessed
  image already in memory (batch of 1), measured the same way, right after;
- ``ratio = infer_ms / model_ms`` (target <= 1.5): what the library adds around the model.

Figures are saved in ``benchmarks/results/infer_latency-<label>.json``.
"""
import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import save_result  # noqa: E402


def _median_ms(call, repeats: int) -> float:
    for _ in range(3):
        call()
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        call()
        times.append(time.perf_counter() - started)
    return 1000.0 * statistics.median(times)


def measure(backend: str, model: str, size: int, repeats: int, root: Path) -> dict:
    from xrayprototype import prototype
    from xrayprototype.data.synthetic import make_synthetic_chest_xrays

    data = make_synthetic_chest_xrays(root / "data", num_train_per_class=24,
                                      num_test_per_class=8, image_size=size, seed=0)
    workspace = root / "ws"
    gtf = prototype(verbose=0, workspace=workspace)
    gtf.Prototype("InferLatency", f"{backend}-{model}", backend=backend)
    gtf.Default(dataset_path=str(data / "train"), model_name=model, num_epochs=1,
                use_pretrained=False, input_size=size, batch_size=8)
    gtf.Train()

    gtf = prototype(verbose=0, workspace=workspace)
    gtf.Prototype("InferLatency", f"{backend}-{model}", eval_infer=True)
    files = sorted(str(p) for p in (data / "test").rglob("*.jpeg"))
    cycle = iter(files * (repeats + 10))
    infer_ms = _median_ms(lambda: gtf.Infer(img_name=next(cycle)), repeats)

    experiment = gtf.experiment
    layout = experiment.backend.capabilities().layout
    shape = (1, 3, size, size) if layout == "NCHW" else (1, size, size, 3)
    image = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    model_ms = _median_ms(lambda: experiment.backend.predict(image), repeats)
    return {"backend": backend, "model": model, "input_size": size, "repeats": repeats,
            "infer_ms": infer_ms, "model_ms": model_ms, "ratio": infer_ms / model_ms}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backends", nargs="+", default=["pytorch", "gluon", "keras"])
    parser.add_argument("--model", default="resnet18")
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--label", default="current", help="names the results file")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for backend in args.backends:
            row = measure(backend, args.model, args.size, args.repeats, Path(tmp) / backend)
            rows.append(row)
            print(f"{backend:8s} {args.model} {args.size}px: Infer {row['infer_ms']:7.2f} ms, "
                  f"model batch-of-1 {row['model_ms']:7.2f} ms, ratio {row['ratio']:.2f} "
                  f"(target <= 1.5)", flush=True)
    path = save_result(f"infer_latency-{args.label}", {"rows": rows, "target_ratio": 1.5})
    print(f"saved {path}")


if __name__ == "__main__":
    main()
