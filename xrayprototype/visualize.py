"""Pictures of a network: its convolution kernels and the feature maps of one image as PNG
grids, and the network exported to a file that Netron (https://netron.app) draws, served on
this machine by the ``netron`` package.

The grids are drawn here once, with numpy and matplotlib's colour maps; a backend only
returns numpy arrays (``Backend.conv_layers`` / ``conv_kernels`` / ``conv_feature_maps``) and
writes its own model file (``Backend.export_model``). A grid is one tile per output channel,
row by row, ``ceil(sqrt(n))`` tiles a row, separated (and its empty cells filled) by
``SEPARATOR``, a colour no tile uses; tiles are enlarged (nearest neighbour) to at least
``MIN_TILE`` pixels.

Example:
    >>> grid = tile_grid([np.zeros((4, 4, 3), np.uint8)] * 5)
    >>> grid.shape          # 3 x 2 cells of 32 px, 2 px gaps
    (70, 104, 3)
"""
import logging
import math
import re
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Union

import numpy as np

from .errors import BackendUnavailableError, ConfigError, ExperimentError, unknown_name

#: folders: kernels and feature maps under the experiment's logs/, the export beside models/
KERNELS_DIR, FEATURE_MAPS_DIR, EXPORT_DIR = "kernels", "feature_maps", "netron"
#: the colour between tiles and in empty cells: magenta, which no grey or viridis tile holds
SEPARATOR = (255, 0, 255)
GAP = 2
MIN_TILE = 32
#: Netron serves on this machine only
NETRON_HOST = "127.0.0.1"
NETRON_INSTALL = "pip install -c constraints.txt 'xrayprototype[netron]'"


# ---------------------------------------------------------------------------- grids
def _enlarge(tile: np.ndarray) -> np.ndarray:
    factor = max(1, math.ceil(MIN_TILE / max(tile.shape[:2])))
    return np.repeat(np.repeat(tile, factor, axis=0), factor, axis=1)


def tile_grid(tiles: Sequence[np.ndarray]) -> np.ndarray:
    """uint8 (H, W, 3) image of equally shaped RGB ``tiles``, ``ceil(sqrt(n))`` a row, with
    ``GAP`` pixels of ``SEPARATOR`` around each cell."""
    if not tiles:
        raise ConfigError("nothing to draw: no tile.")
    tiles = [_enlarge(t) for t in tiles]
    height, width = tiles[0].shape[:2]
    columns = math.ceil(math.sqrt(len(tiles)))
    rows = math.ceil(len(tiles) / columns)
    grid = np.empty((GAP + rows * (height + GAP), GAP + columns * (width + GAP), 3), np.uint8)
    grid[:] = SEPARATOR
    for k, tile in enumerate(tiles):
        top, left = GAP + (k // columns) * (height + GAP), GAP + (k % columns) * (width + GAP)
        grid[top:top + height, left:left + width] = tile
    return grid


def _scaled(values: np.ndarray, axes) -> np.ndarray:
    """``values`` min-max scaled to 0..1 over ``axes`` (a constant block becomes 0)."""
    values = np.asarray(values, np.float64)
    low = values.min(axis=axes, keepdims=True)
    span = values.max(axis=axes, keepdims=True) - low
    return (values - low) / np.where(span > 0, span, 1.0)


def kernel_tiles(weights: np.ndarray, max_tiles: int) -> List[np.ndarray]:
    """RGB tiles of a convolution's kernels (out, in, kh, kw), the first ``max_tiles``
    output channels: a kernel with 3 input channels in colour (the first layer sees RGB),
    any other as the grey mean over its input channels; one contrast for the whole layer."""
    weights = np.asarray(weights, np.float64)[:max_tiles]
    if weights.ndim != 4:
        raise ExperimentError(f"a convolution's kernels are 4-D (out, in, h, w); got "
                              f"{weights.shape}.")
    if weights.shape[1] == 3:
        pixels = weights.transpose(0, 2, 3, 1)
    else:
        pixels = np.repeat(weights.mean(axis=1)[..., None], 3, axis=-1)
    pixels = np.rint(255 * _scaled(pixels, None)).astype(np.uint8)
    return [np.ascontiguousarray(tile) for tile in pixels]


def map_tiles(maps: np.ndarray, max_tiles: int) -> List[np.ndarray]:
    """RGB tiles (viridis) of one image's feature maps (C, h, w), the first ``max_tiles``
    channels, each with its own contrast."""
    from matplotlib import colormaps

    maps = _scaled(np.asarray(maps)[:max_tiles], (1, 2))
    rgb = colormaps["viridis"](maps)[..., :3]
    return list(np.rint(255 * rgb).astype(np.uint8))


def save_png(pixels: np.ndarray, path: Path) -> str:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)
    return str(path)


def _file_name(index: int, layer: str) -> str:
    return f"{index:03d}_{re.sub(r'[^A-Za-z0-9_.-]+', '_', layer)}.png"


# ---------------------------------------------------------------------------- the model
def model_in_memory(experiment):
    """The experiment's backend with a model: in eval_infer mode the best saved weights, in
    resume mode the interrupted run's last epoch, in train mode the model as it is now (built
    from the settings, data set read first, when nothing was built yet)."""
    backend = experiment.open_backend()
    if not backend.capabilities().visualization:
        raise ConfigError(backend.cannot_visualize())
    if experiment.mode == "eval_infer":
        experiment.ready_for_prediction()
    elif not experiment.model_ready:
        if experiment.mode == "resume":
            experiment.build_model(for_inference=True)
            experiment.load_weights("resume")
        else:
            if experiment.data is None:
                experiment.load_data()
            experiment.build_model()
    return experiment.backend


