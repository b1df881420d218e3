"""Export(format="onnx") on every installed backend, each in its own process: a trained
resnet18 (PyTorch: the session's trained experiment, copied; Gluon and Keras: one epoch at
32 px on synthetic chest X-rays) with a temperature (Calibrate) and a decision threshold is
exported; onnxruntime's probabilities of real Kermany images (a handful, when ../shared is
present, else generated ones) match the backend's own Infer, OnnxModel's result dicts are
Infer's, the sidecar is complete, and the README's snippet (run in a process that imports
neither this library nor a framework) predicts what Infer predicts. Refusals are checked
in-process, without a framework.
"""
import json
import os
import re
import shutil
import types
from pathlib import Path

import numpy as np
import pytest

from xrayprototype.backend import Backend, Capabilities, install_command, is_installed
from xrayprototype.errors import BackendUnavailableError, ConfigError
from xrayprototype.export import (REQUIRED_KEYS, check_format, finish_onnx_file, read_sidecar,
                                  require_package, sidecar_path)

REPO = Path(__file__).resolve().parents[1]
BACKENDS = ("pytorch", "gluon", "keras")
#: float32 graphs on two runtimes: the same operations, summed in another order
TOLERANCE = 1e-4

SCRIPT = """
import json, sys, time
started = time.time()
import numpy as np
from xrayprototype import prototype
from xrayprototype.errors import BackendUnavailableError, ConfigError
from xrayprototype.onnx_model import OnnxModel

backend, images = {backend!r}, {images!r}
gtf = prototype(verbose=0, workspace="ws")
if backend == "pytorch":                 # the session's trained experiment, copied here
    gtf.Prototype({project!r}, {experiment!r}, eval_infer=True)
else:
    gtf.Prototype("Export", backend, backend=backend)
    gtf.Default(dataset_path={train!r}, model_name="resnet18", freeze_base_network=False,
                num_epochs=1, use_pretrained=False)
    gtf.update_input_size(32)
    gtf.update_batch_size(16)
    gtf.update_display_progress(False)
    gtf.Train()
out = {{"temperature": gtf.Calibrate()["temperature"]}}
gtf.update_decision_threshold(0.4)
try:
    gtf.Export(format="tflite")
except ConfigError as err:
    out["unknown_format"] = str(err)
written = gtf.Export()
infer = [gtf.Infer(img_name=f, return_raw=True) for f in images]
model = OnnxModel(written["model"], batch_size=4)
skipped = {{}}
rows = model.predict_files(images + ["not_an_image.png"], skipped=skipped)
out.update(written=written, infer=infer, skipped=skipped, nan_row=bool(np.isnan(rows[-1]).all()),
           onnx=[model.result_of(f, r, return_raw=True) for f, r in zip(images, rows[:-1])])
from xrayprototype.data import ImageRecords
records = ImageRecords(images, [0] * len(images), model.classes)
raw = gtf.experiment.predict_records("infer", records, calibrated=False)[0]
model.temperature = None                 # the graph's own output: uncalibrated
out["raw"] = {{"backend": raw.tolist(), "onnx": model.predict_files(images).tolist()}}
model.temperature = out["temperature"]
out["seconds"] = [time.time() - started]
tta = model.predict_files(images[:2], tta=True)
out["tta_difference"] = float(np.abs(tta - [[r["probabilities"][c] for c in model.classes]
    for r in (gtf.Infer(img_name=f, tta=True) for f in images[:2])]).max())

if backend == "keras":   # a tiny model: its preprocessing layers become plain ONNX operators
    from pathlib import Path
    import keras
    import onnxruntime as ort
    from xrayprototype.backend import create_backend
    from xrayprototype.backends.keras.models import ApplicationPreprocessing
    from xrayprototype.export import finish_onnx_file
    other = create_backend(backend)
    inputs = keras.Input((8, 8, 3))
    x = ApplicationPreprocessing("resnet")(inputs)
    x = keras.layers.Normalization(mean=[1.0, 2.0, 3.0], variance=[4.0, 9.0, 16.0])(x)
    flat = keras.layers.Flatten()(x)           # (Normalization: a captured tensor, inlined)
    other.model = keras.Model(inputs, keras.layers.Dense(3)(flat))
    x = np.random.default_rng(1).random((3, 8, 8, 3)).astype(np.float32)
    logits = np.asarray(other.model(x), np.float64)
    expected = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    other.export_onnx(Path("layer.onnx"), (3, 8, 8))
    finish_onnx_file(Path("layer.onnx"))     # the core's names and IR version
    session = ort.InferenceSession("layer.onnx")
    got = session.run(None, {{"image": x}})[0]
    out["preprocessing_layer"] = {{"difference": float(np.abs(got - expected).max()),
                                  "spread": float(expected.std())}}
if backend == "pytorch":    # the command line, on the experiment as saved
    from xrayprototype.cli import main
    out["cli_exit"] = main(["export", "--project", {project!r}, "--experiment",
                            {experiment!r}, "--workspace", "ws", "--out", "cli", "--quiet"])
out["seconds"].append(time.time() - started)
json.dump(out, open("out.json", "w"), default=str)
"""

