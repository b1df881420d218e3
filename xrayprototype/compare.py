"""``compare``: side-by-side statistics of saved experiments (any backends, sizes, classes).

It reads only what experiments saved (``experiment.json`` and ``logs/metrics.jsonl``) and never
runs a model. Everything lands in ``<workspace>/comparison/<name>/``: one PNG per figure,
``comparison.csv`` and an offline ``summary.html`` with the table and the plots embedded.

Example:
    >>> from xrayprototype import compare
    >>> ctf = compare(verbose=1)
    >>> ctf.Comparison("Backbones")
    >>> ctf.Add_Experiment("Pneumonia", "resnet18")
    >>> ctf.Add_Experiment("Pneumonia", "densenet121")
    >>> table = ctf.Generate_Statistics()
"""
import base64
import html
import json
import warnings
from pathlib import Path
from typing import Dict, List, Union

from .errors import ExperimentError
from .experiment import Experiment
from .state import read_metrics
from .workspace import ExperimentPaths, NamedCollection, comparison_dir

#: (column, axis label, scale) of the bar charts, drawn when at least one experiment has a value
BAR_CHARTS = [
    ("best_val_accuracy", "best validation accuracy", 1.0),
    ("test_accuracy", "test accuracy", 1.0),
    ("test_roc_auc", "test ROC-AUC", 1.0),
    ("test_ece", "test ECE (top-label confidence, binned)", 1.0),
    ("train_time_s", "training time (s)", 1.0),
    ("seconds_per_epoch", "time per epoch (s)", 1.0),
    ("peak_cpu_memory_mb", "peak CPU memory (MiB)", 1.0),
    ("peak_gpu_memory_mb", "peak GPU memory (MiB)", 1.0),
    ("num_parameters", "parameters (millions)", 1e-6),
    ("eval_ms_per_image", "evaluation time per image (ms)", 1.0),
    ("latency_ms_per_image", "inference latency, batch of 1 (ms per image)", 1.0),
]
#: the charts Monk's compare wrote, under Monk's file names: always written (a figure no
#: experiment measured, such as GPU memory on a CPU-only machine, is drawn as 0 and the
#: title says so), so Monk notebooks that display them find them
MONK_CHART_FILES = {"best_val_accuracy": "stats_best_val_acc",
                    "train_time_s": "stats_training_time",
                    "peak_gpu_memory_mb": "stats_max_gpu_usage"}
#: bar charts drawn with an interval: column -> (low column, high column)
ERROR_BARS = {"test_roc_auc": ("test_roc_auc_low", "test_roc_auc_high")}
CURVES = [("train", "accuracy"), ("val", "accuracy"), ("train", "loss"), ("val", "loss")]


def experiment_row(paths: ExperimentPaths) -> Dict:
    """One table row from a saved experiment; a missing figure is None, never an error."""
    state = Experiment.open(paths, "read").state
    config, summary = state.get("config", {}), state.get("summary", {})
    evaluation, model = state.get("evaluation", {}), state.get("model", {})
    mib = 1024 * 1024
    row = {
        "project": paths.project, "experiment": paths.experiment,
        "backend": state.get("backend"), "model": config.get("model", {}).get("model_name"),
        "status": state.get("status"), "classes": ",".join(state.get("classes", [])),
        "status_reason": (state.get("training") or {}).get("stopped_because")
        if state.get("status") in ("failed", "interrupted") else None,
        "input_size": config.get("data", {}).get("input_size"),
        "batch_size": config.get("data", {}).get("batch_size"),
        "optimizer": config.get("optim", {}).get("optimizer"),
        "learning_rate": config.get("optim", {}).get("learning_rate"),
        "num_train": state.get("dataset", {}).get("num_train"),
        "epochs": summary.get("epochs_completed"), "best_epoch": summary.get("best_epoch"),
        "best_val_accuracy": summary.get("best_val_accuracy"),
        "best_val_loss": summary.get("best_val_loss"),
        "best_val_roc_auc": summary.get("best_val_roc_auc"),
        "final_train_accuracy": summary.get("final_train_accuracy"),
        "train_time_s": summary.get("train_time_s"),
        "seconds_per_epoch": summary.get("seconds_per_epoch"),
        "train_images_per_s": summary.get("train_images_per_s"),
        "peak_cpu_memory_mb": summary["peak_rss_bytes"] / mib if summary.get("peak_rss_bytes") else None,
        "peak_gpu_memory_mb": summary["peak_gpu_bytes"] / mib if summary.get("peak_gpu_bytes") else None,
        "num_parameters": model.get("num_parameters"),
        "trainable_parameters": model.get("trainable_parameters"),
        "test_accuracy": evaluation.get("accuracy"), "test_roc_auc": evaluation.get("roc_auc"),
        "test_pr_auc": evaluation.get("pr_auc"), "test_images": evaluation.get("num_images"),
        "test_decision_rule": evaluation.get("decision_rule"), "test_tta": evaluation.get("tta"),
        "eval_ms_per_image": 1000 * evaluation["seconds"] / evaluation["num_images"]
        if evaluation.get("seconds") and evaluation.get("num_images") else None,
        "latency_ms_per_image": model.get("latency_ms_per_image"),
    }
    row.update(_uncertainty_columns(evaluation))
    for name, figures in (evaluation.get("per_class") or {}).items():
        row[f"test_recall_{name}"] = figures.get("recall")
    return row


