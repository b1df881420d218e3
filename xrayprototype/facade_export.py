"""The facade's export verb, ``Export``: the trained model as a file other programs run
without this library (ONNX, with a JSON sidecar). The work is done by ``export`` (the core:
sidecar, checks) and each backend's ``export`` module (the graph)."""
from pathlib import Path
from typing import Dict, Optional, Union

from .facade_base import FacadeBase


class ExportVerbs(FacadeBase):
    """Mixed into ``prototype``: the open experiment's prediction model as an ONNX file."""

    def Export(self, format: str = "onnx", path: Optional[Union[str, Path]] = None) -> Dict:
        """Export the weights Infer predicts with (the best epoch's, or those chosen with
        ``use_saved_model``) as ``model.onnx`` plus its sidecar ``model.json``: input size,
        layout and dtype, the preprocessing (resize, mean / std normalisation), class names,
        the decision threshold, the temperature (``Calibrate``; applied outside the graph)
        and the versions. The graph takes the normalised float32 batch and gives the
        softmax (multi-label: sigmoid) probabilities, any batch size; it runs in
        ``onnxruntime`` without this library (``pip install 'xrayprototype[export]'``), and
        ``xrayprototype.onnx_model.OnnxModel`` predicts image files with it as Infer does.

        Args:
            format: "onnx" (the only format; PyTorch, Gluon and Keras backends export it).
            path: a ``.onnx`` file to write, or a folder to write ``model.onnx`` into;
                default ``<experiment>/export/model.onnx``. The sidecar goes beside it,
                same name with ``.json``.

        Returns:
            ``{"model": the .onnx path, "sidecar": the .json path, "format", "opset",
            "input": {"name", "dtype", "layout", "shape", ...}, "classes"}``.

        Example:
            >>> gtf.Prototype("Pneumonia", "resnet18", eval_infer=True)
            >>> written = gtf.Export(format="onnx")
            >>> written["model"], written["sidecar"]
        """
        from .export import export_experiment

        written = export_experiment(self._require_experiment(), format, path)
        spec = written["input"]
        self._say(f"exported {written['model']} (opset {written['opset']}, input "
                  f"'{spec['name']}' {spec['layout']} {spec['shape']} float32) and its "
                  f"sidecar {written['sidecar']}")
        return written
