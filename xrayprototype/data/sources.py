"""Find labelled images on disk: class sub-folders, or a CSV of ``file,label`` rows.

Nothing is decoded here; a source yields :class:`ImageRecords` (paths, integer labels,
patient groups and class names) that the split and the batch loader work on.
"""
import difflib
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Optional, Sequence, Tuple, Union

import numpy as np

from ..errors import DatasetError
from .dicom import is_dicom_file

DICOM_EXTENSIONS = {".dcm", ".dicom"}
#: files found by extension; DICOM files are also found by content, whatever their name
IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".gif",
                    ".ppm", ".pgm"} | DICOM_EXTENSIONS
TRAIN_FOLDER_NAMES = ("train", "training")
VAL_FOLDER_NAMES = ("val", "validation", "valid")
#: more distinct labels than this, and more than one per two rows: a CSV's label column is
#: probably an identifier (a patient id read as the label)
MANY_CLASSES = 20


@dataclass
class ImageRecords:
    """Labelled images. ``labels[i]`` indexes ``classes``; ``groups[i]`` names a patient.

    Images are files at ``paths``, or, when ``pixels`` is given (an in-memory array such as
    an npz split), its row ``i``; ``paths`` then only name the rows (``file.npz:test/17``).

    Multi-label records also hold ``targets``, float32 (N, classes) multi-hot rows (what the
    model learns); ``labels[i]`` is then the rarest of image ``i``'s labels, which the split
    stratifies on and sampling balances.
    """
    paths: List[str]
    labels: np.ndarray
    classes: List[str]
    groups: List[str] = field(default_factory=list)
    origin: str = ""
    pixels: Optional[np.ndarray] = None
    targets: Optional[np.ndarray] = None

    def __post_init__(self):
        self.labels = np.asarray(self.labels, dtype=np.int64)
        if self.targets is not None:
            self.targets = np.asarray(self.targets, dtype=np.float32)
        if not self.groups:
            self.groups = list(self.paths)
        if self.pixels is not None and len(self.pixels) != len(self.paths):
            raise DatasetError(f"{len(self.pixels)} in-memory images for {len(self.paths)} "
                               "records; they must match row for row.")

    def __len__(self) -> int:
        return len(self.paths)

    def subset(self, indices: Sequence[int]) -> "ImageRecords":
        indices = np.asarray(indices, dtype=np.int64)
        return ImageRecords([self.paths[i] for i in indices], self.labels[indices],
                            list(self.classes), [self.groups[i] for i in indices], self.origin,
                            None if self.pixels is None else self.pixels[indices],
                            None if self.targets is None else self.targets[indices])

    def concatenate(self, other: "ImageRecords") -> "ImageRecords":
        """These records followed by ``other``'s (same classes; both files or both in memory)."""
        if (self.pixels is None) != (other.pixels is None):
            raise DatasetError("cannot join records of image files with in-memory records.")
        pixels = None if self.pixels is None else np.concatenate([self.pixels, other.pixels])
        targets = None if self.targets is None and other.targets is None else \
            np.concatenate([self.multi_hot(), other.multi_hot()])
        return ImageRecords(self.paths + other.paths,
                            np.concatenate([self.labels, other.labels]), list(self.classes),
                            self.groups + other.groups, self.origin, pixels, targets)

    def multi_hot(self) -> np.ndarray:
        """float32 (N, classes): ``targets``, or the one-hot rows of single labels."""
        if self.targets is not None:
            return self.targets
        return np.eye(len(self.classes), dtype=np.float32)[self.labels]

    def class_counts(self) -> dict:
        """Images per class; for multi-label records, images carrying each label."""
        if self.targets is not None:
            counts = self.targets.sum(axis=0).astype(np.int64)
            return {name: int(n) for name, n in zip(self.classes, counts)}
        counts = np.bincount(self.labels, minlength=len(self.classes))
        return {name: int(n) for name, n in zip(self.classes, counts)}


def is_dicom(path: Union[str, Path]) -> bool:
    """DICOM by extension (``.dcm``, ``.dicom``), or by content (``DICM`` at byte 128) for a
    file without a known image extension (``IM000001``, ``1.2.840.113619.2.5``)."""
    suffix = Path(path).suffix.lower()
    if suffix in DICOM_EXTENSIONS:
        return True
    return suffix not in IMAGE_EXTENSIONS and is_dicom_file(path)


def is_image_file(path: Union[str, Path]) -> bool:
    """A visible file with a known image extension, or a DICOM file of any name (its first
    132 bytes are read only for a file without a known image extension).

    Example:
        >>> is_image_file(Path("export/IM000001")), is_image_file(Path("notes.txt"))
        (True, False)
    """
    path = Path(path)
    if path.name.startswith(".") or not path.is_file():
        return False
    return path.suffix.lower() in IMAGE_EXTENSIONS or is_dicom_file(path)


