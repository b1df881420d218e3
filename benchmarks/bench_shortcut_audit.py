"""Shortcut audit benchmark: can the label of each shared data set be predicted without looking
at the lungs?

    OMP_NUM_THREADS=1 python benchmarks/bench_shortcut_audit.py [--seed 0] [--per-class 200]
        [--only kermany-224-train,mixed-covid-kermany] [--edge 8]

Runs ``xrayprototype.audit.audit_records`` (metadata-only features, a cross-validated
HistGradientBoosting classifier, out-of-fold ROC-AUC with a stratified bootstrap 95% interval,
permutation importance, AUC of each feature group) on:

- ``kermany-224-train``: the Kermany train split at 224 px (folder; patients from file names);
- ``pneumoniamnist-28``: PneumoniaMNIST's train + val rows (npz; no files: border statistics
  only);
- ``covid-ieee8023``: the permissive ieee8023 subset, labels COVID-19 / normal / other from its
  ``labels.csv`` (column ``label``; ``finding`` is the diagnosis text), patients from
  ``patientid`` (read through a CSV written to a temporary folder);
- ``mixed-covid-kermany``: the subset's COVID-19 images with ``--per-class`` Kermany NORMAL and
  PNEUMONIA training images (seeded sample), linked into a temporary folder of class folders;
  this is the merge a new user made, and the audit must flag it;
- ``covid-vs-kermany-normal``: the subset's COVID-19 images against as many Kermany NORMAL
  images (the two-class "COVID-19 vs normal" study).

Nothing is copied into the repository: temporary folders hold symlinks. Needs ../shared (skips
with a message otherwise). Prints a table and writes ``benchmarks/results/shortcut_audit.json``,
``shortcut_audit.png`` (AUC with interval per data set) and ``shortcut_audit-<name>.png`` (the
audit's own figure per data set). ``--edge N`` reads the border statistics from strips N pixels
wide on the 64-pixel thumbnail instead of 8 (a control: at 2, the outermost 3% of the image,
no lung can be in them); its results get the suffix ``-edgeN``.
"""
import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS, save_result, shared_dir  # noqa: E402

PATIENT_PATTERN = r"(person\d+|patient\d+)_"     # Kermany's personN_, the links' patientN_


def kermany(shared: Path, args):
    from xrayprototype.data import scan_class_folders

    return scan_class_folders(shared / "data/kermany-224/train", group_pattern=PATIENT_PATTERN)


def pneumoniamnist(shared: Path, args):
    from xrayprototype.data import read_npz_split

    npz = shared / "data/pneumoniamnist/pneumoniamnist_28.npz"
    train, val = read_npz_split(f"{npz}:train"), read_npz_split(f"{npz}:val")
    records = train.concatenate(val)
    records.origin = f"{npz.name} train + val"
    return records


def covid_table(shared: Path):
    import pandas as pd

    return pd.read_csv(shared / "data/covid-ieee8023-permissive/labels.csv", dtype=str)


def covid(shared: Path, args, work: Path):
    """The subset as labels.csv says: file, label (not finding), patient."""
    from xrayprototype.data.sources import read_csv_labels

    table = covid_table(shared)[["filename", "label", "patientid"]]
    csv = work / "covid_labels.csv"
    table.to_csv(csv, index=False)
    return read_csv_labels(csv, shared / "data/covid-ieee8023-permissive",
                           group_column="patientid")


