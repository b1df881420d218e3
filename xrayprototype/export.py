"""``Export(format="onnx")``: an experiment's prediction model as an ONNX file and its sidecar,
the one home of the sidecar's schema (``SIDECAR_FORMAT_VERSION``).

The backend writes the graph (``Backend.export_onnx``): the batch ``predict`` takes in, the
probabilities ``predict`` gives out. The core then names the graph's input ``"image"`` and its
output ``"probabilities"``, makes the file loadable by older onnxruntime releases (the lowest
IR version its opset needs, weights not listed as inputs), checks it with ``onnx.checker``,
and writes beside it ``<name>.json``: everything a program without this library needs to
turn an image file into that batch and the output into this library's prediction.

Sidecar (``model.json``), format_version 1:
    format_version, format ("onnx"), model_file, model_sha256, created_at,
    library {"name", "version"}, backend, framework_versions, opset,
    experiment {"project", "experiment", "model_name", "weights", "best_epoch"},
    input {"name", "dtype", "layout" (NCHW | NHWC), "shape" ([null, ...], null = any batch
        size), "height", "width", "channels", "color" ("RGB": grayscale replicated)},
    preprocessing {"steps", "resize_mode", "resize", "center_crop", "grayscale",
        "interpolation", "pixel_scale", "mean", "std", "normalization", "formula",
        "in_graph"},
    output {"name", "kind" ("probabilities"), "activation" (softmax | sigmoid), "shape",
        "calibrated" (always false: the temperature is applied outside the graph)},
    classes, multi_label, decision_threshold (the experiment's record or null),
    label_thresholds (multi-label record or null), temperature (float or null),
    calibration (how the temperature applies).
"""
import hashlib
import json
from pathlib import Path
from typing import Dict, Optional, Union

from . import state as st
from ._version import __version__
from .errors import (BackendUnavailableError, ConfigError, ExperimentError, XrayPrototypeError,
                     unknown_name)

FORMATS = ("onnx",)
SIDECAR_FORMAT_VERSION = 1
#: the experiment's sub-folder Export writes to by default
EXPORT_DIR = "export"
INPUT_NAME, OUTPUT_NAME = "image", "probabilities"
#: the sidecar keys a reader relies on (``read_sidecar`` refuses a file missing one)
REQUIRED_KEYS = ("format_version", "format", "model_file", "input", "preprocessing", "output",
                 "classes", "multi_label", "decision_threshold", "temperature")
#: onnxruntime 1.14 (2023) reads IR version 8; newer IR versions are written only if needed
OLDEST_IR_VERSION = 8
INSTALL_EXPORT = "pip install -c constraints.txt 'xrayprototype[export]'"
CALIBRATION_RULE = ("when temperature is set (Calibrate), the calibrated probabilities are "
                    "softmax(log(output) / temperature) per image; the output itself is "
                    "uncalibrated")


def sidecar_path(model_file: Union[str, Path]) -> Path:
    """``.../model.onnx`` -> ``.../model.json``."""
    return Path(model_file).with_suffix(".json")


def _target(experiment, path: Optional[Union[str, Path]]) -> Path:
    """The ONNX file to write: ``path`` when it ends in ``.onnx``, else ``model.onnx`` in the
    folder ``path`` (default ``<experiment>/export/``)."""
    if path is None:
        return experiment.paths.dir / EXPORT_DIR / "model.onnx"
    path = Path(path).expanduser()
    return path if path.suffix.lower() == ".onnx" else path / "model.onnx"


def check_format(format: str, backend) -> None:
    """A known format that the backend declares in ``capabilities().export_formats``."""
    if format not in FORMATS:
        raise unknown_name("export format", format, list(FORMATS))
    declared = backend.capabilities().export_formats
    if format not in declared:
        raise ConfigError(f"backend '{backend.name}' cannot export format '{format}' (it "
                          f"exports {list(declared) or 'nothing'}); train the experiment with "
                          "a backend that can (pytorch, gluon, keras).")


