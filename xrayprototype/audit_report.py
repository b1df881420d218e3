"""The shortcut audit's report and files: the printed lines, ``shortcut_audit.json``, the
per-image feature CSV, a PNG (feature importance bars and the strongest feature by class), the
summary kept in ``experiment.json``, and which images an experiment's audit reads.

Example:
    >>> result, table = audit.audit_records(records)
    >>> print("\\n".join(report_lines(result)))
    >>> files = save_audit(result, table, experiment.paths.logs)
"""
import json
from dataclasses import replace
from pathlib import Path
from typing import Dict, List, Optional, Tuple

from .audit import AUDIT_CSV, AUDIT_JSON, AUDIT_PNG, SMALL_CLASS, auc_text
from .audit_features import CATEGORICAL
from .errors import ExperimentError, XrayPrototypeError

#: colours of the feature groups in the importance plot
GROUP_COLOURS = {"size/format": "tab:orange", "dicom": "tab:purple", "border": "tab:blue"}
PLOTTED_FEATURES = 10

__all__ = ["report_lines", "save_audit", "state_summary", "experiment_records", "path_records"]


def report_lines(result: Dict) -> List[str]:
    """The printed report: data, AUC with interval, group AUCs, top features, the verdict."""
    lines = [f"shortcut audit of {result['num_images']} images ({result['dataset']}), classes "
             f"{result['class_counts']}; {result['cv']['method']} x{result['cv']['folds']}"
             + (f" by {result['cv']['patients']} patients" if result['cv']['patients'] else ""),
             f"  metadata-only ROC-AUC ({result['auc_of']}, out-of-fold, 95% "
             f"{result['auc']['method']}): {auc_text(result['auc'])}",
             "  AUC by feature group: " + ", ".join(
                 f"{g} {'constant' if a is None else f'{a:.3f}'}"
                 for g, a in result["group_auc"].items())]
    lines += [f"  {r['feature']:<22} ({r['group']}) AUC drop {r['importance']:.3f}, share "
              f"{100 * r['share']:.0f}%" for r in result["top_features"]]
    if result["small_data"]:
        lines.append(f"  note: a class has fewer than {SMALL_CLASS} images; chance alone can "
                     "reach a high AUC, read the interval.")
    explanations = result.get("explanations") or {}
    if explanations.get("status") == "ok":
        lines.append(f"  explanations: {explanations['images']} images, mean heatmap share "
                     f"outside the central lung region "
                     f"{explanations['mean_outside_lung_share']:.2f}, "
                     f"{100 * explanations['share_of_images_above_half']:.0f}% above 0.5")
    else:
        lines.append(f"  explanations: {explanations.get('status', 'no explanations yet')}")
    return lines + [result["message"]]


def save_audit(result: Dict, table, folder) -> Dict[str, str]:
    """Write ``shortcut_audit.json``, ``shortcut_audit_features.csv`` and ``shortcut_audit.png``
    into ``folder``; returns their paths."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    files = {"json": str(folder / AUDIT_JSON), "csv": str(folder / AUDIT_CSV),
             "png": str(folder / AUDIT_PNG)}
    table.to_csv(files["csv"], index=False)
    plot_audit(result, table, files["png"])
    Path(files["json"]).write_text(json.dumps(dict(result, files=files), indent=2, default=float))
    return files


def plot_audit(result: Dict, table, path) -> None:
    """Left: permutation importance of the top features, coloured by group; right: the
    strongest feature's values by class."""
    import matplotlib
    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    rows = result["ranked_features"][:PLOTTED_FEATURES]
    if rows:
        rows = rows[::-1]
        left.barh([r["feature"] for r in rows], [r["importance"] for r in rows],
                  color=[GROUP_COLOURS.get(r["group"], "grey") for r in rows])
        groups = sorted({r["group"] for r in rows})
        left.legend(handles=[Patch(color=GROUP_COLOURS.get(g, "grey"), label=g) for g in groups],
                    loc="lower right", fontsize=8)
    left.set_xlabel("drop of out-of-fold ROC-AUC when permuted")
    left.set_title(f"metadata-only ROC-AUC {auc_text(result['auc'])}"
                   + (" - WARNING" if result["warning"] else ""), fontsize=10)
    strongest = result["top_features"][0]["feature"] if result["top_features"] else None
    if strongest is not None:
        _by_class(right, table, strongest, result["classes"])
    else:
        right.text(0.5, 0.5, "no feature carries the label", ha="center", va="center")
        right.set_axis_off()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _by_class(axis, table, feature: str, classes: List[str]) -> None:
    import pandas as pd

    if feature in CATEGORICAL:
        shares = pd.crosstab(table["label"], table[feature], normalize="index")
        shares.reindex([c for c in classes if c in shares.index]).plot.bar(stacked=True, ax=axis)
        axis.set_ylabel("share of the class's images")
    else:
        present = [c for c in classes if (table["label"] == c).any()]
        axis.boxplot([table.loc[table["label"] == c, feature].dropna() for c in present])
        axis.set_xticks(range(1, len(present) + 1), present)
        axis.set_ylabel(feature)
    axis.set_title(f"strongest feature by class: {feature}", fontsize=10)