def patient_groups(paths: Sequence[str], pattern: Optional[str]) -> List[str]:
    """The patient id of each file from ``pattern``'s first group; the file itself otherwise.

    Example:
        >>> patient_groups(["a/person12_virus_3.jpeg", "b/IM-1.jpeg"], r"(person\\d+)_")
        ['person12', 'b/IM-1.jpeg']
    """
    if not pattern:
        return list(paths)
    regex = re.compile(pattern)
    groups = []
    for path in paths:
        match = regex.search(Path(path).name)
        groups.append(match.group(1) if match else path)
    return groups


def _require_dir(path: Union[str, Path], what: str) -> Path:
    folder = Path(path).expanduser()
    if not folder.exists():
        raise DatasetError(f"{what} '{path}' does not exist (resolved to {folder.resolve()});"
                           " check the path, or pass an absolute one.")
    if not folder.is_dir():
        raise DatasetError(f"{what} '{path}' is a file, not a folder of class sub-folders "
                           "(the one file format read as a dataset is a MedMNIST-style .npz).")
    return folder.resolve()


def scan_class_folders(root: Union[str, Path], classes: Optional[Sequence[str]] = None,
                       group_pattern: Optional[str] = None) -> ImageRecords:
    """Read ``root/<class>/**/<image>``; one sub-folder per class.

    With ``classes`` given (evaluation of a trained model) the folders must be a subset of
    them and labels follow their order; otherwise classes are the sorted folder names.
    """
    folder = _require_dir(root, "dataset folder")
    class_dirs = sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not class_dirs:
        loose = [p.name for p in folder.iterdir() if is_image_file(p)][:3]
        hint = f" (it holds images such as {', '.join(loose)} directly)" if loose else ""
        raise DatasetError(f"dataset folder {folder} has no class sub-folders{hint}; expected "
                           f"{folder}/<class name>/<image files>, e.g. NORMAL/ and PNEUMONIA/.")
    names = [p.name for p in class_dirs]
    if classes is None:
        classes = names
        if len(classes) < 2:
            raise DatasetError(f"dataset folder {folder} has only one class ({names[0]}); a "
                               "classifier needs at least two class sub-folders.")
    else:
        unknown = [n for n in names if n not in classes]
        if unknown:
            raise DatasetError(f"{folder} has class folders {unknown} that the model was not "
                               f"trained on; its classes are {list(classes)}.")
    paths, labels = [], []
    for class_dir in class_dirs:
        files = sorted(str(p) for p in class_dir.rglob("*") if is_image_file(p))
        if not files:
            raise DatasetError(f"class folder {class_dir} holds no images (looked for "
                               f"{', '.join(sorted(IMAGE_EXTENSIONS))}, and DICOM files of any "
                               "name); add images or remove it.")
        paths += files
        labels += [list(classes).index(class_dir.name)] * len(files)
    return ImageRecords(paths, np.array(labels), list(classes),
                        patient_groups(paths, group_pattern), origin=str(folder))


def _column(table, wanted: Optional[str], position: int, role: str, csv_name: str) -> str:
    """The column read as ``role``: ``wanted`` by name, else the one at ``position``."""
    columns = [str(c) for c in table.columns]
    if wanted is None:
        return table.columns[position]
    if wanted in columns:
        return wanted
    close = difflib.get_close_matches(wanted, columns, n=1)
    hint = f"; did you mean '{close[0]}'?" if close else "."
    raise DatasetError(f"{role} column '{wanted}' is not in {csv_name}{hint} Its columns are "
                       f"{columns}; pass {role}_column=<one of them> to Dataset_Params.")


def monk_multi_label_layout(csv_file: Path, delimiter: str) -> bool:
    """Whether a CSV read with ``delimiter`` is laid out as Monk's multi-label CSVs are: Monk
    reads those with commas and splits each label cell on ``delimiter``
    (``Default(..., delimiter=" ")`` on ``ID,Labels`` / ``img.jpg,Effusion Nodule``), while
    its single-label CSVs are split into columns by ``delimiter``. Told apart by the header:
    comma-separated and without ``delimiter``."""
    if delimiter == ",":
        return False
    with open(csv_file, encoding="utf-8", errors="replace") as handle:
        header = handle.readline().rstrip("\r\n")
    return "," in header and delimiter not in header