def export_experiment(experiment, format: str = "onnx",
                      path: Optional[Union[str, Path]] = None) -> Dict:
    """Export the experiment's prediction weights (the best ones, or those chosen with
    ``use_saved_model``: what Infer uses) as ``format``; returns ``{"model", "sidecar",
    "format", "opset", "input", "classes"}`` (paths as strings)."""
    backend = experiment.open_backend()
    check_format(format, backend)
    if experiment.untrained and experiment.prediction_weights is None:
        raise ExperimentError(f"experiment {experiment.paths.experiment} has no trained "
                              "weights to export: Train() it first, or open a trained one "
                              "with Prototype(project, experiment, eval_infer=True).")
    require_package("onnx", "onnx")
    experiment.ready_for_prediction()
    data = experiment.config.data
    model_file = _target(experiment, path)
    model_file.parent.mkdir(parents=True, exist_ok=True)
    try:
        backend.export_onnx(model_file, (data.channels, data.input_size, data.input_size))
    except XrayPrototypeError:
        raise
    except Exception as err:  # noqa: BLE001  (the converter's own failure, said with context)
        raise ExperimentError(
            f"backend '{backend.name}' could not convert model "
            f"'{experiment.config.model.model_name}' to ONNX ({type(err).__name__}: "
            f"{str(err)[:300]}); the framework's converter lacks one of its operations: "
            "choose another model (resnet18 converts on every backend), or export with the "
            "framework's own tools.") from err
    opset = finish_onnx_file(model_file)
    sidecar = sidecar_of(experiment, model_file, opset)
    sidecar_path(model_file).write_text(json.dumps(sidecar, indent=2), encoding="utf-8")
    return {"model": str(model_file), "sidecar": str(sidecar_path(model_file)),
            "format": format, "opset": opset, "input": sidecar["input"],
            "classes": sidecar["classes"]}


def require_package(module: str, package: str):
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise BackendUnavailableError(f"ONNX export and OnnxModel need the '{package}' "
                                      f"package, which is not installed; install it with: "
                                      f"{INSTALL_EXPORT}") from None


def _rename(graph, old: str, new: str) -> None:
    """Rename a value everywhere in ``graph`` (its inputs, outputs and every node's)."""
    if old == new:
        return
    for node in graph.node:
        node.input[:] = [new if name == old else name for name in node.input]
        node.output[:] = [new if name == old else name for name in node.output]
    for value in list(graph.input) + list(graph.output) + list(graph.value_info):
        if value.name == old:
            value.name = new


def finish_onnx_file(model_file: Path) -> int:
    """Name the one input ``INPUT_NAME`` and the one output ``OUTPUT_NAME``, drop weights
    listed as graph inputs and weights no node uses, lower the IR version to what the opset
    needs (at least ``OLDEST_IR_VERSION``), check and save the file; returns its
    default-domain opset."""
    onnx = require_package("onnx", "onnx")
    model = onnx.load(str(model_file))
    graph = model.graph
    weights = {initializer.name for initializer in graph.initializer}
    inputs = [value for value in graph.input if value.name not in weights]
    if len(inputs) != 1 or len(graph.output) != 1:
        raise ExperimentError(f"the exported graph {model_file} has {len(inputs)} inputs and "
                              f"{len(graph.output)} outputs, expected one of each; this is a "
                              "bug of the backend's export_onnx, please report it.")
    del graph.input[:]
    graph.input.extend(inputs)
    used = {name for node in graph.node for name in node.input}
    kept = [initializer for initializer in graph.initializer if initializer.name in used]
    del graph.initializer[:]
    graph.initializer.extend(kept)
    _rename(graph, inputs[0].name, INPUT_NAME)
    _rename(graph, graph.output[0].name, OUTPUT_NAME)
    needed = onnx.helper.find_min_ir_version_for(list(model.opset_import))
    model.ir_version = min(model.ir_version, max(needed, OLDEST_IR_VERSION))
    onnx.checker.check_model(model)
    onnx.save(model, str(model_file))
    return next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _preprocessing(experiment) -> Dict:
    """How an image file becomes one row of the input batch (the core's ``ImageStore``,
    ``Geometry`` and ``Normalizer``, as the experiment predicts)."""
    data = experiment.config.data
    normalizer = experiment.normalizer().describe()
    channels = data.channels
    mean = normalizer["mean"] if normalizer["mean"] is not None else [0.0] * channels
    std = normalizer["std"] if normalizer["std"] is not None else [1.0] * channels
    info = experiment.open_backend().capabilities().models.get(experiment.config.model.model_name)
    in_graph = ("the graph applies the model family's own input scaling (e.g. keras."
                "applications preprocess_input) to the 0..1 input itself; feed the input as "
                "the formula says" if info is not None and info.preprocessing_in_model else None)
    steps = [f"decode to RGB (grayscale replicated; 16-bit and DICOM scaled to 8 bits by the "
             f"library's rules), resize to {data.resize or data.input_size} px "
             f"({data.resize_mode}, bilinear)"]
    if data.center_crop:
        steps.append(f"take the central {data.center_crop} px square, resize to "
                     f"{data.input_size} px")
    if data.grayscale:
        steps.append("grayscale (luminance) replicated to 3 channels")
    steps.append("(pixel / 255 - mean) / std per channel; arrange as the input layout")
    return {"steps": steps, "resize_mode": data.resize_mode, "resize": data.resize,
            "center_crop": data.center_crop, "grayscale": bool(data.grayscale),
            "interpolation": "bilinear", "pixel_scale": 1 / 255.0,
            "mean": [float(m) for m in mean], "std": [float(s) for s in std],
            "normalization": (experiment.state.get("preprocessing") or {}).get("normalization"),
            "formula": "x = (pixel / 255 - mean) / std per RGB channel", "in_graph": in_graph}


