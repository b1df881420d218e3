"""Offline generator of synthetic frontal (PA) chest radiographs.

A fresh machine has no real chest X-ray data set, so the demo and the test suite use
these images instead. Each image is drawn from a small parametric model of the chest:
a soft-tissue body, a bright mediastinum and spine, two dark lung fields with domed
diaphragms, posterior rib arcs, clavicles and a heart shadow that sits to the image
right (the patient's left). Pathology patterns are painted inside the lung fields.

Images are normalised so that the classes cannot be told apart by global mean
brightness; a classifier has to look at *where* the lungs are opaque.
"""
import pathlib

import numpy as np
from PIL import Image

DEFAULT_CLASSES = ("NORMAL", "PNEUMONIA")
MULTICLASS = ("COVID-19", "NORMAL", "PNEUMONIA_BACTERIAL", "PNEUMONIA_VIRAL")

_KINDS = {"PNEUMONIA": "bacteria", "PNEUMONIA_BACTERIAL": "bacteria",
          "PNEUMONIA_VIRAL": "virus", "COVID-19": "covid"}
_KNOWN = ("NORMAL",) + tuple(_KINDS)
_FORMATS = {"jpeg": ("JPEG", ".jpeg"), "jpg": ("JPEG", ".jpeg"), "png": ("PNG", ".png")}
#: a lesion mask holds the pixels whose drawn opacity exceeds this fraction of its maximum
MASK_FRACTION = 0.5
#: the folder under a data set's root holding the lesion masks (beside train/ and test/)
MASKS_DIR = "masks"


def _check_label(label):
    if label not in _KNOWN:
        raise ValueError(f"unknown class {label!r}; known classes: {', '.join(_KNOWN)}")


def _soft(z, edge):
    """Smooth step from 0 (z << 0) to 1 (z >> 0) with the given edge width."""
    return 1.0 / (1.0 + np.exp(-np.clip(z / edge, -30.0, 30.0)))


def _gauss(x, y, cx, cy, sx, sy):
    return np.exp(-0.5 * (((x - cx) / sx) ** 2 + ((y - cy) / sy) ** 2))


def _smooth_noise(rng, size, cells):
    """Zero-mean, unit-std noise field with features about ``size / cells`` px wide."""
    coarse = rng.standard_normal((cells, cells)).astype(np.float32)
    field = np.asarray(Image.fromarray(coarse).resize((size, size), Image.BICUBIC))
    return (field - field.mean()) / (field.std() + 1e-6)


def _blur(img, sigma):
    """Separable gaussian blur (edge padding); Pillow cannot blur float images."""
    radius = max(1, int(np.ceil(3 * sigma)))
    kernel = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma) ** 2)
    kernel = (kernel / kernel.sum()).astype(np.float32)
    for axis in (0, 1):
        padded = np.pad(img, [(radius, radius) if a == axis else (0, 0) for a in (0, 1)], "edge")
        n = img.shape[axis]
        img = sum(w * np.take(padded, np.arange(k, k + n), axis=axis)
                  for k, w in enumerate(kernel))
    return img


def _grid(rng, size):
    """Patient coordinates in [-1, 1] (x to image right, y down), rotated and shifted."""
    t = (np.arange(size, dtype=np.float32) + 0.5) / size * 2.0 - 1.0
    x, y = np.meshgrid(t, t)
    angle = np.deg2rad(rng.uniform(-4.0, 4.0))
    scale = rng.uniform(0.92, 1.08)
    x, y = x - rng.uniform(-0.05, 0.05), y - rng.uniform(-0.05, 0.05)
    c, s = np.cos(angle), np.sin(angle)
    return (c * x + s * y) / scale, (-s * x + c * y) / scale