def read_csv_labels(csv_path: Union[str, Path], image_dir: Union[str, Path],
                    delimiter: str = ",", classes: Optional[Sequence[str]] = None,
                    group_pattern: Optional[str] = None,
                    group_column: Optional[str] = None, file_column: Optional[str] = None,
                    label_column: Optional[str] = None, multi_label: Optional[bool] = None,
                    label_delimiter: str = " ") -> ImageRecords:
    """Read a CSV of image file names (relative to ``image_dir``) and labels: the columns
    named ``file_column`` and ``label_column``, by default the first and the second; an
    optional ``group_column`` names the patient. Errors say which column was read as what.

    A label cell may hold several labels separated by ``label_delimiter`` (Monk's multi-label
    CSVs: ``img.jpg,Atelectasis Effusion``): with ``multi_label`` None the CSV is read as
    multi-label when any cell does, with True always, with False never (such a cell is then
    one label); see ``split_label_cells``.

    Example:
        >>> read_csv_labels("labels.csv", "covid", file_column="filename",
        ...                 label_column="label", group_column="patientid").classes
        ['COVID-19', 'normal', 'other']
    """
    import pandas as pd

    csv_file = Path(csv_path).expanduser()
    if not csv_file.is_file():
        raise DatasetError(f"label CSV '{csv_path}' does not exist.")
    folder = _require_dir(image_dir, "image folder of the CSV")
    if multi_label is not False and monk_multi_label_layout(csv_file, delimiter):
        warnings.warn(f"{csv_file.name}: its columns are separated by ',' and "
                      f"delimiter={delimiter!r} separates the labels of one cell, as in Monk's "
                      f"multi-label CSVs; read that way (label_delimiter={delimiter!r}).",
                      UserWarning, stacklevel=2)
        delimiter, label_delimiter = ",", delimiter
    table = pd.read_csv(csv_file, sep=delimiter, dtype=str, keep_default_na=False)
    if table.shape[1] < 2:
        raise DatasetError(f"{csv_file} has {table.shape[1]} column(s) with delimiter "
                           f"{delimiter!r}; expected 'file{delimiter}label' rows (is the "
                           "delimiter right? pass delimiter=... to Dataset_Params).")
    file_col = _column(table, file_column, 0, "file", csv_file.name)
    label_col = _column(table, label_column, 1, "label", csv_file.name)
    read_as = (f"file names read from column '{file_col}', labels from column '{label_col}' "
               f"of {csv_file.name} (columns {[str(c) for c in table.columns]})")
    for column, role in ((file_col, "file name"), (label_col, "label")):
        empty = [i + 2 for i, value in enumerate(table[column]) if not str(value).strip()]
        if empty:
            raise DatasetError(f"{len(empty)} rows of {csv_file.name} have no {role} (lines "
                               f"{empty[:5]}{' ...' if len(empty) > 5 else ''}; {read_as}); "
                               "fill them in or remove those rows.")
    paths = [str(folder / name) for name in table[file_col]]
    missing = [name for name, p in zip(table[file_col], paths) if not Path(p).is_file()]
    if missing:
        raise DatasetError(f"{len(missing)} of {len(paths)} files named in {csv_file.name} are "
                           f"missing from {folder}: {', '.join(missing[:5])}"
                           f"{' ...' if len(missing) > 5 else ''} ({read_as}); fix the CSV or "
                           "the folder, or name the columns with file_column= / label_column=.")
    groups = _csv_groups(table, group_column, paths, group_pattern, csv_file.name)
    label_sets = split_label_cells(list(table[label_col]), multi_label, label_delimiter)
    if label_sets is not None:
        return multi_label_records(paths, label_sets, classes, groups, str(csv_file), read_as)
    found = sorted(set(table[label_col]))
    classes = known_classes(found, classes, csv_file.name, read_as, "classes")
    if len(found) < 2 and len(classes) < 2:
        raise DatasetError(f"{csv_file.name} has only one label ({found}); need at least two "
                           f"({read_as}).")
    if classes is found and len(found) > MANY_CLASSES and len(found) > len(table) / 2:
        raise DatasetError(f"{csv_file.name} gives {len(found)} different labels for "
                           f"{len(table)} rows ({read_as}), e.g. {found[:5]}: that column "
                           "looks like an identifier, not a class. Name the label column "
                           "with label_column= (and the patient column with group_column=).")
    labels = [classes.index(label) for label in table[label_col]]
    return ImageRecords(paths, np.array(labels), classes, groups, origin=str(csv_file))