def sidecar_of(experiment, model_file: Path, opset: int) -> Dict:
    """The sidecar of ``model_file`` (see the module's docstring)."""
    data, classes = experiment.config.data, list(experiment.classes)
    layout = experiment.open_backend().capabilities().layout
    size, channels = data.input_size, data.channels
    shape = [None, channels, size, size] if layout == "NCHW" else [None, size, size, channels]
    weights = experiment.prediction_weights[0] if experiment.prediction_weights else "best"
    return {
        "format_version": SIDECAR_FORMAT_VERSION, "format": "onnx",
        "model_file": model_file.name, "model_sha256": _sha256(model_file),
        "created_at": st.now(), "library": {"name": "xrayprototype", "version": __version__},
        "backend": experiment.backend_name,
        "framework_versions": dict(experiment.state.get("versions") or {}), "opset": opset,
        "experiment": {"project": experiment.paths.project,
                       "experiment": experiment.paths.experiment,
                       "model_name": experiment.config.model.model_name, "weights": weights,
                       "best_epoch": (experiment.state.get("summary") or {}).get("best_epoch")},
        "input": {"name": INPUT_NAME, "dtype": "float32", "layout": layout, "shape": shape,
                  "height": size, "width": size, "channels": channels, "color": "RGB"},
        "preprocessing": _preprocessing(experiment),
        "output": {"name": OUTPUT_NAME, "kind": "probabilities",
                   "activation": "sigmoid" if experiment.multi_label else "softmax",
                   "shape": [None, len(classes)], "calibrated": False},
        "classes": classes, "multi_label": bool(experiment.multi_label),
        "decision_threshold": experiment.decision_threshold,
        "label_thresholds": experiment.label_thresholds if experiment.multi_label else None,
        "temperature": experiment.temperature, "calibration": CALIBRATION_RULE,
    }


def read_sidecar(model_file: Union[str, Path], check_hash: bool = True) -> Dict:
    """The sidecar of an exported ``model_file``, checked: present, of a known
    ``format_version``, complete, and (``check_hash``) describing this very file."""
    model_file = Path(model_file)
    side = sidecar_path(model_file)
    if not model_file.is_file():
        raise ConfigError(f"ONNX file {model_file} does not exist; write one with "
                          "gtf.Export(format='onnx') or `xrayprototype export`.")
    try:
        sidecar = json.loads(side.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{model_file} has no sidecar {side.name} beside it (input size, "
                          "normalisation, classes); export again with gtf.Export(format="
                          "'onnx'), which writes both, and keep them together.") from None
    except (OSError, ValueError) as err:
        raise ConfigError(f"cannot read the sidecar {side} ({err}); export again.") from None
    if sidecar.get("format_version") != SIDECAR_FORMAT_VERSION:
        raise ConfigError(f"sidecar {side} has format_version {sidecar.get('format_version')}, "
                          f"this xrayprototype {__version__} reads {SIDECAR_FORMAT_VERSION}; "
                          "export again with this version, or use the version that wrote it.")
    missing = [key for key in REQUIRED_KEYS if key not in sidecar]
    if missing:
        raise ConfigError(f"sidecar {side} lacks {missing}; export again.")
    if check_hash and sidecar.get("model_sha256") not in (None, _sha256(model_file)):
        raise ConfigError(f"sidecar {side} describes another file than {model_file.name} "
                          "(its SHA-256 differs): the two come from different exports; "
                          "export again, and keep the pair together.")
    return sidecar