def _uncertainty_columns(evaluation: Dict) -> Dict:
    """ECE, Brier, temperature and the ROC-AUC interval of a saved evaluation; None where an
    older evaluation lacks them."""
    calibration = evaluation.get("calibration") or {}
    interval = ((evaluation.get("intervals") or {}).get("roc_auc") or {}).get("interval") \
        or [None, None]
    strategy = calibration.get("strategy")
    return {"test_ece": calibration.get("ece"), "test_brier": calibration.get("brier"),
            "test_ece_bins": f"{calibration['bins']} {strategy}" if strategy else None,
            "test_temperature": calibration.get("temperature"),
            "test_roc_auc_low": interval[0], "test_roc_auc_high": interval[1]}


class compare(NamedCollection):  # noqa: N801  (Monk's spelling is the public API)
    """Collect experiments under a comparison name and generate their statistics."""
    kind, opening_verb, folder_of = "comparison", "Comparison", staticmethod(comparison_dir)

    def __init__(self, verbose: int = 1, workspace: Union[None, str, Path] = None):
        super().__init__(verbose, workspace)
        self.experiments: List[List[str]] = []

    def Comparison(self, comparison_name: str) -> None:
        """Create or reopen ``comparison/<comparison_name>`` (its experiment list is kept).

        Args:
            comparison_name: the comparison's folder under ``<workspace>/comparison/``.

        Example:
            >>> ctf = compare(verbose=1)
            >>> ctf.Comparison("Backbones")
        """
        self.name = comparison_name
        listing = self.folder / "comparison.json"
        self.experiments = json.loads(listing.read_text())["experiments"] if listing.exists() else []
        self._say(f"comparison {comparison_name} at {self.folder} "
                  f"({len(self.experiments)} experiments)")

    def Add_Experiment(self, project_name: str, experiment_name: str) -> None:
        """Add a saved experiment; it must exist (it need not have finished training). The
        list is saved in ``comparison.json``; adding an experiment twice changes nothing.

        Args:
            project_name: the experiment's project, e.g. "Pneumonia".
            experiment_name: the experiment's name, e.g. "resnet18".

        Example:
            >>> ctf.Add_Experiment("Pneumonia", "resnet18")
            >>> ctf.Add_Experiment("Pneumonia", "densenet121")
        """
        self._saved_experiment(project_name, experiment_name)
        if [project_name, experiment_name] not in self.experiments:
            self.experiments.append([project_name, experiment_name])
        self.folder.mkdir(parents=True, exist_ok=True)
        (self.folder / "comparison.json").write_text(
            json.dumps({"name": self.name, "experiments": self.experiments}, indent=2))

    def Generate_Statistics(self):
        """Write the plots (training and validation accuracy and loss per epoch, one bar
        chart per figure some experiment has), ``comparison.csv`` and ``summary.html``.
        Monk's three charts keep Monk's file names and are always written:
        ``stats_best_val_acc.png``, ``stats_training_time.png``, ``stats_max_gpu_usage.png``.

        Returns:
            A pandas DataFrame, one row per experiment in the order added: project,
            experiment, backend, model, status, status_reason (why a failed or interrupted
            run stopped, and how to continue it), classes, input_size, batch_size, optimizer,
            learning_rate, num_train, epochs, best_epoch, best_val_accuracy, best_val_loss,
            best_val_roc_auc, final_train_accuracy, train_time_s, seconds_per_epoch,
            train_images_per_s, peak_cpu_memory_mb, peak_gpu_memory_mb, num_parameters,
            trainable_parameters, the last evaluation's test_accuracy, test_roc_auc,
            test_pr_auc, test_images, test_decision_rule, test_tta, test_ece (top-label,
            binned as test_ece_bins says), test_brier, test_temperature, test_roc_auc_low and
            test_roc_auc_high (its 95% bootstrap interval) and test_recall_<class>,
            eval_ms_per_image and latency_ms_per_image; a figure an experiment lacks (e.g.
            one evaluated before a version that stored it) is None.

        Example:
            >>> table = ctf.Generate_Statistics()
            >>> table[["experiment", "best_val_accuracy", "test_accuracy"]]
        """
        import pandas as pd

        if not self.experiments:
            raise ExperimentError("the comparison has no experiments; Add_Experiment first.")
        paths, rows = [], []
        for project, experiment in self.experiments:
            path = ExperimentPaths(self.workspace_root, project, experiment)
            try:
                rows.append(experiment_row(path))
            except ExperimentError as err:     # a missing or damaged experiment.json
                warnings.warn(f"comparison {self.name}: {project}/{experiment} is left out: "
                              f"{err}", UserWarning, stacklevel=2)
                self._say(f"left out {project}/{experiment}: {err}")
                continue
            paths.append(path)
        if not rows:
            raise ExperimentError(f"no experiment of comparison {self.name} could be read; "
                                  "see the warnings above for each one's file and fix.")
        table = pd.DataFrame(rows)
        histories = {f"{p.project}/{p.experiment}": read_metrics(p.metrics_file) for p in paths}
        self.folder.mkdir(parents=True, exist_ok=True)
        plots = _curve_plots(histories, self.folder) + _bar_plots(table, self.folder)
        table.to_csv(self.folder / "comparison.csv", index=False)
        _write_html(table, plots, self.folder / "summary.html", self.name)
        self._say(f"comparison of {len(table)} experiments written to {self.folder}")
        return table