def chosen_layers(backend, layers: Union[None, str, Sequence[str]]) -> List[str]:
    """The convolution layers asked for (None: all), checked against ``conv_layers()``."""
    names = backend.conv_layers()
    if not names:
        raise ConfigError("this model has no convolution layer to draw; choose a "
                          "convolutional model, e.g. 'resnet18'.")
    if layers is None:
        return names
    layers = [layers] if isinstance(layers, str) else list(layers)
    for layer in layers:
        if layer not in names:
            raise unknown_name("convolution layer", layer, names,
                               hint=f"the first is '{names[0]}'.")
    return layers


# ---------------------------------------------------------------------------- kernels, maps
def write_kernel_grids(experiment, layers=None, max_tiles: int = 64) -> Dict[str, str]:
    """One PNG grid of kernels per convolution layer under ``logs/kernels/``; returns
    ``{layer: png path}`` in the network's order."""
    backend = model_in_memory(experiment)
    chosen = chosen_layers(backend, layers)
    folder = experiment.paths.logs / KERNELS_DIR
    written = {}
    for name, weights in backend.conv_kernels(chosen):
        index = chosen.index(name)
        written[name] = save_png(tile_grid(kernel_tiles(weights, max_tiles)),
                                 folder / _file_name(index, name))
    return written


def image_batch(experiment, image_path: str) -> np.ndarray:
    """One image as the model sees it: decoded, resized and normalised by the core."""
    from .data.sources import ImageRecords

    if not Path(image_path).is_file():
        raise ConfigError(f"image '{image_path}' does not exist; give the path of an image "
                          "file.")
    records = ImageRecords([str(image_path)], np.zeros(1, np.int64), experiment.classes)
    try:
        batch = next(iter(experiment.loader("visualize", records, on_corrupt="error").epoch(0)))
    finally:
        experiment.stores.drop("visualize")
    return batch.images


def write_feature_map_grids(experiment, image_path: str, layers=None,
                            max_tiles: int = 64) -> Dict[str, str]:
    """One PNG grid of ``image_path``'s feature maps per convolution layer under
    ``logs/feature_maps/<image>/``; returns ``{layer: png path}`` in the network's order."""
    from .explain import file_stem

    backend = model_in_memory(experiment)
    chosen = chosen_layers(backend, layers)
    images = image_batch(experiment, image_path)
    folder = experiment.paths.logs / FEATURE_MAPS_DIR / file_stem(image_path)
    written = {}
    for name, maps in backend.conv_feature_maps(images, chosen):
        written[name] = save_png(tile_grid(map_tiles(maps[0], max_tiles)),
                                 folder / _file_name(chosen.index(name), name))
    return written


# ---------------------------------------------------------------------------- Netron
def export_for_netron(experiment, data_shape: Optional[Sequence[int]] = None) -> Path:
    """Export the model in memory (see ``model_in_memory``) for an input of ``data_shape``
    (channels, height, width; default 3 x input_size x input_size) under the experiment's
    ``netron/`` folder; returns the file Netron opens."""
    backend = model_in_memory(experiment)
    size = experiment.config.data.input_size
    channels, height, width = data_shape or (3, size, size)
    accepted = backend.capabilities().input_channels
    if channels not in accepted and width in accepted:
        raise ConfigError(f"data_shape is (channels, height, width), as in Monk; "
                          f"{tuple(data_shape)} looks channels-last: give "
                          f"data_shape=({width}, {channels}, {height}).")
    if channels not in accepted:
        raise ConfigError(f"data_shape has {channels} channels; the models of backend "
                          f"'{experiment.backend_name}' take {accepted} (grayscale images are "
                          f"replicated to RGB); give e.g. data_shape=(3, {height}, {width}).")
    folder = experiment.paths.dir / EXPORT_DIR
    folder.mkdir(parents=True, exist_ok=True)
    return Path(backend.export_model(folder / "model", (channels, height, width)))


def _stop_own_server(netron, address, wait_s: float = 5.0) -> None:
    """Stop this process's netron server at ``address`` and wait until its port is free."""
    if not netron.status(address):
        return
    netron.stop(address)
    deadline = time.monotonic() + wait_s
    while netron.status(address) and time.monotonic() < deadline:
        time.sleep(0.05)


def serve_with_netron(file: Path, port: Optional[int] = None, browse: bool = False) -> Dict:
    """Serve ``file`` with the netron package on ``NETRON_HOST`` (``port`` None: netron's
    first free port of 8080, 8081, ...; this process's own server on ``port`` is replaced);
    returns ``{"url", "address"}``. Stop it with
    ``netron.stop(address)``."""
    try:
        import netron
    except ImportError as err:
        raise BackendUnavailableError(
            f"Visualize_With_Netron needs the netron package, which is not installed; install "
            f"it with: {NETRON_INSTALL}. The exported model is at {file} (any Netron, e.g. "
            "https://netron.app, opens it).") from err
    if port is not None:
        _stop_own_server(netron, (NETRON_HOST, port))   # a notebook cell run again
    root = logging.getLogger()
    quiet = logging.NullHandler()     # netron would otherwise configure the root logger
    root.addHandler(quiet)
    try:
        address = netron.start(str(file), address=(NETRON_HOST, port), browse=browse)
    except OSError as err:
        raise ConfigError(f"netron cannot serve on {NETRON_HOST}:{port} ({err}); give another "
                          "port, or port=None for a free one.") from err
    finally:
        root.removeHandler(quiet)
    return {"url": f"http://{address[0]}:{address[1]}", "address": tuple(address)}