SNIPPET_CHECK = """
import sys
json.dump({"best": classes[best], "p": p.tolist()}, open("snippet.json", "w"))
assert not {"xrayprototype", "torch", "mxnet", "tensorflow", "keras"} & set(sys.modules)
"""


def _shared_images(limit_per_class: int = 3):
    """A few real Kermany test images, or None without ../shared (as conftest finds it)."""
    folder = Path(os.environ.get("XRAYPROTOTYPE_SHARED") or "../shared").expanduser()
    folder = folder if folder.is_absolute() else REPO / folder
    test = folder / "data" / "kermany-224" / "test"
    if not test.is_dir():
        return None
    return [str(p) for label in ("NORMAL", "PNEUMONIA")
            for p in sorted((test / label).glob("*.jpeg"))[:limit_per_class]]


def readme_snippet() -> str:
    """The onnxruntime snippet of the README's "Use a trained model elsewhere" section."""
    text = (REPO / "README.md").read_text(encoding="utf-8")
    section = text.split("## Use a trained model elsewhere", 1)[1].split("\n## ", 1)[0]
    blocks = [b for b in re.findall(r"```python\n(.*?)```", section, re.S)
              if "onnxruntime" in b]
    assert len(blocks) == 1, "the README section has one onnxruntime snippet"
    return blocks[0]


def test_readme_snippet_is_short_and_needs_only_onnxruntime_numpy_pillow():
    code = readme_snippet()
    lines = [line for line in code.splitlines() if line.strip()]
    assert len(lines) <= 20
    imported = set(re.findall(r"^(?:import|from) (\w+)", code, re.M)) | \
        set(re.findall(r"^import .*?, (\w+)", code, re.M))
    assert imported <= {"json", "numpy", "onnxruntime", "PIL"}, imported