def _label(row) -> str:
    return f"{row['project']}/{row['experiment']}"


def _curve_plots(histories: Dict[str, List[Dict]], folder: Path) -> List[Path]:
    from .plots import _pyplot

    plt, written = _pyplot(), []
    for split, metric in CURVES:
        fig, axis = plt.subplots(figsize=(7, 4.5))
        for label, records in histories.items():
            points = [(r["epoch"], r[metric]) for r in records
                      if r.get("split") == split and r.get(metric) is not None]
            if points:
                axis.plot(*zip(*points), marker="o", label=label)
        axis.set_xlabel("epoch")
        axis.xaxis.get_major_locator().set_params(integer=True)
        axis.set_ylabel(f"{split} {metric}")
        axis.set_title(f"{split} {metric}")
        axis.grid(alpha=0.3)
        if axis.lines:
            axis.legend(fontsize=8)
        path = folder / f"{split}_{metric}.png"
        fig.tight_layout()
        fig.savefig(path, dpi=100)
        plt.close(fig)
        written.append(path)
    return written


def _bar_plots(table, folder: Path) -> List[Path]:
    from .plots import _pyplot

    plt, written = _pyplot(), []
    labels = [_label(row) for _, row in table.iterrows()]
    for column, title, scale in BAR_CHARTS:
        measured = column in table and not table[column].isna().all()
        if not measured and column not in MONK_CHART_FILES:
            continue
        column_values = table[column] if column in table else [None] * len(labels)
        values = [0.0 if v is None or v != v else v * scale for v in column_values]
        title = title if measured else f"{title}: not measured by any experiment"
        fig, axis = plt.subplots(figsize=(max(5, 1.3 * len(labels) + 2), 4))
        bars = axis.bar(range(len(labels)), values, color="tab:blue",
                        yerr=_error_bars(table, column, values, scale) if measured else None,
                        capsize=4)
        axis.bar_label(bars, fmt="%.3g", fontsize=8)
        axis.set_xticks(range(len(labels)), labels, rotation=25, ha="right", fontsize=8)
        axis.set_title(title)
        fig.tight_layout()
        path = folder / f"{MONK_CHART_FILES.get(column, column)}.png"
        fig.savefig(path, dpi=100)
        plt.close(fig)
        written.append(path)
    return written


def _error_bars(table, column: str, values: List[float], scale: float):
    """(2, n) distances below and above each bar to its interval, 0 where none is stored."""
    if column not in ERROR_BARS or any(c not in table for c in ERROR_BARS[column]):
        return None
    low, high = (table[c] for c in ERROR_BARS[column])
    spans = [[0.0, 0.0] if lo is None or hi is None or lo != lo or hi != hi
             else [max(0.0, v - lo * scale), max(0.0, hi * scale - v)]
             for v, lo, hi in zip(values, low, high)]
    return [[s[0] for s in spans], [s[1] for s in spans]] if spans else None


def _write_html(table, plots: List[Path], path: Path, name: str) -> None:
    images = "\n".join(
        f'<figure><img alt="{p.stem}" src="data:image/png;base64,'
        f'{base64.b64encode(p.read_bytes()).decode()}"><figcaption>{p.stem}</figcaption></figure>'
        for p in plots)
    page = f"""<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>Comparison {html.escape(name)}</title>
<style>body{{font-family:sans-serif;margin:1.5em}} table{{border-collapse:collapse;font-size:12px}}
td,th{{border:1px solid #ccc;padding:3px 6px;text-align:right}} figure{{display:inline-block;margin:6px}}
img{{max-width:520px}}</style></head><body>
<h1>Comparison: {html.escape(name)}</h1>
<div style="overflow-x:auto">
{table.to_html(index=False, na_rep="", float_format=lambda v: f"{v:.4g}")}
</div>
<h2>Plots</h2>
{images}
</body></html>"""
    path.write_text(page, encoding="utf-8")
