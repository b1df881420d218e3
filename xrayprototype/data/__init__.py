"""Framework-free data handling: sources, splits, decoding, augmentation and batches."""
from .dataset import TrainValData, estimate_statistics, load_eval, load_train_val
from .decode import CorruptImageError, load_image
from .loader import Batch, BatchLoader, ImageStore, balanced_sample_weights
from .sources import ImageRecords, load_records, scan_class_folders
from .split import split_indices
from .transforms import IMAGENET_MEAN, IMAGENET_STD, Normalizer, augment

__all__ = ["Batch", "BatchLoader", "CorruptImageError", "IMAGENET_MEAN", "IMAGENET_STD",
           "ImageRecords", "ImageStore", "Normalizer", "TrainValData", "augment",
           "balanced_sample_weights", "estimate_statistics", "load_eval", "load_image",
           "load_records", "load_train_val", "scan_class_folders", "split_indices"]
