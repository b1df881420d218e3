"""Decode any supported image file to a uint8 array of the channels the model expects.

Handles 8-bit grayscale, RGB, RGBA / LA (composited on black), palette images, 16-bit and
32-bit integer or float grayscale (PNG / TIFF, rescaled by their own range), EXIF orientation
(the upright image, ``ImageOps.exif_transpose``), and DICOM (``dicom.py``: modality LUT, VOI
LUT or window, MONOCHROME1; recognised by extension or by content). The result is resized
once, here, with Pillow.
"""
from pathlib import Path
from typing import Union

import numpy as np
from PIL import ExifTags, Image, ImageOps

from ..errors import DatasetError
from .dicom import display_pixels, read_header as read_dicom_header
from .sources import is_dicom

RESIZE_MODES = ("stretch", "center_crop")
#: bits per sample of Pillow's modes (8 for the others)
MODE_BITS = {"1": 1, "I;16": 16, "I;16B": 16, "I;16L": 16, "I;16N": 16, "I": 32, "F": 32}
#: EXIF orientations that swap width and height (transpose, 90 / 270 degree turns)
_ROTATED_90 = (5, 6, 7, 8)


class CorruptImageError(DatasetError):
    """An image file could not be decoded."""


def _to_8bit(image: Image.Image) -> Image.Image:
    """Rescale high-bit-depth grayscale (I;16, I, F) to 8 bits by the image's own range."""
    array = np.asarray(image, dtype=np.float64)
    low, high = np.percentile(array, (0.5, 99.5)) if array.size > 64 else (array.min(), array.max())
    if high <= low:
        high = low + 1.0
    scaled = np.clip((array - low) / (high - low), 0.0, 1.0) * 255.0
    return Image.fromarray(scaled.round().astype(np.uint8), mode="L")


def _scale_range_to_8bit(values: np.ndarray, low: float, high: float) -> Image.Image:
    """``low .. high`` linearly to ``0 .. 255`` (a VOI step's known output range)."""
    scaled = (values - low) * (255.0 / max(high - low, 1e-12))
    return Image.fromarray(np.rint(np.clip(scaled, 0.0, 255.0)).astype(np.uint8), mode="L")


def _read_dicom(path: Path) -> Image.Image:
    """The first frame as :func:`dicom.display_pixels` gives it, then to 8 bits: the VOI
    step's output range linearly to 0..255 when a window or VOI LUT applied; without one,
    the robust percentile stretch of ``_to_8bit`` (0.5th to 99.5th percentile)."""
    pixels = display_pixels(path)
    if pixels.values.ndim == 3:
        return Image.fromarray(pixels.values, mode="RGB")
    if pixels.output_range is not None:
        return _scale_range_to_8bit(pixels.values, *pixels.output_range)
    return _to_8bit(Image.fromarray(pixels.values.astype(np.float32), mode="F"))


def _open(path: Path, size_hint: int) -> Image.Image:
    if is_dicom(path):
        return _read_dicom(path)
    image = Image.open(path)
    if image.format == "JPEG" and size_hint:
        image.draft(image.mode, (size_hint, size_hint))  # decode at a reduced scale: faster
    image.load()
    ImageOps.exif_transpose(image, in_place=True)  # after draft and load: the stored frame
    return image


def image_header(path: Union[str, Path]) -> dict:
    """``{"width", "height", "channels", "mode", "bits", "format"}`` of an image file from
    its header, without decoding the pixels: the size a decoded image has (EXIF-oriented for
    JPEG / PNG / TIFF / WebP; a DICOM's Columns x Rows, its mode the Photometric
    Interpretation, its bits the Bits Stored).

    Example:
        >>> image_header("chest.jpeg")["width"]
        2090
    """
    path = Path(path)
    if is_dicom(path):
        header = read_dicom_header(path)
        photometric = str(header.get("PhotometricInterpretation", "") or "missing").strip()
        return {"width": int(header.get("Columns", 0) or 0),
                "height": int(header.get("Rows", 0) or 0),
                "channels": int(header.get("SamplesPerPixel", 1) or 1), "mode": photometric,
                "bits": header.get("BitsStored"), "format": "DICOM"}
    with Image.open(path) as image:
        width, height = image.size
        if image.getexif().get(ExifTags.Base.Orientation, 1) in _ROTATED_90:
            width, height = height, width
        return {"width": width, "height": height, "channels": len(image.getbands()),
                "mode": image.mode, "bits": MODE_BITS.get(image.mode, 8),
                "format": image.format or path.suffix.lstrip(".")}