@pytest.mark.slow
@pytest.mark.parametrize("backend", BACKENDS)
def test_export_runs_in_onnxruntime_as_the_backend_predicts(backend, synthetic_data, request,
                                                            tmp_path, run_python):
    if not is_installed(backend):
        pytest.skip(f"backend {backend} not installed ({install_command(backend)})")
    pytest.importorskip("onnxruntime", reason="pip install 'xrayprototype[export]'")
    images = _shared_images() or [str(p) for label in ("NORMAL", "PNEUMONIA") for p in
                                  sorted((synthetic_data / "test" / label).iterdir())[:3]]
    trained = {"project": None, "experiment": None}
    if backend == "pytorch":            # trained once per session, for several test files
        trained = request.getfixturevalue("trained_experiment")
        shutil.copytree(trained["workspace"], tmp_path / "ws")
    run_python(SCRIPT.format(backend=backend, images=images, train=str(synthetic_data / "train"),
                             project=trained["project"], experiment=trained["experiment"]),
               cwd=tmp_path, timeout=400)
    out = json.loads((tmp_path / "out.json").read_text())
    written = out["written"]
    assert Path(written["model"]).parent.name == "export"
    assert Path(written["sidecar"]) == sidecar_path(written["model"])

    # probabilities: onnxruntime (through OnnxModel, temperature applied) vs the backend's Infer
    classes = written["classes"]
    mine = np.array([[r["probabilities"][c] for c in classes] for r in out["infer"]])
    theirs = np.array([[r["probabilities"][c] for c in classes] for r in out["onnx"]])
    assert np.abs(mine - theirs).max() < TOLERANCE
    # the graph's own (uncalibrated) output, where a confident model is not saturated
    raw = {key: np.array(value) for key, value in out["raw"].items()}
    difference = float(np.abs(raw["onnx"] - raw["backend"]).max())
    print(f"{backend}: max |p_onnx - p_backend| = {difference:.2e} (uncalibrated) on "
          f"{len(raw['onnx'])} images; seconds {out['seconds']}")
    assert difference < TOLERANCE and raw["backend"].std() > 1e-3     # not a constant model
    assert out["tta_difference"] < TOLERANCE
    # the very dicts Infer gives: decision threshold and temperature included
    for infer, onnx in zip(out["infer"], out["onnx"]):
        assert set(infer) == set(onnx) >= {"decision_threshold", "temperature", "raw"}
        assert infer["predicted_class"] == onnx["predicted_class"]
        assert onnx["decision_threshold"] == 0.4 and onnx["temperature"] == out["temperature"]
        assert onnx["score"] == pytest.approx(infer["score"], abs=TOLERANCE)
    assert out["nan_row"] and list(out["skipped"]) == ["not_an_image.png"]
    assert "export format 'tflite' is not known" in out["unknown_format"] and \
        "onnx" in out["unknown_format"]
    if backend == "keras":      # (the multi-label graph is a contract check: testing.py)
        layer = out["preprocessing_layer"]
        assert layer["difference"] < TOLERANCE and layer["spread"] > 1e-3

    if backend == "pytorch":
        assert out["cli_exit"] == 0
        assert read_sidecar(tmp_path / "cli" / "model.onnx")["classes"] == classes

    # the sidecar: complete, describing this file, enough to preprocess without the library
    sidecar = read_sidecar(written["model"])
    assert set(REQUIRED_KEYS) <= set(sidecar) and sidecar["backend"] == backend
    size = 64 if backend == "pytorch" else 32
    layout = sidecar["input"]["layout"]
    assert sidecar["input"]["shape"] == ([None, 3, size, size] if layout == "NCHW"
                                         else [None, size, size, 3])
    assert sidecar["input"]["name"] == "image" and sidecar["output"]["activation"] == "softmax"
    assert len(sidecar["preprocessing"]["mean"]) == 3 and sidecar["classes"] == classes
    assert sidecar["decision_threshold"]["threshold"] == 0.4
    assert sidecar["temperature"] == out["temperature"]
    assert sidecar["experiment"]["weights"] == "best" and sidecar["opset"] >= 13
    assert sidecar["framework_versions"] and sidecar["library"]["version"]

    # the README snippet, in a process without this library or the framework
    snippet = re.sub(r'^MODEL, IMAGE = .*$', f"MODEL, IMAGE = {written['model']!r}, "
                     f"{images[-1]!r}", readme_snippet(), count=1, flags=re.M)
    run_python(snippet + SNIPPET_CHECK, cwd=tmp_path / "snippet", timeout=120)
    result = json.loads((tmp_path / "snippet" / "snippet.json").read_text())
    assert result["best"] == out["infer"][-1]["predicted_class"]
    np.testing.assert_allclose(result["p"], mine[-1], atol=TOLERANCE)


# ---------------------------------------------------------------------------- refusals
def test_a_backend_without_onnx_export_is_refused_clearly():
    toy = types.SimpleNamespace(name="toy", capabilities=lambda: Capabilities({}, (), ()))
    with pytest.raises(ConfigError, match=r"backend 'toy' cannot export format 'onnx'"):
        check_format("onnx", toy)
    with pytest.raises(ConfigError, match=r"did you mean 'onnx'"):
        check_format("onx", toy)
    with pytest.raises(ConfigError, match=r"backend 'toy' cannot export to ONNX"):
        Backend.export_onnx(toy, Path("model.onnx"), (3, 32, 32))


def _write_pair(folder: Path, **changes) -> Path:
    """A one-node ONNX file (Softmax) and a sidecar, as Export writes them."""
    onnx = pytest.importorskip("onnx")
    from xrayprototype.export import SIDECAR_FORMAT_VERSION, _sha256

    helper = onnx.helper
    graph = helper.make_graph(
        [helper.make_node("Softmax", ["image"], ["probabilities"], axis=1)], "toy",
        [helper.make_tensor_value_info("image", onnx.TensorProto.FLOAT, [None, 2])],
        [helper.make_tensor_value_info("probabilities", onnx.TensorProto.FLOAT, [None, 2])])
    model_file = folder / "model.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]),
              str(model_file))
    sidecar = {key: None for key in REQUIRED_KEYS}
    sidecar.update(format_version=SIDECAR_FORMAT_VERSION, format="onnx",
                   model_sha256=_sha256(model_file))
    sidecar.update(changes)
    sidecar_path(model_file).write_text(json.dumps(sidecar))
    return model_file


