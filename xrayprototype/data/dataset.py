"""Assemble training, validation and evaluation record sets from a DataConfig."""
from dataclasses import dataclass
from typing import List

import numpy as np

from ..config import DataConfig
from ..errors import DatasetError
from .sources import ImageRecords, load_records, locate_train_val
from .split import split_indices
from .transforms import channel_statistics


@dataclass
class TrainValData:
    train: ImageRecords
    val: ImageRecords
    classes: List[str]
    val_source: str          # "folder" | "split"

    def summary(self) -> dict:
        return {"classes": self.classes, "num_train": len(self.train), "num_val": len(self.val),
                "train_class_counts": self.train.class_counts(),
                "val_class_counts": self.val.class_counts(), "val_source": self.val_source,
                "train_origin": self.train.origin, "val_origin": self.val.origin,
                "num_train_patients": len(set(self.train.groups)),
                "num_val_patients": len(set(self.val.groups))}


def load_train_val(config: DataConfig, seed: int = 0) -> TrainValData:
    """The training and validation records: a validation folder when there is one, else a
    seeded, stratified (and patient-grouped) split of the training folder.

    Example:
        >>> data = load_train_val(DataConfig(dataset_path="chest_xray/train"))
        >>> data.summary()["num_val"]
    """
    (train_images, train_csv), val_pair = locate_train_val(config.dataset_path, config.path_to_csv)
    options = dict(delimiter=config.delimiter, group_pattern=config.group_pattern,
                   group_column=config.group_column)
    records = load_records(train_images, train_csv, **options)
    if val_pair is not None:
        val = load_records(val_pair[0], val_pair[1], classes=records.classes, **options)
        return TrainValData(records, val, records.classes, "folder")
    train_idx, val_idx = split_indices(records.labels, records.groups,
                                       1.0 - float(config.trainval_split), seed)
    return TrainValData(records.subset(train_idx), records.subset(val_idx),
                        records.classes, "split")


def load_eval(config: DataConfig, classes: List[str]) -> ImageRecords:
    """Every image of the evaluation folder (or CSV), labelled with the trained classes."""
    paths = config.dataset_path if isinstance(config.dataset_path, (list, tuple)) \
        else [config.dataset_path]
    if not paths or paths[0] is None:
        raise DatasetError("no dataset_path to evaluate on; call "
                           "Dataset_Params(dataset_path='.../test') and then Dataset().")
    csv = config.path_to_csv[0] if isinstance(config.path_to_csv, (list, tuple)) \
        else config.path_to_csv
    return load_records(paths[0], csv, config.delimiter, classes, config.group_pattern,
                        config.group_column)


def estimate_statistics(store, max_images: int = 500, seed: int = 0) -> tuple:
    """Channel mean and std of up to ``max_images`` training images (seeded sample)."""
    count = len(store.records)
    rng = np.random.default_rng(seed)
    chosen = rng.choice(count, size=min(count, max_images), replace=False)
    images = [img for img in (store.get(int(i)) for i in chosen) if img is not None]
    if not images:
        raise DatasetError("no decodable images to compute the dataset statistics from.")
    return channel_statistics(np.stack(images))
