"""Exploratory data analysis behind ``EDA`` (Monk's ``EDA(show_img, save_img, check_missing,
check_corrupt, delimiter)``): class counts and sampled image sizes of the training data, the
files a label CSV names that do not exist (and the images of its folder no row names), the
files that cannot be decoded, and the figures of the counts and sizes.

Example:
    >>> report = run_eda(experiment, check_missing=True, check_corrupt=True, save_img=True)
    >>> report["missing_images"], report["corrupt_images"]
"""
from pathlib import Path
from typing import Dict, List, Optional

from .data.sources import is_image_file, locate_train_val
from .errors import DatasetError

#: figures written to the experiment's logs/ folder by save_img
FIGURES = ("eda_class_counts.png", "eda_image_sizes.png")


def missing_files(dataset_path, path_to_csv, delimiter: str = ",",
                  file_column: Optional[str] = None) -> Dict[str, List[str]]:
    """``{"missing_images": [...], "images_without_row": [...]}`` over the training (and
    validation) CSVs: file names (as the CSV writes them) with no file in the image folder,
    and image files of that folder (relative paths) that no row names. Folder data sets
    (class sub-folders) have neither: both lists are empty."""
    import pandas as pd

    missing, unlisted = [], []
    train, val = locate_train_val(dataset_path, path_to_csv)
    for images, csv in [train] + ([val] if val else []):
        if csv is None or str(images).endswith(".npz"):
            continue
        table = pd.read_csv(Path(csv).expanduser(), sep=delimiter, dtype=str,
                            keep_default_na=False)
        column = file_column if file_column in table.columns else table.columns[0]
        folder = Path(images).expanduser()
        named = [str(name) for name in table[column]]
        missing += [name for name in named if not (folder / name).is_file()]
        listed = {str(Path(name)) for name in named}
        unlisted += sorted(str(p.relative_to(folder)) for p in folder.rglob("*")
                           if is_image_file(p) and str(p.relative_to(folder)) not in listed)
    return {"missing_images": missing, "images_without_row": unlisted}


def corrupt_files(experiment) -> Dict[str, str]:
    """``{path: reason}`` of the training and validation files that cannot be decoded (each
    is decoded once, as training would; the decoded images stay cached)."""
    data = experiment.data
    workers = max(experiment.config.data.num_workers, 4)
    corrupt = {}
    for split, records in (("train", data.train), ("val", data.val)):
        if records.pixels is None:
            corrupt.update(experiment.store(split, records, on_corrupt="skip")
                           .decode_all(workers))
    return corrupt


def eda_figures(report: Dict, logs: Path, show: bool, save: bool) -> List[str]:
    """Bar charts of the class counts (training and validation) and of the sampled image
    sizes; saved as ``FIGURES`` in ``logs`` with ``save``, shown with ``show`` (no-op on a
    headless backend). Returns the saved paths."""
    from .plots import _pyplot

    plt = _pyplot()
    saved = []
    counts = {"train": report.get("train_class_counts") or {},
              "val": report.get("val_class_counts") or {}}
    classes = list(report.get("classes") or counts["train"])
    fig_counts, axis = plt.subplots(figsize=(6, 4))
    for offset, (split, per_class) in enumerate(counts.items()):
        axis.bar([i + 0.4 * offset for i in range(len(classes))],
                 [per_class.get(c, 0) for c in classes], width=0.4, label=split)
    axis.set_xticks([i + 0.2 for i in range(len(classes))], classes, rotation=30, ha="right")
    axis.set(title="images per class", ylabel="images")
    axis.legend()
    sizes = report.get("image_sizes_sampled") or {}
    fig_sizes, axis = plt.subplots(figsize=(6, 4))
    axis.barh(list(sizes), list(sizes.values()))
    axis.set(title="image sizes (sampled)", xlabel="images")
    for figure, name in zip((fig_counts, fig_sizes), FIGURES):
        figure.tight_layout()
        if save:
            logs.mkdir(parents=True, exist_ok=True)
            figure.savefig(logs / name, dpi=100)
            saved.append(str(logs / name))
    if show:
        plt.show()
    plt.close(fig_counts)
    plt.close(fig_sizes)
    return saved


def run_eda(experiment, show_img: bool = False, save_img: bool = False,
            check_missing: bool = False, check_corrupt: bool = False,
            delimiter: Optional[str] = None) -> Dict:
    """The EDA report of ``experiment``'s training data (see the module). With
    ``check_missing``, a data set that cannot be read because of missing files gives the
    report of what is missing (and ``"load_error"``) instead of raising."""
    from .data.dataset import sampled_image_sizes

    config = experiment.config.data
    report: Dict = {}
    if check_missing:
        report.update(missing_files(config.dataset_path, config.path_to_csv,
                                    delimiter or config.delimiter, config.file_column))
    try:                                 # check_missing: the files as they are now
        data = experiment.load_data() if check_missing or experiment.data is None \
            else experiment.data
    except DatasetError as err:
        if not report.get("missing_images"):
            raise
        report["load_error"] = str(err)
        return report
    report = {**data.summary(), "image_sizes_sampled": sampled_image_sizes(data.train),
              **report}
    if check_corrupt:
        report["corrupt_images"] = corrupt_files(experiment)
    if show_img or save_img:
        report["figures"] = eda_figures(report, experiment.paths.logs, show_img, save_img)
    return report
