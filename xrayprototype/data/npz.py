"""MedMNIST-style ``.npz`` files: images and labels of official splits held in memory.

A file holds ``{split}_images`` (uint8, ``(N, H, W)`` grayscale or ``(N, H, W, C)``) and
``{split}_labels`` (integers, ``(N,)`` or ``(N, 1)``) for ``split`` in train / val / test.
A dataset path ``"file.npz"`` means the official train + val splits for training and the test
split for evaluation; ``"file.npz:val"`` selects one split. Records carry the split's pixels;
their names (``file.npz:test/17``) identify the row in predictions and messages.
"""
import difflib
import zipfile
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

import numpy as np

from ..errors import DatasetError
from .sources import ImageRecords

NPZ_SUFFIX = ".npz"
TRAIN_SPLIT, VAL_SPLIT, EVAL_SPLIT = "train", "val", "test"


def is_npz_path(path) -> bool:
    """True for ``file.npz`` and ``file.npz:<split>``."""
    return isinstance(path, (str, Path)) and split_npz_path(path)[0].lower().endswith(NPZ_SUFFIX)


def split_npz_path(path) -> Tuple[str, Optional[str]]:
    """``"dir/file.npz:val"`` -> ``("dir/file.npz", "val")``; no suffix -> ``(path, None)``."""
    text = str(path)
    base, sep, split = text.rpartition(":")
    if sep and base.lower().endswith(NPZ_SUFFIX) and split and "/" not in split \
            and "\\" not in split:
        return base, split
    return text, None


def npz_splits(path) -> List[str]:
    """The split names of an npz file: those with both ``_images`` and ``_labels`` arrays."""
    with _open(path) as arrays:
        keys = set(arrays.files)
    return sorted(k[:-len("_images")] for k in keys
                  if k.endswith("_images") and k[:-len("_images")] + "_labels" in keys)


def default_class_names(path, num_classes: int) -> List[str]:
    """``["NORMAL", "PNEUMONIA"]`` for a 2-class file named like pneumonia; else "0", "1", ..."""
    if num_classes == 2 and "pneumonia" in Path(path).name.lower():
        return ["NORMAL", "PNEUMONIA"]
    return [str(k) for k in range(num_classes)]


def read_npz_split(path, classes: Optional[Sequence[str]] = None,
                   class_names: Optional[Sequence[str]] = None,
                   default_split: str = EVAL_SPLIT) -> ImageRecords:
    """Records of one split of an npz file (``"file.npz:split"``, else ``default_split``).

    Labels index ``classes`` when given (a trained model's classes), else ``class_names``,
    else :func:`default_class_names`.

    Example:
        >>> records = read_npz_split("pneumoniamnist_28.npz:val")
        >>> records.paths[0], records.classes
        ('pneumoniamnist_28.npz:val/0', ['NORMAL', 'PNEUMONIA'])
    """
    file, split = split_npz_path(path)
    split = split or default_split
    with _open(file) as arrays:
        keys = sorted(arrays.files)
        _require_split(file, split, keys)
        images, labels = arrays[f"{split}_images"], arrays[f"{split}_labels"]
    labels = _checked_labels(file, split, images, labels)
    names = _class_names(file, labels, classes, class_names)
    rows = [f"{Path(file).name}:{split}/{row}" for row in range(len(labels))]
    return ImageRecords(rows, labels, names, origin=f"{Path(file).resolve()}:{split}",
                        pixels=images)


def _open(path):
    file = Path(path).expanduser()
    if not file.is_file():
        raise DatasetError(f"npz file '{path}' does not exist (resolved to {file.resolve()}); "
                           "check the path, or pass an absolute one.")
    try:
        arrays = np.load(file, allow_pickle=False)
    except (OSError, ValueError, zipfile.BadZipFile) as err:
        arrays, reason = None, str(err)
    else:
        reason = "it holds a single array, not named ones"
    if not isinstance(arrays, np.lib.npyio.NpzFile):
        raise DatasetError(f"cannot read {file} as an .npz archive ({reason}); expected a "
                           "MedMNIST-style file saved with numpy.savez.")
    return arrays


def _require_split(file, split: str, keys: List[str]) -> None:
    image_key, label_key = f"{split}_images", f"{split}_labels"
    if image_key in keys and label_key in keys:
        return
    splits = sorted({k.rsplit("_", 1)[0] for k in keys if k.endswith(("_images", "_labels"))})
    if split in splits:
        missing = image_key if image_key not in keys else label_key
        raise DatasetError(f"{Path(file).name} has no '{missing}' array for split '{split}' "
                           f"(its arrays: {keys}); a MedMNIST-style file holds both "
                           f"'{split}_images' and '{split}_labels'.")
    close = difflib.get_close_matches(split, splits, n=1)
    hint = f" Did you mean '{close[0]}'?" if close else ""
    raise DatasetError(f"{Path(file).name} has no split '{split}' (no '{image_key}' / "
                       f"'{label_key}' arrays; its arrays: {keys}).{hint} Select one of "
                       f"{splits or 'none'} with '{Path(file).name}:<split>'.")


def _checked_labels(file, split: str, images: np.ndarray, labels: np.ndarray) -> np.ndarray:
    name = Path(file).name
    if images.ndim not in (3, 4) or (images.ndim == 4 and images.shape[3] not in (1, 3, 4)):
        raise DatasetError(f"{name}: '{split}_images' has shape {images.shape}; expected "
                           "(N, H, W) grayscale or (N, H, W, C) with C = 1, 3 or 4.")
    if images.dtype != np.uint8 and images.ndim == 4 and images.shape[3] > 1:
        raise DatasetError(f"{name}: colour images in '{split}_images' must be uint8, got "
                           f"{images.dtype}; convert them with images.astype(numpy.uint8).")
    if labels.ndim == 2 and labels.shape[1] == 1:
        labels = labels[:, 0]
    if labels.ndim != 1:
        raise DatasetError(f"{name}: '{split}_labels' has shape {labels.shape}; expected one "
                           "class label per image, shaped (N,) or (N, 1) (multi-label files "
                           "such as ChestMNIST are not supported).")
    if len(labels) != len(images):
        raise DatasetError(f"{name}: '{split}_images' holds {len(images)} images but "
                           f"'{split}_labels' holds {len(labels)} labels; they must match row "
                           "for row.")
    if len(labels) == 0:
        raise DatasetError(f"{name}: split '{split}' holds no images.")
    if not np.issubdtype(labels.dtype, np.integer) or labels.min() < 0:
        raise DatasetError(f"{name}: '{split}_labels' must be class indices 0, 1, ...; got "
                           f"dtype {labels.dtype}, values {np.unique(labels)[:5].tolist()}.")
    return labels.astype(np.int64)


def _class_names(file, labels: np.ndarray, classes, class_names) -> List[str]:
    highest = int(labels.max())
    if classes is not None:
        if highest >= len(classes):
            raise DatasetError(f"{Path(file).name} has label {highest}, but the model was "
                               f"trained on {len(classes)} classes {list(classes)}.")
        return list(classes)
    if class_names is not None:
        names = [str(n) for n in class_names]
        if len(names) <= highest or len(set(names)) != len(names):
            raise DatasetError(f"class_names {names} must be distinct and name every label of "
                               f"{Path(file).name} (labels go up to {highest}); pass "
                               f"{highest + 1} names, in label order.")
        return names
    if highest < 1:
        raise DatasetError(f"{Path(file).name} has only one class (label 0) in its labels; a "
                           "classifier needs at least two.")
    return default_class_names(file, highest + 1)
