"""Wall time of 4 small experiments run one after another in this process against the same 4
as tasks on a local Ray (one CPU each), in one run.

    .venv/bin/python benchmarks/bench_ray.py [--experiments 4] [--size 64] [--epochs 2]

The experiments come from ``Analyse_Learning_Rates`` on the embedded synthetic data set, so
both executors train exactly the same experiments (seeded subset, seeded training); the figure
compared is the wall time of the whole call. The first Ray call includes Ray's start-up and a
framework import in each worker; the second call (same process, as in a notebook) finds the
local Ray and its workers still up.
"""
import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import save_result  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--experiments", type=int, default=4)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=2)
    args = parser.parse_args()
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    from xrayprototype import prototype
    from xrayprototype.demo import make_demo_data

    rates = [10 ** -(2 + k / 2) for k in range(args.experiments)]
    with tempfile.TemporaryDirectory() as workspace:
        data = make_demo_data(workspace)
        gtf = prototype(verbose=0, workspace=workspace)
        gtf.Prototype("Bench", "base")
        gtf.Default(dataset_path=str(data / "train"), model_name="resnet18",
                    freeze_base_network=False, num_epochs=args.epochs, use_pretrained=False)
        gtf.update_input_size(args.size)
        seconds, tables = {}, {}
        for run in ("sequential", "ray", "ray-warm"):
            started = time.perf_counter()
            tables[run] = gtf.Analyse_Learning_Rates(
                f"lr-{run}", rates, percent_data=100, num_epochs=args.epochs,
                executor=run.split("-")[0])
            seconds[run] = time.perf_counter() - started
            failed = tables[run]["error"].notna().sum()
            print(f"{run:>10}: {seconds[run]:6.1f} s for {len(rates)} experiments "
                  f"({failed} failed)", flush=True)
    ratios = {run: seconds[run] / seconds["sequential"] for run in ("ray", "ray-warm")}
    print(f"ray / sequential wall time: {ratios['ray']:.3f} first call, {ratios['ray-warm']:.3f} "
          f"with Ray already up ({os.cpu_count()} cores)")
    path = save_result("ray", {"command": "python benchmarks/bench_ray.py " + " ".join(sys.argv[1:]),
                               "experiments": len(rates), "input_size": args.size,
                               "epochs": args.epochs, "cores": os.cpu_count(),
                               "seconds": seconds, "ratio_ray_to_sequential": ratios["ray"],
                               "ratio_warm_ray_to_sequential": ratios["ray-warm"]})
    print(f"saved {path}")


if __name__ == "__main__":
    main()
