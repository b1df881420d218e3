"""Visualize_Kernels, Visualize_Feature_Maps and Visualize_With_Netron on every installed
backend, as Monk's tutorials call them: a resnet18 trained one epoch at 32 px on synthetic
chest X-rays (each backend in its own process), then, in train mode, the kernel grids (one a
convolution layer, a tile per output channel), the feature maps of two different images, the
model exported and served by netron on 127.0.0.1 (fetched with urllib, then stopped), the file
loaded back with its framework's own loader; reopened with eval_infer=True, the kernel grids
are drawn from the saved best weights.
"""
import json

import numpy as np
import pytest

from xrayprototype.backend import install_command, is_installed
from xrayprototype.visualize import SEPARATOR, kernel_tiles, map_tiles, tile_grid

BACKENDS = ("pytorch", "gluon", "keras")


def count_tiles(pixels: np.ndarray) -> int:
    """Tiles of a grid read from its pixels: cells between SEPARATOR bands that are not all
    SEPARATOR (empty cells of the last row are)."""
    separator = np.all(pixels[..., :3] == SEPARATOR, axis=-1)

    def spans(is_gap):              # (start, end) of each run of non-gap lines
        steps = np.diff(np.r_[0, (~is_gap).astype(int), 0])
        return list(zip(np.flatnonzero(steps == 1), np.flatnonzero(steps == -1)))

    rows, columns = spans(separator.all(axis=1)), spans(separator.all(axis=0))
    return sum(not separator[top:bottom, left:right].all()
               for top, bottom in rows for left, right in columns)


def test_grid_has_one_tile_per_channel_and_rgb_first_layer():
    rng = np.random.default_rng(0)
    first = rng.normal(size=(10, 3, 7, 7))                 # a first layer: RGB kernels
    grid = tile_grid(kernel_tiles(first, max_tiles=64))
    assert count_tiles(grid) == 10
    assert grid.shape == (2 + 3 * 37, 2 + 4 * 37, 3)   # 4 a row; 7 px enlarged 5x, 2 px gaps
    assert not np.all(grid[2:34, 2:34, 0] == grid[2:34, 2:34, 1])   # colour, not grey
    deep = rng.normal(size=(100, 16, 3, 3))
    assert count_tiles(tile_grid(kernel_tiles(deep, max_tiles=64))) == 64
    maps = rng.random((5, 8, 8))
    assert count_tiles(tile_grid(map_tiles(maps, max_tiles=64))) == 5


SCRIPT = """
import json, os, shutil, urllib.request
import numpy as np
from PIL import Image
from xrayprototype import prototype
from xrayprototype.errors import ConfigError

def snap(name, written):
    # a copy of each grid: a later call writes the same file names again
    os.makedirs("snap/" + name)
    copies = {{}}
    for layer, path in written.items():
        copies[layer] = os.path.abspath("snap/%s/%d.png" % (name, len(copies)))
        shutil.copyfile(path, copies[layer])
    return copies

backend = {backend!r}
gtf = prototype(verbose=1, workspace="ws")
gtf.Prototype("Visualize", backend, backend=backend)
gtf.Default(dataset_path={train!r}, model_name="resnet18", freeze_base_network=False,
            num_epochs=1, use_pretrained=False)
gtf.update_input_size(32)
gtf.update_batch_size(16)
gtf.update_display_progress(False)
gtf.Train()
out = {{}}
out["conv_layers"] = gtf.experiment.backend.conv_layers()
first = out["conv_layers"][0]
out["first_out_channels"] = int(gtf.experiment.backend.conv_kernels([first])[0][1].shape[0])
out["kernels_written"] = gtf.Visualize_Kernels()
out["kernels_train"] = snap("train", out["kernels_written"])
out["kernels_one"] = snap("one", gtf.Visualize_Kernels(store_images_if_plot_fails=False,
                                                       layers=first, max_tiles=5))
try:
    gtf.Visualize_Kernels(layers=first + "x")
except ConfigError as err:
    out["wrong_layer"] = str(err)
out["maps_a_written"] = gtf.Visualize_Feature_Maps({image_a!r})
out["maps_a"] = snap("a", out["maps_a_written"])
out["maps_b"] = snap("b", gtf.Visualize_Feature_Maps({image_b!r}, layers=[first]))

served = gtf.Visualize_With_Netron(data_shape=(3, 32, 32))
out["netron"] = {{"url": served["url"], "file": served["file"]}}
# a notebook cell run again: the same port serves the new export
served = gtf.Visualize_With_Netron(data_shape=(3, 32, 32), port=served["address"][1])
name = os.path.basename(served["file"])
with urllib.request.urlopen(served["url"], timeout=30) as response:
    out["netron"]["status"] = response.status
    out["netron"]["names_file"] = ('content="/data/' + name + '"') in response.read().decode()
with urllib.request.urlopen(served["url"] + "/data/" + name, timeout=30) as response:
    out["netron"]["same_bytes"] = response.read() == open(served["file"], "rb").read()
import time, netron
netron.stop(served["address"])
deadline = time.time() + 10
while netron.status(served["address"]) and time.time() < deadline:
    time.sleep(0.1)
try:
    urllib.request.urlopen(served["url"], timeout=5)
    out["netron"]["stopped"] = False
except OSError:
    out["netron"]["stopped"] = True

# the exported file loads back with its framework's own loader and computes the model
file = served["file"]
image = np.asarray(Image.open({image_a!r}).convert("RGB").resize((32, 32)), np.float32)[None] / 255
if backend == "pytorch":
    import onnx
    model = onnx.load(file)
    onnx.checker.check_model(model)
    dims = [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]
    out["loaded"] = {{"input": dims, "nodes": len(model.graph.node)}}
elif backend == "gluon":
    import mxnet as mx
    net = mx.gluon.SymbolBlock.imports(file, ["data"], file.replace("-symbol.json", "-0000.params"))
    x = image.transpose(0, 3, 1, 2).copy()
    mine = gtf.experiment.backend.predict(x)
    theirs = mx.nd.softmax(net(mx.nd.array(x))).asnumpy()
    out["loaded"] = {{"max_difference": float(np.abs(mine - theirs).max())}}
else:
    import keras
    model = keras.saving.load_model(file, compile=False)
    mine = gtf.experiment.backend.predict(image)
    logits = np.asarray(model(image, training=False), np.float64)     # the head gives scores
    theirs = np.exp(logits - logits.max(1, keepdims=True))
    theirs /= theirs.sum(1, keepdims=True)
    out["loaded"] = {{"max_difference": float(np.abs(mine - theirs).max())}}

# a model with depthwise convolutions: every layer's kernels are (out, in per group, kh, kw)
from xrayprototype.backend import create_backend
from xrayprototype.config import ModelConfig
other = create_backend(backend)
other.build_model(ModelConfig("mobilenet_v2", use_pretrained=False, use_gpu=False), 2)
shapes = [list(k.shape) for _, k in other.conv_kernels(other.conv_layers())]
out["mobilenet_v2_kernels"] = shapes

again = prototype(verbose=0, workspace="ws")
again.Prototype("Visualize", backend, eval_infer=True)
out["kernels_eval"] = snap("eval", again.Visualize_Kernels(layers=[first]))
out["maps_eval"] = snap("maps_eval", again.Visualize_Feature_Maps({image_a!r}, layers=[first]))
json.dump(out, open("out.json", "w"))
"""