def _lungs(rng, x, y):
    """Return (mask of both lungs, list of lung geometries (cx, cy, a, b))."""
    cy, b = rng.uniform(-0.04, 0.04), rng.uniform(0.56, 0.64)
    mask, geoms = np.zeros_like(x), []
    for side in (-1.0, 1.0):
        cx = side * rng.uniform(0.38, 0.45)
        a = rng.uniform(0.27, 0.33) * (0.93 if side > 0 else 1.0)
        # narrower towards the apex
        taper = 1.0 - 0.35 * np.clip(-(y - cy) / b, 0.0, 1.0) ** 2
        r = ((x - cx) / (a * taper)) ** 2 + ((y - cy) / b) ** 2
        dome = cy + b * rng.uniform(0.6, 0.7) + (0.03 * side) + 1.4 * (x - cx) ** 2
        lung = _soft(1.0 - r, 0.12) * _soft(dome - y, 0.02)
        mask = np.maximum(mask, lung)
        geoms.append((cx, cy, a, b))
    return mask, geoms


def _ribs(rng, x, y, lungs):
    """Posterior rib arcs plus clavicles, as an additive brightness field."""
    u = np.abs(x)[None]
    y0 = (np.linspace(-0.72, 0.3, 9) + rng.uniform(-0.04, 0.04) + rng.uniform(-0.015, 0.015, 9))
    y0 = y0[:, None, None]
    arcs = y[None] - (y0 - 0.12 * u + 0.65 * u ** 2)
    width = rng.uniform(0.035, 0.045)
    ribs = np.exp(-(arcs / width) ** 2).sum(0) * _soft(0.88 - np.abs(x), 0.05)
    clav = np.exp(-((y - (-0.68 - 0.12 * np.abs(x) + rng.uniform(-0.03, 0.03))) / 0.04) ** 2)
    clav = clav * _soft(np.abs(x) - 0.08, 0.02) * _soft(0.72 - np.abs(x), 0.04)
    return 0.06 * ribs * (0.15 + 0.85 * lungs) + 0.14 * clav


def _anatomy(rng, x, y):
    """Return (normal chest image in [0, 1], lung mask, lung geometries)."""
    lungs, geoms = _lungs(rng, x, y)
    neck = 1.0 + 0.45 * np.clip(-y - 0.7, 0.0, 1.0) / 0.3
    body = _soft(0.93 - np.abs(x) * neck, 0.05)
    img = 0.06 + 0.55 * body + 0.12 * np.exp(-(x / 0.2) ** 2)
    vertebrae = 0.8 + 0.2 * np.cos((y + rng.uniform(0, 1)) * np.pi * 11.0)
    img += 0.12 * np.exp(-(x / 0.065) ** 2) * vertebrae
    heart = _soft(1.0 - ((x - rng.uniform(0.1, 0.16)) / rng.uniform(0.3, 0.36)) ** 2
                  - ((y - rng.uniform(0.2, 0.26)) / rng.uniform(0.24, 0.28)) ** 2, 0.2)
    lungs = lungs * (1.0 - 0.85 * heart)
    hila = sum(_gauss(x, y, 0.45 * cx, cy, 0.09, 0.14) for cx, cy, _, _ in geoms)
    img += 0.05 * heart - rng.uniform(0.38, 0.44) * lungs * (1.0 - 0.35 * hila)
    img += _ribs(rng, x, y, lungs)
    return img, lungs, geoms


def _in_lung(rng, geoms, side=None, zone=(-0.6, 0.6)):
    """Random point inside one lung (left/right chosen at random unless given)."""
    cx, cy, a, b = geoms[rng.integers(2) if side is None else side]
    theta, r = rng.uniform(0, 2 * np.pi), np.sqrt(rng.uniform(0, 0.55))
    py = cy + b * np.clip(r * np.sin(theta), *zone)
    return cx + a * 0.8 * r * np.cos(theta), py