def _link(source: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    if not target.exists():
        target.symlink_to(source)


def mixed(shared: Path, args, work: Path, classes=("NORMAL", "PNEUMONIA"), name="mixed",
          count=None):
    """COVID-19 images of the subset (named ``patientN_...`` for grouping) beside a seeded
    sample of Kermany training images, as class folders of symlinks under ``work``."""
    from xrayprototype.data import scan_class_folders

    root, covid_dir = work / name, shared / "data/covid-ieee8023-permissive"
    table = covid_table(shared)
    table = table[table["label"] == "COVID-19"]
    for file, patient in zip(table["filename"], table["patientid"]):
        _link(covid_dir / file, root / "COVID-19" / f"patient{patient}_{Path(file).name}")
    rng = np.random.default_rng(args.seed)
    for name_ in classes:
        files = sorted((shared / "data/kermany-224/train" / name_).iterdir())
        for index in sorted(rng.choice(len(files), count or args.per_class, replace=False)):
            _link(files[index], root / name_ / files[index].name)
    return scan_class_folders(root, group_pattern=PATIENT_PATTERN)


DATASETS = {
    "kermany-224-train": lambda shared, args, work: kermany(shared, args),
    "pneumoniamnist-28": lambda shared, args, work: pneumoniamnist(shared, args),
    "covid-ieee8023": covid,
    "mixed-covid-kermany": mixed,
    "covid-vs-kermany-normal": lambda shared, args, work: mixed(
        shared, args, work, ("NORMAL",), "covid_vs_normal", count=90),
}


def row_of(name: str, result: dict, seconds: float) -> dict:
    auc = result["auc"]
    return {"dataset": name, "images": result["num_images"], "classes": result["class_counts"],
            "auc_of": result["auc_of"], "auc": auc["estimate"], "interval": auc["interval"],
            "warning": result["warning"], "leaking_group": result["leaking_group"],
            "group_auc": result["group_auc"], "cv": result["cv"],
            "top_features": [(r["feature"], round(r["share"], 2))
                             for r in result["top_features"][:3]], "seconds": round(seconds, 1)}


def markdown_table(rows: list) -> str:
    lines = ["| data set | images | metadata-only ROC-AUC [95% CI] | group AUC size/format, "
             "border | warning | top features (share of importance) |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        groups = ", ".join("-" if r["group_auc"][g] is None else f"{r['group_auc'][g]:.2f}"
                           for g in ("size/format", "border"))
        features = ", ".join(f"{f} {100 * s:.0f}%" for f, s in r["top_features"]) or "-"
        lines.append(f"| {r['dataset']} | {r['images']} | {r['auc']:.3f} [{r['interval'][0]:.3f}"
                     f", {r['interval'][1]:.3f}] ({r['auc_of']}) | {groups} | "
                     f"{'**yes** (' + r['leaking_group'] + ')' if r['warning'] else 'no'} | "
                     f"{features} |")
    return "\n".join(lines)


def summary_figure(rows: list, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from xrayprototype.audit import WARNING_AUC

    fig, axis = plt.subplots(figsize=(7, 0.6 * len(rows) + 1.2))
    for y, r in enumerate(rows):
        low, high = r["interval"]
        axis.errorbar(r["auc"], y, xerr=[[r["auc"] - low], [high - r["auc"]]], fmt="o",
                      color="tab:red" if r["warning"] else "tab:green", capsize=4)
    axis.axvline(WARNING_AUC, ls="--", color="grey", label=f"warning at {WARNING_AUC:.2f}")
    axis.axvline(0.5, ls=":", color="grey", label="chance")
    axis.set_yticks(range(len(rows)), [r["dataset"] for r in rows])
    axis.set_xlim(0.3, 1.02)
    axis.set_xlabel("out-of-fold ROC-AUC from metadata alone (95% stratified bootstrap CI)")
    axis.legend(loc="lower left", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--per-class", type=int, default=200,
                        help="Kermany NORMAL / PNEUMONIA images in the mixed set")
    parser.add_argument("--only", default=",".join(DATASETS))
    parser.add_argument("--edge", type=int, default=None,
                        help="border strip width on the 64 px thumbnail (default 8)")
    args = parser.parse_args()
    shared = shared_dir()
    if shared is None:
        print("skipped: ../shared not present (set XRAYPROTOTYPE_SHARED to the folder holding "
              "data/)")
        return 0
    from xrayprototype.audit import audit_records
    from xrayprototype.audit_features import EDGE, record_features
    from xrayprototype.audit_report import plot_audit, report_lines

    RESULTS.mkdir(parents=True, exist_ok=True)
    edge = args.edge or EDGE
    suffix = "" if edge == EDGE else f"-edge{edge}"
    rows = []
    with tempfile.TemporaryDirectory(prefix="shortcut-audit-") as work:
        for name in args.only.split(","):
            started = time.perf_counter()
            records = DATASETS[name](shared, args, Path(work))
            result, table = audit_records(records, seed=args.seed,
                                          table=record_features(records, edge))
            print(f"\n== {name}", *report_lines(result), sep="\n", flush=True)
            plot_audit(result, table, RESULTS / f"shortcut_audit{suffix}-{name}.png")
            rows.append(row_of(name, result, time.perf_counter() - started))
    summary_figure(rows, RESULTS / f"shortcut_audit{suffix}.png")
    print("\n" + markdown_table(rows))
    payload = {"seed": args.seed, "edge_px_of_64": edge, "kermany_per_class": args.per_class,
               "rows": rows}
    print(f"\nsaved {save_result('shortcut_audit' + suffix, payload)}")
    mixed_row = next((r for r in rows if r["dataset"] == "mixed-covid-kermany"), None)
    if mixed_row is not None and not mixed_row["warning"]:
        print("FAILED: the mixed COVID / Kermany set was not flagged")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