def test_a_sidecar_that_is_missing_stale_or_of_another_file_is_refused(tmp_path):
    model_file = _write_pair(tmp_path)
    assert read_sidecar(model_file)["format"] == "onnx"
    model_file.write_bytes(model_file.read_bytes() + b"\0")       # another file, same name
    with pytest.raises(ConfigError, match="describes another file"):
        read_sidecar(model_file)
    model_file = _write_pair(tmp_path, format_version=99)
    with pytest.raises(ConfigError, match="format_version 99"):
        read_sidecar(model_file)
    sidecar_path(model_file).unlink()
    with pytest.raises(ConfigError, match="has no sidecar model.json beside it"):
        read_sidecar(model_file)
    with pytest.raises(ConfigError, match="does not exist; write one with"):
        read_sidecar(tmp_path / "elsewhere.onnx")


def test_a_missing_onnx_package_names_the_install_command():
    with pytest.raises(BackendUnavailableError, match=r"xrayprototype\[export\]"):
        require_package("xrayprototype_no_such_module", "onnxruntime")


def test_onnx_model_of_a_multi_label_export_uses_the_label_thresholds(tmp_path):
    """A hand-made sigmoid graph and its sidecar (no framework): OnnxModel decodes PNGs as the
    sidecar says (checked against Pillow directly), applies no temperature to sigmoid outputs,
    gives NaN rows for unreadable files, and the label thresholds decide in ``result_of``."""
    onnx = pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    from PIL import Image

    from xrayprototype.export import SIDECAR_FORMAT_VERSION, _sha256
    from xrayprototype.multilabel import multilabel_result
    from xrayprototype.onnx_model import OnnxModel

    rng = np.random.default_rng(0)
    weights = rng.normal(0, 0.05, (8 * 8 * 3, 3)).astype(np.float32)
    helper = onnx.helper
    graph = helper.make_graph(
        [helper.make_node("Flatten", ["image"], ["flat"], axis=1),
         helper.make_node("MatMul", ["flat", "weights"], ["logits"]),
         helper.make_node("Sigmoid", ["logits"], ["probabilities"])], "toy",
        [helper.make_tensor_value_info("image", onnx.TensorProto.FLOAT, [None, 8, 8, 3])],
        [helper.make_tensor_value_info("probabilities", onnx.TensorProto.FLOAT, [None, 3])],
        [onnx.numpy_helper.from_array(weights, "weights")])
    model_file = tmp_path / "model.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]),
              str(model_file))
    assert finish_onnx_file(model_file) == 13          # the IR version onnxruntime reads
    mean, std = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
    classes = ["Effusion", "Nodule", "Pneumonia"]
    sidecar = {"format_version": SIDECAR_FORMAT_VERSION, "format": "onnx",
               "model_file": "model.onnx", "model_sha256": _sha256(model_file),
               "input": {"name": "image", "layout": "NHWC", "height": 8, "width": 8,
                         "channels": 3},
               "preprocessing": {"resize_mode": "stretch", "resize": None, "center_crop": None,
                                 "grayscale": False, "mean": mean, "std": std},
               "output": {"name": "probabilities"}, "classes": classes, "multi_label": True,
               "decision_threshold": None, "temperature": 2.0,       # ignored: sigmoid outputs
               "label_thresholds": {"thresholds": {"Effusion": 0.3, "Nodule": 0.9}}}
    sidecar_path(model_file).write_text(json.dumps(sidecar))
    files = []
    for k in range(3):
        pixels = rng.integers(0, 256, (20, 30, 3), dtype=np.uint8)
        files.append(str(tmp_path / f"image{k}.png"))
        Image.fromarray(pixels).save(files[-1])
    (tmp_path / "broken.png").write_bytes(b"not a png")

    model = OnnxModel(model_file, batch_size=2)
    skipped = {}
    with pytest.warns(UserWarning, match="skipping corrupt image .*broken.png"):
        rows = model.predict_files(files + [str(tmp_path / "broken.png")], skipped=skipped)
    batch = np.stack([(np.asarray(Image.open(f).convert("RGB").resize(
        (8, 8), Image.BILINEAR, reducing_gap=3.0), np.float32) / 255 - mean) / std
        for f in files]).astype(np.float32)
    expected = 1 / (1 + np.exp(-(batch.reshape(3, -1) @ weights)))
    np.testing.assert_allclose(rows[:3], expected, atol=1e-5)
    assert np.isnan(rows[3]).all() and list(skipped) == [str(tmp_path / "broken.png")]
    thresholds = np.array([0.3, 0.9, 0.5])
    for file, row in zip(files, rows):
        assert model.result_of(file, row) == multilabel_result(file, row, classes, thresholds)
    assert model.result_of(files[0], rows[0], img_thresh=0.0)["predicted_classes"] == \
        [classes[k] for k in np.argsort(-rows[0], kind="stable")]