def _pneumonia(rng, x, y, geoms, size):
    """Patchy fluffy consolidations: several soft blobs, sometimes one lobar one."""
    field = np.zeros_like(x)
    for _ in range(rng.integers(4, 8)):
        px, py = _in_lung(rng, geoms)
        s = rng.uniform(0.1, 0.17)
        field += rng.uniform(0.6, 1.0) * _gauss(x, y, px, py, s, s * rng.uniform(0.8, 1.4))
    if rng.random() < 0.6:
        px, py = _in_lung(rng, geoms, zone=(0.0, 0.6))
        field += rng.uniform(0.8, 1.0) * _gauss(x, y, px, py, 0.2, 0.18)
    fluff = 0.75 + 0.25 * _smooth_noise(rng, size, 12)
    return rng.uniform(0.32, 0.42) * np.clip(field * fluff, 0.0, 1.0)


def _bacterial(rng, x, y, geoms, size):
    """Dense focal lobar consolidation, mostly in one lung."""
    side = int(rng.integers(2))
    px, py = _in_lung(rng, geoms, side=side, zone=(0.0, 0.6))
    sx, sy = rng.uniform(0.13, 0.2), rng.uniform(0.14, 0.22)
    field = np.clip(1.4 * _gauss(x, y, px, py, sx, sy), 0.0, 1.0)
    if rng.random() < 0.3:
        px, py = _in_lung(rng, geoms, side=1 - side)
        field += 0.4 * _gauss(x, y, px, py, 0.07, 0.07)
    return rng.uniform(0.3, 0.4) * field * (0.85 + 0.15 * _smooth_noise(rng, size, 16))


def _viral(rng, x, y, geoms, size):
    """Diffuse bilateral interstitial (reticular, streaky, faint) opacities."""
    n = _smooth_noise(rng, size, 14) + 0.5 * _smooth_noise(rng, size, 28)
    reticular = np.exp(-(n / 0.3) ** 2)
    hila = sum(_gauss(x, y, cx * 0.7, cy, 0.35, 0.45) for cx, cy, _, _ in geoms)
    haze = 0.4 + 0.6 * np.clip(hila, 0.0, 1.0)
    return rng.uniform(0.16, 0.24) * (0.5 * reticular + 0.35) * haze


def _covid(rng, x, y, geoms, size):
    """Bilateral, peripheral, lower-zone ground-glass opacities."""
    field = np.zeros_like(x)
    for cx, cy, a, b in geoms:
        periph = _soft(np.sign(cx) * (x - cx) + 0.1 * a, 0.08)
        lower = _soft(y - (cy + rng.uniform(-0.1, 0.15) * b), 0.1)
        field += periph * lower * rng.uniform(0.7, 1.0)
    glass = 0.75 + 0.25 * _smooth_noise(rng, size, 10)
    return rng.uniform(0.26, 0.34) * field * glass


_PATTERNS = {"PNEUMONIA": _pneumonia, "PNEUMONIA_BACTERIAL": _bacterial,
             "PNEUMONIA_VIRAL": _viral, "COVID-19": _covid}


def _film(rng, img, size):
    """Blur, gamma, film noise and a class-independent brightness/contrast normalisation."""
    img = _blur(np.clip(img, 0.0, 1.0), rng.uniform(0.3, 1.0) * size / 128)
    img = np.clip(img, 0.0, 1.0) ** rng.uniform(0.85, 1.15)
    img = img + rng.uniform(0.01, 0.03) * rng.standard_normal(img.shape).astype(np.float32)
    img = img + 0.02 * _smooth_noise(rng, size, 6)
    contrast = rng.uniform(0.9, 1.1)
    img = (img - img.mean()) * contrast + rng.normal(0.45, 0.04)
    return np.clip(np.round(img * 255.0), 0, 255).astype(np.uint8)


