"""The Keras ONNX export (``Export(format="onnx")``) with tf2onnx, as Keras' own
``model.export(format="onnx")`` converts on TensorFlow: the model in inference mode, its
``preprocess`` layer (``models.ApplicationPreprocessing``) converted into plain ONNX operators
like every other layer, softmax (or sigmoid, multi-label) on top; NHWC float32 batches in, any
batch size. The file needs neither this library nor TensorFlow to run.

tf2onnx freezes the variables a traced function reads, but not the other tensors it captures:
a ``keras.layers.Normalization`` (EfficientNet's first layers) keeps its mean and variance as
tensors computed when it was built, and they would become extra graph inputs. They are written
into the file as constants (``_inline_captured_tensors``).
"""
import logging
from pathlib import Path
from typing import Dict, Tuple

import numpy as np

from ._compat import setup_tensorflow

tf, keras = setup_tensorflow()

#: the ONNX opset of the converted graph (tf2onnx 1.16+ writes it; onnxruntime >= 1.14 runs it)
OPSET = 17


def _captured_tensors(function) -> Dict[str, np.ndarray]:
    """The traced graph's placeholder name -> value of each captured tensor (not a variable)."""
    graph = function.get_concrete_function().graph
    return {inner.name: outer.numpy() for outer, inner in
            zip(graph.external_captures, graph.internal_captures)
            if outer.dtype != tf.resource and hasattr(outer, "numpy")}


def _inline_captured_tensors(model_proto, captured: Dict[str, np.ndarray]) -> None:
    """Graph inputs that are captured tensors become initializers (constants)."""
    from onnx import numpy_helper

    graph = model_proto.graph
    kept = [value for value in graph.input if value.name not in captured]
    for value in graph.input:
        if value.name in captured:
            graph.initializer.append(numpy_helper.from_array(captured[value.name], value.name))
    del graph.input[:]
    graph.input.extend(kept)


def export_onnx(model, device: str, path: Path, data_shape: Tuple[int, int, int],
                multi_label: bool) -> Path:
    """``path``: ``model`` with its activation, converted by ``tf2onnx.convert.from_function``."""
    import onnx
    import tf2onnx

    channels, height, width = data_shape
    signature = (tf.TensorSpec((None, height, width, channels), tf.float32, name="image"),)
    activation = tf.nn.sigmoid if multi_label else tf.nn.softmax

    @tf.function(input_signature=signature)
    def probabilities(image):
        return activation(model(image, training=False))

    logging.getLogger("tf2onnx").setLevel(logging.ERROR)     # its per-op conversion notes
    with tf.device(device):
        model_proto, _ = tf2onnx.convert.from_function(probabilities, input_signature=signature,
                                                       opset=OPSET)
        _inline_captured_tensors(model_proto, _captured_tensors(probabilities))
    onnx.save(model_proto, str(path))
    return Path(path)
