"""Per-image features that say nothing about the lungs, for the shortcut audit (``audit.py``).

Three groups of columns, one row per image:

- ``size/format``: width, height, aspect ratio, megapixels, channels, colour mode, bit depth,
  file format, file size and bytes per pixel (the compression ratio). File size partly reflects
  the image's content (how well it compresses), so a leak carried by file size alone is a
  weaker sign of a shortcut than one carried by dimensions or colour mode.
- ``dicom``: Manufacturer, Modality, PhotometricInterpretation, ViewPosition (categories),
  BitsStored and PixelSpacing (numbers), present for DICOM files only (found by extension or
  by content).
- ``border``: the image in grayscale, resized (stretched) to ``SMALL`` x ``SMALL`` pixels; the
  mean and standard deviation of its four border strips and four corner squares, each
  ``EDGE`` pixels wide, where burned-in markers, text and collimation edges sit.

In-memory images (an npz row) have no file: size and format are constant there and the
border statistics carry the audit. Nothing here imports a deep-learning framework; Pillow,
numpy, pandas and (for DICOM) pydicom only.

Example:
    >>> table = record_features(records)          # records: data.ImageRecords
    >>> table[["width", "height", "corner_tl_mean"]].head()
"""
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np

from .data.decode import image_from_array, image_header, load_image
from .data.dicom import DicomSupportError, read_header as read_dicom_header

#: side of the grayscale thumbnail the border statistics are read from, and the width of the
#: strips and corners (1/8 of the side: the outer band where markers and text are printed)
SMALL, EDGE = 64, 8
SIZE_FORMAT, DICOM, BORDER = "size/format", "dicom", "border"
#: categorical columns (one-hot encoded by the audit's classifier); every other column is numeric
CATEGORICAL = ("mode", "format", "dicom_manufacturer", "dicom_modality", "dicom_photometric",
               "dicom_view_position")
_REGION_NAMES = ("border_top", "border_bottom", "border_left", "border_right", "corner_tl",
                 "corner_tr", "corner_bl", "corner_br")


def _regions(edge: int) -> Dict[str, tuple]:
    """(rows, columns) slices of the four strips and four corners, ``edge`` pixels wide."""
    near, far, every = slice(0, edge), slice(-edge, None), slice(None)
    return dict(zip(_REGION_NAMES, [(near, every), (far, every), (every, near), (every, far),
                                    (near, near), (near, far), (far, near), (far, far)]))


def feature_group(column: str) -> str:
    """The group a feature column belongs to: ``size/format``, ``dicom`` or ``border``."""
    if column.startswith(("border_", "corner_")):
        return BORDER
    return DICOM if column.startswith("dicom_") else SIZE_FORMAT


def border_statistics(gray: np.ndarray, edge: int = EDGE) -> Dict[str, float]:
    """Mean and std of the border strips and corners (``edge`` pixels wide) of a ``SMALL`` x
    ``SMALL`` grayscale image.

    Example:
        >>> border_statistics(np.zeros((64, 64)))["corner_tl_mean"]
        0.0
    """
    gray = np.asarray(gray, dtype=np.float64)
    if gray.ndim == 3:
        gray = gray[:, :, 0]
    stats = {}
    for name, region in _regions(edge).items():
        values = gray[region]
        stats[f"{name}_mean"], stats[f"{name}_std"] = float(values.mean()), float(values.std())
    return stats


def _shape_features(width, height, channels, mode, bits, fmt, file_size) -> Dict:
    pixels = float(width) * float(height)
    return {"width": float(width), "height": float(height),
            "aspect_ratio": float(width) / float(height), "megapixels": pixels / 1e6,
            "channels": float(channels), "mode": str(mode), "bit_depth": float(bits),
            "format": str(fmt), "file_size_kb": np.nan if file_size is None else file_size / 1e3,
            "bytes_per_pixel": np.nan if file_size is None else file_size / pixels}


def _dicom_features(path: Path) -> Dict:
    """The DICOM tags of the audit, read from the header only."""
    ds = read_dicom_header(path)
    spacing = getattr(ds, "PixelSpacing", None)
    bits = getattr(ds, "BitsStored", None)
    return dict(
        dicom_manufacturer=str(getattr(ds, "Manufacturer", "") or "missing"),
        dicom_modality=str(getattr(ds, "Modality", "") or "missing"),
        dicom_photometric=str(getattr(ds, "PhotometricInterpretation", "") or "missing"),
        dicom_view_position=str(getattr(ds, "ViewPosition", "") or "missing"),
        dicom_bits_stored=np.nan if bits is None else float(bits),
        dicom_pixel_spacing=float(spacing[0]) if spacing else np.nan)


def file_features(path, edge: int = EDGE) -> Dict:
    """Metadata and border statistics of one image file (its size EXIF-oriented, a DICOM's
    from its header, whatever the file's name); an unreadable file gives NaN border
    statistics and the format ``unreadable`` (a corrupt file is metadata too)."""
    path = Path(path)
    try:
        header = image_header(path)
        bits = header["bits"]
        features = _shape_features(header["width"], header["height"] or 1, header["channels"],
                                   header["mode"], np.nan if bits is None else bits,
                                   header["format"], path.stat().st_size)
        if header["format"] == "DICOM":
            features.update(_dicom_features(path))
        features.update(border_statistics(load_image(path, SMALL, channels=1), edge))
    except DicomSupportError:
        raise                      # the installation's fault (pydicom or a codec missing)
    except Exception:  # noqa: BLE001  (whatever a decoder raises, the file is unreadable)
        features = _shape_features(0, 1, 0, "unreadable", 0, "unreadable", None)
        features.update({f"{name}_{stat}": np.nan for name in _REGION_NAMES
                         for stat in ("mean", "std")})
    return features


def array_features(pixels: np.ndarray, edge: int = EDGE) -> Dict:
    """Metadata and border statistics of one in-memory image (an npz row)."""
    pixels = np.asarray(pixels)
    channels = 1 if pixels.ndim == 2 else pixels.shape[2]
    mode = {1: "L", 3: "RGB", 4: "RGBA"}.get(channels, f"{channels} channels")
    features = _shape_features(pixels.shape[1], pixels.shape[0], channels, mode,
                               pixels.dtype.itemsize * 8, "array", None)
    features.update(border_statistics(image_from_array(pixels, SMALL, channels=1), edge))
    return features


def record_features(records, edge: int = EDGE, workers: Optional[int] = None):
    """A pandas DataFrame of the features of every image of ``records`` (``ImageRecords``),
    row for row, read with a few threads (Pillow decodes outside the GIL); ``edge``: the width
    of the border strips and corners on the ``SMALL``-pixel thumbnail."""
    from functools import partial

    import os

    import pandas as pd

    if records.pixels is not None:
        rows: List[Dict] = [array_features(row, edge) for row in records.pixels]
    else:
        workers = workers or min(8, (os.cpu_count() or 1) * 2)
        with ThreadPoolExecutor(workers) as pool:
            rows = list(pool.map(partial(file_features, edge=edge), records.paths))
    table = pd.DataFrame(rows)
    for column in CATEGORICAL:
        if column in table:
            table[column] = table[column].fillna("missing").astype(str)
    return table