def render_chest_xray(rng: np.random.Generator, label: str, size: int = 128,
                      return_mask: bool = False, mask_fraction: float = MASK_FRACTION):
    """One synthetic frontal chest radiograph, and optionally where its lesion is.

    Args:
        rng: Source of randomness; the image is a pure function of its state.
        label: One of ``NORMAL``, ``PNEUMONIA``, ``PNEUMONIA_BACTERIAL``,
            ``PNEUMONIA_VIRAL`` or ``COVID-19``.
        size: Side length in pixels.
        return_mask: Also return the lesion mask. Asking for it draws nothing more from
            ``rng``: the image is the same either way.
        mask_fraction: The mask holds the pixels where the drawn opacity (lung field times
            the class's pattern) exceeds this fraction of its maximum; in (0, 1).

    Returns:
        A ``uint8`` grayscale array of shape ``(size, size)``; with ``return_mask``, the pair
        ``(image, mask)``, the mask a ``bool`` array of the same shape, all False for
        ``NORMAL``.

    Raises:
        ValueError: If ``label`` is not a known class or ``mask_fraction`` is not in (0, 1).

    Example:
        >>> img = render_chest_xray(np.random.default_rng(0), "PNEUMONIA", size=64)
        >>> img.shape, img.dtype
        ((64, 64), dtype('uint8'))
        >>> img2, mask = render_chest_xray(np.random.default_rng(0), "PNEUMONIA", 64,
        ...                                return_mask=True)
        >>> bool((img2 == img).all()), bool(mask.any())
        (True, True)
    """
    _check_label(label)
    if not 0.0 < float(mask_fraction) < 1.0:
        raise ValueError(f"mask_fraction must be in (0, 1), got {mask_fraction!r}")
    x, y = _grid(rng, size)
    img, lungs, geoms = _anatomy(rng, x, y)
    opacity = np.zeros_like(img)
    if label in _PATTERNS:
        opacity = lungs * _PATTERNS[label](rng, x, y, geoms, size)
        img = img + opacity
    image = _film(rng, img, size)
    if not return_mask:
        return image
    return image, lesion_mask(opacity, mask_fraction)


def lesion_mask(opacity: np.ndarray, fraction: float = MASK_FRACTION) -> np.ndarray:
    """Where ``opacity`` exceeds ``fraction`` of its maximum (all False when it is zero)."""
    top = float(np.max(opacity)) if opacity.size else 0.0
    if top <= 0.0:
        return np.zeros(opacity.shape, bool)
    return np.asarray(opacity > fraction * top)


def mask_path(image_path) -> pathlib.Path:
    """The lesion mask ``make_synthetic_chest_xrays(..., write_masks=True)`` wrote for an image
    ``<root>/<split>/<CLASS>/<name>``: ``<root>/masks/<split>/<CLASS>/<stem>.png`` (absent for
    NORMAL images).

    Example:
        >>> mask_path("data/test/PNEUMONIA/synthetic-person3_bacteria_41.jpeg").as_posix()
        'data/masks/test/PNEUMONIA/synthetic-person3_bacteria_41.png'
    """
    image_path = pathlib.Path(image_path)
    label, split, root = image_path.parent.name, image_path.parent.parent.name, \
        image_path.parent.parent.parent
    return root / MASKS_DIR / split / label / f"{image_path.stem}.png"


def read_mask(image_path) -> np.ndarray:
    """The lesion mask of an image written with ``write_masks=True``, as ``bool`` (H, W)."""
    with Image.open(mask_path(image_path)) as mask:
        return np.asarray(mask.convert("L")) > 127


def _names(label, count, start, patients, rng, ext):
    """File names for ``count`` images of one class; patients/images are running counters."""
    if label == "NORMAL":
        return [f"synthetic-IM-{start + i:04d}{ext}" for i in range(count)], patients
    names = []
    while len(names) < count:
        patients += 1
        for _ in range(min(int(rng.integers(1, 4)), count - len(names))):
            names.append(f"synthetic-person{patients}_{_KINDS[label]}_{start + len(names)}{ext}")
    return names, patients