def _csv_groups(table, group_column: Optional[str], paths: List[str],
                group_pattern: Optional[str], csv_name: str) -> List[str]:
    """The patient of each row: ``group_column``'s value, else from the file name."""
    if not group_column:
        return patient_groups(paths, group_pattern)
    if group_column not in table.columns:
        close = difflib.get_close_matches(group_column, list(table.columns), n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        raise DatasetError(f"group column '{group_column}' is not in {csv_name}{hint};"
                           f" its columns are {list(table.columns)}.")
    return list(table[group_column])


def split_label_cells(cells: Sequence[str], multi_label: Optional[bool],
                      delimiter: str = " ") -> Optional[List[List[str]]]:
    """Each cell's labels (split on ``delimiter``, blanks and repeats dropped), or None when
    the CSV is single-label: ``multi_label`` False, or None (auto) and no cell has more than
    one label.

    Example:
        >>> split_label_cells(["Effusion", "Atelectasis Effusion"], None)
        [['Effusion'], ['Atelectasis', 'Effusion']]
        >>> split_label_cells(["NORMAL", "PNEUMONIA"], None) is None
        True
    """
    if multi_label is False:
        return None
    sets = [sorted(set(p.strip() for p in str(cell).split(delimiter) if p.strip()))
            for cell in cells]
    if multi_label is None and not any(len(labels) > 1 for labels in sets):
        return None
    return sets


def known_classes(found: List[str], classes: Optional[Sequence[str]], file_name: str,
                  read_as: str, noun: str) -> List[str]:
    """``classes`` (default: the ``found`` labels, sorted); a found label the model was not
    trained on raises, naming the file."""
    classes = list(classes) if classes is not None else found
    unknown = [c for c in found if c not in classes]
    if unknown:
        raise DatasetError(f"{file_name} has labels {unknown[:10]}"
                           f"{' ...' if len(unknown) > 10 else ''} the model was not trained "
                           f"on; its {noun} are {classes} ({read_as}).")
    return classes


def multi_label_records(paths: List[str], label_sets: List[List[str]],
                        classes: Optional[Sequence[str]], groups: List[str], origin: str,
                        read_as: str = "") -> ImageRecords:
    """Multi-label records: multi-hot ``targets`` over ``classes`` (default the sorted union
    of the labels), ``labels`` the rarest label of each image (for stratified splits)."""
    found = sorted(set(label for labels in label_sets for label in labels))
    classes = known_classes(found, classes, Path(origin).name, read_as, "labels")
    if len(classes) < 2:
        raise DatasetError(f"{Path(origin).name} has only one label ({found}); a multi-label "
                           f"model needs at least two ({read_as}).")
    targets = np.zeros((len(paths), len(classes)), dtype=np.float32)
    for row, labels in enumerate(label_sets):
        targets[row, [classes.index(label) for label in labels]] = 1.0
    frequency = targets.sum(axis=0)
    rarest = np.where(targets > 0, frequency[None, :], np.inf).argmin(axis=1)
    return ImageRecords(paths, rarest, classes, groups, origin=origin, targets=targets)


def _as_list(value) -> list:
    if value is None:
        return []
    return list(value) if isinstance(value, (list, tuple)) else [value]


def locate_train_val(dataset_path, path_to_csv=None) -> Tuple[Tuple, Optional[Tuple]]:
    """Work out the (images, csv) pair of the training set and of the optional validation set.

    Accepts ``[train_dir, val_dir]`` lists (Monk), a folder holding ``train/`` (or
    ``training/``) and optionally ``val/`` (``validation/``), or a folder of class folders.
    """
    paths, csvs = _as_list(dataset_path), _as_list(path_to_csv)
    if not paths:
        raise DatasetError("no dataset_path given; call Dataset_Params(dataset_path=...) or "
                           "Default(dataset_path=...) with a folder of class sub-folders.")
    if len(paths) > 2 or len(csvs) > 2:
        raise DatasetError("dataset_path takes one folder or a [train, val] pair of folders.")
    csvs += [None] * (len(paths) - len(csvs))
    if len(paths) == 2:
        return (paths[0], csvs[0]), (paths[1], csvs[1])
    root = _require_dir(paths[0], "dataset folder")
    if csvs[0] is None:
        train = next((root / n for n in TRAIN_FOLDER_NAMES if (root / n).is_dir()), None)
        if train is not None:
            val = next((root / n for n in VAL_FOLDER_NAMES if (root / n).is_dir()), None)
            return (str(train), None), ((str(val), None) if val is not None else None)
    return (str(root), csvs[0]), None


def load_records(images, csv=None, delimiter=",", classes=None, group_pattern=None,
                 group_column=None, file_column=None, label_column=None, multi_label=None,
                 label_delimiter=" ") -> ImageRecords:
    """Records from a class-folder tree, or from a CSV plus its image folder."""
    if csv is not None:
        return read_csv_labels(csv, images, delimiter, classes, group_pattern, group_column,
                               file_column, label_column, multi_label, label_delimiter)
    return scan_class_folders(images, classes, group_pattern)
