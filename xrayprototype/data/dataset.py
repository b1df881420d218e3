"""Assemble training, validation and evaluation record sets from a DataConfig."""
from dataclasses import dataclass
from typing import List, Optional

import numpy as np

from ..config import DataConfig
from ..errors import DatasetError
from .npz import (EVAL_SPLIT, TRAIN_SPLIT, VAL_SPLIT, is_npz_path, npz_splits, read_npz_split,
                  split_npz_path)
from .sources import ImageRecords, load_records, locate_train_val
from .split import split_indices, split_shortfall
from .transforms import channel_statistics


@dataclass
class TrainValData:
    train: ImageRecords
    val: ImageRecords
    classes: List[str]
    val_source: str          # "folder" | "npz" (the file's val split) | "split"
    requested_train_fraction: Optional[float] = None     # trainval_split, when it split
    split_note: Optional[str] = None     # why the achieved fraction is off, when it is

    def summary(self) -> dict:
        return {"classes": self.classes, "num_train": len(self.train), "num_val": len(self.val),
                "train_class_counts": self.train.class_counts(),
                "val_class_counts": self.val.class_counts(), "val_source": self.val_source,
                "train_origin": self.train.origin, "val_origin": self.val.origin,
                "num_train_patients": len(set(self.train.groups)),
                "num_val_patients": len(set(self.val.groups)),
                "multi_label": self.multi_label,
                "requested_train_fraction": self.requested_train_fraction,
                "achieved_train_fraction": len(self.train) / max(1, len(self.train)
                                                                 + len(self.val)),
                "split_note": self.split_note}

    @property
    def multi_label(self) -> bool:
        """Whether images carry several labels (multi-hot targets, sigmoid outputs)."""
        return self.train.targets is not None


def load_train_val(config: DataConfig, seed: int = 0) -> TrainValData:
    """The training and validation records: a validation folder (or an npz file's val split)
    when there is one, else a seeded, stratified (and patient-grouped) split of the training set.

    Example:
        >>> data = load_train_val(DataConfig(dataset_path="chest_xray/train"))
        >>> data.summary()["num_val"]
    """
    (train_images, train_csv), val_pair = _locate(config)
    records = _records(config, train_images, train_csv, default_split=TRAIN_SPLIT)
    if val_pair is not None:
        val = _records(config, val_pair[0], val_pair[1], records.classes, VAL_SPLIT)
        if records.targets is not None and val.targets is None:
            val.targets = val.multi_hot()
        source = "npz" if is_npz_path(val_pair[0]) else "folder"
        return TrainValData(records, val, records.classes, source)
    requested = float(config.trainval_split)
    train_idx, val_idx = split_indices(records.labels, records.groups, 1.0 - requested, seed)
    return TrainValData(records.subset(train_idx), records.subset(val_idx), records.classes,
                        "split", requested, split_shortfall(records.labels, records.groups,
                                                            requested, train_idx,
                                                            records.classes))


def load_eval(config: DataConfig, classes: List[str]) -> ImageRecords:
    """Every image of the evaluation folder (or CSV, or npz split: test unless the path says
    ``file.npz:<split>``), labelled with the trained classes."""
    paths = config.dataset_path if isinstance(config.dataset_path, (list, tuple)) \
        else [config.dataset_path]
    if not paths or paths[0] is None:
        raise DatasetError("no dataset_path to evaluate on; call "
                           "Dataset_Params(dataset_path='.../test') and then Dataset().")
    csv = config.path_to_csv[0] if isinstance(config.path_to_csv, (list, tuple)) \
        else config.path_to_csv
    return _records(config, paths[0], csv, classes, EVAL_SPLIT)


def _locate(config: DataConfig):
    """``((train, csv), (val, csv) or None)``; an npz file without a split suffix gives its
    official train and val splits (a seeded split of train when it has no val)."""
    path = config.dataset_path
    if isinstance(path, (list, tuple)) and len(path) == 1:
        path = path[0]
    if not is_npz_path(path):
        return locate_train_val(path, config.path_to_csv)
    file, split = split_npz_path(path)
    if split is not None or config.path_to_csv:
        return (path, config.path_to_csv), None       # _records refuses a CSV with an npz
    has_val = VAL_SPLIT in npz_splits(file)
    return (f"{file}:{TRAIN_SPLIT}", None), ((f"{file}:{VAL_SPLIT}", None) if has_val else None)


def _records(config: DataConfig, images, csv, classes=None,
             default_split: str = EVAL_SPLIT) -> ImageRecords:
    """Records of a folder, a CSV plus its folder, or one split of an npz file."""
    if is_npz_path(images):
        if csv is not None:
            raise DatasetError(f"path_to_csv does not apply to the .npz file {images}: its "
                               "labels are inside it. Leave path_to_csv out.")
        records = read_npz_split(images, classes, config.class_names, default_split)
    else:
        records = load_records(images, csv, config.delimiter, classes, config.group_pattern,
                               config.group_column, config.file_column, config.label_column,
                               config.multi_label, config.label_delimiter)
    if config.multi_label and records.targets is None:   # one label per image, multi-label model
        records.targets = records.multi_hot()
    return records


def estimate_statistics(store, max_images: int = 500, seed: int = 0) -> tuple:
    """Channel mean and std of up to ``max_images`` training images (seeded sample)."""
    count = len(store.records)
    rng = np.random.default_rng(seed)
    chosen = rng.choice(count, size=min(count, max_images), replace=False)
    images = [img for img in (store.get(int(i)) for i in chosen) if img is not None]
    if not images:
        raise DatasetError("no decodable images to compute the dataset statistics from.")
    return channel_statistics(np.stack(images))


def sampled_image_sizes(records: ImageRecords, max_images: int = 200) -> dict:
    """``{"WxH mode": count}`` over an evenly spaced sample of ``records`` (files or rows),
    read from the headers (``decode.image_header``: EXIF-oriented sizes; a DICOM file as
    ``"WxH MONOCHROME2 12-bit DICOM"``); files whose header cannot be read count under
    ``"unreadable"``."""
    from .decode import image_header

    sizes = {}
    for index in range(0, len(records), max(1, len(records) // max_images)):
        if records.pixels is not None:
            row = records.pixels[index]
            mode = "L" if row.ndim == 2 or row.shape[2] == 1 else f"{row.shape[2]} channels"
            key = f"{row.shape[1]}x{row.shape[0]} {mode} (in memory)"
        else:
            try:
                header = image_header(records.paths[index])
                key = f"{header['width']}x{header['height']} {header['mode']}"
                if header["format"] == "DICOM":
                    key += f" {header['bits']}-bit DICOM"
            except Exception:  # noqa: BLE001  (empty, not an image, no pydicom: not a size)
                key = "unreadable"
        sizes[key] = sizes.get(key, 0) + 1
    return sizes
