"""Framework-free data handling: sources (folders, CSV, npz), splits, decoding, augmentation
and batches."""
from .dataset import TrainValData, estimate_statistics, load_eval, load_train_val
from .decode import CorruptImageError, image_from_array, load_image
from .loader import Batch, BatchLoader, ImageStore, balanced_sample_weights
from .npz import read_npz_split
from .sources import ImageRecords, load_records, scan_class_folders
from .split import split_indices
from .transforms import IMAGENET_MEAN, IMAGENET_STD, Normalizer, augment

__all__ = ["Batch", "BatchLoader", "CorruptImageError", "IMAGENET_MEAN", "IMAGENET_STD",
           "ImageRecords", "ImageStore", "Normalizer", "TrainValData", "augment",
           "balanced_sample_weights", "estimate_statistics", "image_from_array", "load_eval",
           "load_image", "load_records", "load_train_val", "read_npz_split",
           "scan_class_folders", "split_indices"]