def _png(path) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as image:
        assert image.format == "PNG"
        return np.asarray(image.convert("RGB"))


@pytest.mark.slow
@pytest.mark.parametrize("backend", BACKENDS)
def test_visualize_verbs(backend, synthetic_data, tmp_path, run_python):
    if not is_installed(backend):
        pytest.skip(f"backend {backend} not installed ({install_command(backend)})")
    pytest.importorskip("netron", reason="pip install 'xrayprototype[netron]'")
    pneumonia = sorted((synthetic_data / "test" / "PNEUMONIA").iterdir())
    normal = sorted((synthetic_data / "test" / "NORMAL").iterdir())
    result = run_python(SCRIPT.format(backend=backend, train=str(synthetic_data / "train"),
                                      image_a=str(pneumonia[0]), image_b=str(normal[0])),
                        cwd=tmp_path, timeout=300)
    out = json.loads((tmp_path / "out.json").read_text())
    layers, first = out["conv_layers"], out["conv_layers"][0]

    # kernels: one decodable grid per convolution layer, a tile per output channel
    assert list(out["kernels_train"]) == layers
    assert "/logs/kernels/000_" in out["kernels_written"][first]
    assert count_tiles(_png(out["kernels_train"][first])) == out["first_out_channels"] == 64
    assert count_tiles(_png(out["kernels_one"][first])) == 5          # max_tiles
    assert "store_images_if_plot_fails=False" in result.stdout
    assert "did you mean" in out["wrong_layer"] and first in out["wrong_layer"]

    # feature maps: per layer, a grid per image; two different images give different maps
    assert list(out["maps_a"]) == layers
    a, b = _png(out["maps_a"][first]), _png(out["maps_b"][first])
    assert count_tiles(a) == 64 and a.shape == b.shape and not np.array_equal(a, b)
    assert "/logs/feature_maps/" in out["maps_a_written"][first]

    # Netron: the page was served on 127.0.0.1, then stopped; the file loads back
    netron = out["netron"]
    assert netron["url"].startswith("http://127.0.0.1:") and netron["status"] == 200
    assert netron["names_file"] and netron["same_bytes"] and netron["stopped"]
    assert (tmp_path / "ws" / "Visualize" / backend / "netron").is_dir()
    if backend == "pytorch":
        assert netron["file"].endswith(".onnx") and out["loaded"]["input"] == [1, 3, 32, 32]
    else:
        assert out["loaded"]["max_difference"] < 1e-4

    shapes = out["mobilenet_v2_kernels"]
    assert all(len(shape) == 4 for shape in shapes) and shapes[0][1] == 3
    assert sum(shape[1] == 1 for shape in shapes) >= 10          # the depthwise layers

    # eval_infer draws the saved best weights: after one epoch those are the ones in memory
    assert np.array_equal(_png(out["kernels_eval"][first]), _png(out["kernels_train"][first]))
    assert np.array_equal(_png(out["maps_eval"][first]), a)