def state_summary(result: Dict, files: Dict[str, str]) -> Dict:
    """What ``experiment.json`` keeps (``state["shortcut_audit"]``)."""
    keys = ("dataset", "num_images", "class_counts", "auc_of", "auc", "warning",
            "warning_level", "leaking_group", "group_auc", "cv", "message", "explanations")
    summary = {k: result[k] for k in keys}
    summary["top_features"] = [{"feature": r["feature"], "group": r["group"],
                                "share": round(r["share"], 4)} for r in result["top_features"]]
    return dict(summary, files=files)


def experiment_records(experiment):
    """The images an experiment's audit reads: its train + validation records (read again
    from its saved data settings when not loaded), plus its evaluation set when one is loaded.
    Returns ``(records, split of each image)``."""
    from .data import load_train_val

    data, evaluation = experiment.data, experiment.eval_records
    if data is None:
        if not experiment.config.data.dataset_path:
            raise ExperimentError("this experiment has no data set yet; call Dataset_Params("
                                  "dataset_path=...) and Dataset() first, or pass "
                                  "Audit_Shortcuts(dataset_path=...).")
        try:
            data = load_train_val(experiment.config.data, experiment.config.train.seed)
        except (XrayPrototypeError, OSError) as err:
            if evaluation is None:
                raise ExperimentError(f"cannot read the training data "
                                      f"{experiment.config.data.dataset_path} again ({err}); "
                                      "pass Audit_Shortcuts(dataset_path=...).") from err
            return evaluation, ["eval"] * len(evaluation)
    records = data.train.concatenate(data.val)
    splits = ["train"] * len(data.train) + ["val"] * len(data.val)
    origin = f"train + val of {data.train.origin}"
    if evaluation is not None and evaluation is not data.val and len(evaluation):
        records = records.concatenate(evaluation)
        splits += ["eval"] * len(evaluation)
        origin += f" + evaluation set {evaluation.origin}"
    records.origin = origin
    return records, splits


def path_records(dataset_path, path_to_csv, data_config, seed: int = 0,
                 group_column: Optional[str] = None) -> Tuple[object, List[str]]:
    """Every image of another data set (a folder of class folders, or one holding train/ and
    val/; a CSV's image folder with ``path_to_csv``; an .npz file's train and val splits),
    read with ``data_config``'s delimiter, patient pattern and class names."""
    from .data import load_train_val

    config = replace(data_config, dataset_path=dataset_path, path_to_csv=path_to_csv,
                     group_column=group_column or data_config.group_column)
    data = load_train_val(config, seed)
    records = data.train.concatenate(data.val)
    records.origin = str(data.train.origin if data.val_source == "split"
                         else f"{data.train.origin} + {data.val.origin}")
    return records, ["train"] * len(data.train) + ["val"] * len(data.val)