def _to_channels(image: Image.Image, channels: int) -> Image.Image:
    if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        image = _to_8bit(image)
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (0, 0, 0, 255))
        image = Image.alpha_composite(background, rgba)
    if channels == 1:
        return image.convert("L")
    return image.convert("RGB")


def resize(image: Image.Image, size: int, mode: str = "stretch") -> Image.Image:
    """Resize to ``size`` x ``size``: stretch, or shorter side to size then center crop."""
    if mode == "center_crop":
        return ImageOps.fit(image, (size, size), method=Image.BILINEAR)
    if image.size == (size, size):
        return image
    return image.resize((size, size), Image.BILINEAR, reducing_gap=3.0)


def load_image(path: Union[str, Path], size: int, channels: int = 3,
               resize_mode: str = "stretch") -> np.ndarray:
    """Decode ``path`` to a ``(size, size, channels)`` uint8 array.

    Example:
        >>> load_image("chest.jpeg", 224).shape
        (224, 224, 3)

    Raises:
        CorruptImageError: the file cannot be decoded, whatever the decoder raised
            (truncated, empty, not an image, a DICOM without pixel data or with a codec that
            is not installed, over Pillow's pixel limit, too large for memory ...); the
            message names the file and the exception.
    """
    path = Path(path)
    try:
        image = _to_channels(_open(path, size), channels)
        image = resize(image, size, resize_mode)
    except DatasetError:
        raise                  # the installation's fault (pydicom missing), not the file's
    except Exception as err:  # noqa: BLE001  (any decoder's failure is this file's, not the run's)
        reason = "the file is empty (0 bytes)" if _is_empty(path) else describe_failure(err)
        raise CorruptImageError(f"cannot decode image {path}: {reason}") from None
    return _as_array(image)


def _is_empty(path: Path) -> bool:
    try:
        return path.stat().st_size == 0
    except OSError:
        return False


def describe_failure(err: BaseException) -> str:
    """One line naming the exception type and what it says, with a hint for the common ones."""
    text = " ".join(str(err).split())[:300]
    name = type(err).__name__
    if isinstance(err, Image.DecompressionBombError):
        hint = ("; the image has more pixels than Pillow's safety limit (PIL.Image."
                "MAX_IMAGE_PIXELS); if you trust the file, raise that limit or shrink the image")
    elif isinstance(err, MemoryError):
        hint = "; the image is too large to decode in memory"
    else:
        hint = ""
    return f"{name}: {text}{hint}" if text else f"{name}{hint}"


def image_from_array(pixels: np.ndarray, size: int, channels: int = 3,
                     resize_mode: str = "stretch") -> np.ndarray:
    """An in-memory image (``(H, W)`` or ``(H, W, C)``, e.g. an npz row) converted and resized
    exactly as a decoded file is: a ``(size, size, channels)`` uint8 array.

    Example:
        >>> image_from_array(np.zeros((28, 28), np.uint8), 64).shape
        (64, 64, 3)
    """
    pixels = np.asarray(pixels)
    if pixels.ndim == 3 and pixels.shape[2] == 1:
        pixels = pixels[:, :, 0]
    if pixels.dtype != np.uint8 and pixels.ndim == 2:
        pixels = pixels.astype(np.float32)          # rescaled by its own range, like 16-bit files
    image = _to_channels(Image.fromarray(pixels), channels)
    return _as_array(resize(image, size, resize_mode))


def _as_array(image: Image.Image) -> np.ndarray:
    array = np.asarray(image, dtype=np.uint8)
    return array[:, :, None] if array.ndim == 2 else array
