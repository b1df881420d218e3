"""``OnnxModel``: predictions of an exported ONNX file (``Export(format="onnx")``) with
onnxruntime, with the same contract as an ``Experiment``'s (``predict_files``,
``result_of``), so that batch inference, the CLI and a user's script treat both alike.

The image files are decoded and preprocessed by the core (``data.ImageStore``: ``load_image``
and the sidecar's geometry; ``Normalizer``: its mean and std; the sidecar's layout), batch by
batch, exactly as the experiment predicts; neither the training framework nor the experiment
folder is needed, only the ``.onnx`` file and its sidecar ``.json``.
"""
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Union

import numpy as np

from .export import read_sidecar, require_package


class OnnxModel:
    """An exported model and its sidecar.

    Args:
        path: the ``.onnx`` file; its sidecar ``<name>.json`` lies beside it.
        batch_size: images decoded and run at a time (memory stays bounded by it).
        num_workers: decoding threads.
        providers: onnxruntime execution providers; default the CPU's.

    Attributes:
        classes, multi_label, temperature, decision_threshold (the experiment's decision
        record or None), label_thresholds (multi-label), sidecar (the whole sidecar dict).

    Example:
        >>> model = OnnxModel("workspace/Pneumonia/resnet18/export/model.onnx")
        >>> rows = model.predict_files(["a.jpeg", "b.png"])
        >>> model.result_of("a.jpeg", rows[0])["predicted_class"]
    """

    def __init__(self, path: Union[str, Path], batch_size: int = 32, num_workers: int = 2,
                 providers: Optional[Sequence[str]] = None):
        self.path = Path(path)
        self.sidecar = read_sidecar(self.path)
        self.classes: List[str] = list(self.sidecar["classes"])
        self.multi_label = bool(self.sidecar["multi_label"])
        self.temperature: Optional[float] = self.sidecar["temperature"]
        self.decision_threshold: Optional[Dict] = self.sidecar["decision_threshold"] or None
        self.label_thresholds: Optional[Dict] = self.sidecar.get("label_thresholds") or None
        self.batch_size, self.num_workers = int(batch_size), int(num_workers)
        self._providers = list(providers or ["CPUExecutionProvider"])
        self._session = None

    @property
    def session(self):
        """The onnxruntime session (created on first use)."""
        if self._session is None:
            ort = require_package("onnxruntime", "onnxruntime")
            self._session = ort.InferenceSession(str(self.path), providers=self._providers)
        return self._session

    def predict_batch(self, images: np.ndarray) -> np.ndarray:
        """The graph's (uncalibrated) probabilities, float64 (N, classes), of a batch already
        preprocessed into the sidecar's input (layout, normalisation)."""
        output = self.session.run([self.sidecar["output"]["name"]],
                                  {self.sidecar["input"]["name"]: images.astype(np.float32)})[0]
        return np.asarray(output, dtype=np.float64)

    def _loader(self, files: List[str], on_corrupt: str):
        from .data import BatchLoader, ImageRecords, ImageStore, Normalizer
        from .data.geometry import Geometry

        spec, steps = self.sidecar["input"], self.sidecar["preprocessing"]
        size = int(spec["height"])
        geometry = Geometry(steps.get("resize"), steps.get("center_crop"),
                            bool(steps.get("grayscale")), size)
        store = ImageStore(ImageRecords(files, [0] * len(files), self.classes), size,
                           int(spec["channels"]), steps["resize_mode"], cache=False,
                           on_corrupt=on_corrupt, geometry=geometry)
        return BatchLoader(store, self.batch_size, Normalizer(steps["mean"], steps["std"]),
                           spec["layout"], num_workers=self.num_workers)

    def predict_files(self, files: Sequence[Union[str, Path]], tta: bool = False,
                      on_corrupt: str = "skip",
                      skipped: Optional[Dict[str, str]] = None) -> np.ndarray:
        """Class probabilities of image files, one row per file in order, with the
        temperature applied when the sidecar has one (as ``Experiment.predict_files``).
        An undecodable file's row is NaN and its reason goes to ``skipped`` (a dict, when
        given); with ``on_corrupt="error"`` it raises CorruptImageError naming it instead.
        ``tta`` averages each image with its horizontal mirror image."""
        from .calibration import apply_temperature
        from .evaluation import predict_with_tta

        files = [str(f) for f in files]
        rows = np.full((len(files), len(self.classes)), np.nan)
        loader = self._loader(files, on_corrupt)
        try:
            for batch in loader.epoch(0):
                rows[batch.indices] = predict_with_tta(self.predict_batch, batch.images,
                                                       loader.layout) \
                    if tta else self.predict_batch(batch.images)
        finally:
            if skipped is not None:
                skipped.update(loader.store.skipped)
        if self.temperature is not None and not self.multi_label:
            done = ~np.isnan(rows).any(axis=1)
            rows[done] = apply_temperature(rows[done], self.temperature)
        return rows

    def result_of(self, file: str, row: np.ndarray, return_raw: bool = False,
                  img_thresh: Optional[float] = None) -> Dict:
        """The result dict of one file's row of ``predict_files``, the very dict
        ``Experiment.infer`` gives: the decision threshold and temperature of the sidecar, or
        a multi-label model's per-label thresholds (``img_thresh`` for all when given)."""
        from .batch_inference import result_of_row

        return result_of_row(self, file, row, return_raw, img_thresh)
