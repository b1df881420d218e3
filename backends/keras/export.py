"""The Keras ONNX export (``Export(format="onnx")``) with tf2onnx, as Keras' own
``model.export(format="onnx")`` converts on TensorFlow: the model in inference mode, its
``preprocess`` layer (``models.ApplicationPreprocessing``) converted into plain ONNX operators
like every other layer, softmax (or sigmoid, multi-label) on top; NHWC float32 batches in, any
batch size. The file needs neither this library nor TensorFlow to run."""
import logging
from pathlib import Path
from typing import Tuple

from ._compat import setup_tensorflow

tf, keras = setup_tensorflow()

#: the ONNX opset of the converted graph (tf2onnx 1.16+ writes it; onnxruntime >= 1.14 runs it)
OPSET = 17


def export_onnx(model, device: str, path: Path, data_shape: Tuple[int, int, int],
                multi_label: bool) -> Path:
    """``path``: ``model`` with its activation, converted by ``tf2onnx.convert.from_function``."""
    import tf2onnx

    channels, height, width = data_shape
    signature = (tf.TensorSpec((None, height, width, channels), tf.float32, name="image"),)
    activation = tf.nn.sigmoid if multi_label else tf.nn.softmax

    @tf.function(input_signature=signature)
    def probabilities(image):
        return activation(model(image, training=False))

    logging.getLogger("tf2onnx").setLevel(logging.ERROR)     # its per-op conversion notes
    with tf.device(device):
        tf2onnx.convert.from_function(probabilities, input_signature=signature, opset=OPSET,
                                      output_path=str(path))
    return Path(path)