def make_synthetic_chest_xrays(out_dir, num_train_per_class=60, num_test_per_class=20,
                               image_size=128, classes=DEFAULT_CLASSES, seed=0,
                               image_format="jpeg", write_masks=False) -> pathlib.Path:
    """Write a small synthetic chest X-ray data set in the Kermany folder layout.

    Files go to ``out_dir/train/<CLASS>/`` and ``out_dir/test/<CLASS>/``. Normal images
    are named ``synthetic-IM-0001.jpeg``; pneumonia-like ones
    ``synthetic-person{patient}_{bacteria|virus|covid}_{k}.jpeg`` with 1 to 3 images per
    patient and no patient in both splits. Existing ``synthetic-*`` files in those class
    folders are replaced, so the same seed always yields byte-identical files.

    With ``write_masks``, each abnormal image's lesion mask (``render_chest_xray``'s, where
    the drawn opacity exceeds ``MASK_FRACTION`` of its maximum) is written as a 0 / 255 PNG to
    ``out_dir/masks/<split>/<CLASS>/<image stem>.png`` (``mask_path``): outside the class
    folders, so the data set reads the same, and none for NORMAL. The images are the same
    with or without masks.

    Args:
        out_dir: Root folder (created with parents if missing).
        num_train_per_class: Training images per class.
        num_test_per_class: Test images per class.
        image_size: Side length in pixels.
        classes: Class names, e.g. ``DEFAULT_CLASSES`` or ``MULTICLASS``.
        seed: Seed of the generator.
        image_format: ``"jpeg"`` (quality 92) or ``"png"``.
        write_masks: Also write the lesion masks (for the pointing game).

    Returns:
        ``pathlib.Path(out_dir)``.

    Raises:
        ValueError: On an unknown class, an unknown format or negative counts.

    Example:
        >>> root = make_synthetic_chest_xrays("/tmp/cxr", 4, 2, image_size=64, write_masks=True)
        >>> sorted(p.name for p in (root / "train").iterdir())
        ['NORMAL', 'PNEUMONIA']
        >>> read_mask(next((root / "test" / "PNEUMONIA").iterdir())).shape
        (64, 64)
    """
    classes = tuple(classes)
    for label in classes:
        _check_label(label)
    if not classes or len(set(classes)) != len(classes):
        raise ValueError(f"classes must be non-empty and unique, got {classes!r}")
    if str(image_format).lower() not in _FORMATS:
        raise ValueError(f"image_format must be one of {sorted(_FORMATS)}, got {image_format!r}")
    if min(num_train_per_class, num_test_per_class) < 0:
        raise ValueError("image counts must be non-negative")
    fmt, ext = _FORMATS[str(image_format).lower()]
    root, patients = pathlib.Path(out_dir), 0
    for c, label in enumerate(classes):
        start = 1
        for s, (split, count) in enumerate((("train", num_train_per_class),
                                            ("test", num_test_per_class))):
            folder = _fresh_folder(root / split / label)
            masks = _mask_folder(root / MASKS_DIR / split / label,
                                 write_masks and label != "NORMAL")
            names, patients = _names(label, count, start, patients,
                                     np.random.default_rng([seed, c, s, 999_999]), ext)
            for i, name in enumerate(names):
                arr, mask = render_chest_xray(np.random.default_rng([seed, c, s, i]), label,
                                              image_size, return_mask=True)
                options = {"quality": 92} if fmt == "JPEG" else {}
                Image.fromarray(arr).save(folder / name, fmt, **options)
                if masks is not None:
                    Image.fromarray(mask.astype(np.uint8) * 255).save(
                        masks / f"{pathlib.Path(name).stem}.png", "PNG")
            start += count
    return root


def _mask_folder(folder: pathlib.Path, write: bool):
    """The fresh mask folder when masks are written, else None (stale masks removed)."""
    if write:
        return _fresh_folder(folder)
    if folder.is_dir():
        _fresh_folder(folder)
    return None


def _fresh_folder(folder: pathlib.Path) -> pathlib.Path:
    """``folder``, created, without the ``synthetic-*`` files an earlier run left there."""
    folder.mkdir(parents=True, exist_ok=True)
    for stale in folder.glob("synthetic-*"):
        stale.unlink()
    return folder
