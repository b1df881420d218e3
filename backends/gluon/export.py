"""The Gluon ONNX export (``Export(format="onnx")``) with MXNet's own exporter (mx2onnx): the
network's symbol (what ``HybridBlock.export`` writes) with softmax (or sigmoid, multi-label)
on top, NCHW float32 batches in, any batch size.

mx2onnx of MXNet 1.9.1 was written for onnx <= 1.13, and two things changed since; both are
bridged here, for the duration of the export only, without touching what it computes:

1. ``onnx.mapping`` (numpy dtype <-> TensorProto type tables) was removed in onnx 1.16: a
   module with the same two tables, built from ``onnx.helper``, stands in for it.
2. mx2onnx declares the installed onnx's newest opset (28 for onnx 1.23) while it translates
   operators by its opset 12/13 tables; ``onnx.defs.onnx_opset_version`` is made to answer
   ``OPSET`` (13, its newest table), so the file declares the opset its nodes follow.
"""
import sys
import tempfile
import types
from pathlib import Path
from typing import Tuple
from unittest import mock

import numpy as np

from ._compat import import_mxnet

mx = import_mxnet()

#: the newest opset mx2onnx 1.9.1 has operator translations for
OPSET = 13


def _onnx_mapping():
    """A stand-in for the removed ``onnx.mapping`` (the two tables mx2onnx reads)."""
    from onnx import TensorProto, helper

    mapping = types.ModuleType("onnx.mapping")
    mapping.TENSOR_TYPE_TO_NP_TYPE, mapping.NP_TYPE_TO_TENSOR_TYPE = {}, {}
    for tensor_type in (TensorProto.FLOAT, TensorProto.DOUBLE, TensorProto.FLOAT16,
                        TensorProto.INT64, TensorProto.INT32, TensorProto.INT8,
                        TensorProto.UINT8, TensorProto.BOOL):
        dtype = np.dtype(helper.tensor_dtype_to_np_dtype(tensor_type))
        mapping.TENSOR_TYPE_TO_NP_TYPE[tensor_type] = dtype
        mapping.NP_TYPE_TO_TENSOR_TYPE[dtype] = tensor_type
    return mapping


def _with_activation(net, ctx, data_shape: Tuple[int, int, int], multi_label: bool):
    """(symbol with the activation, [arg params, aux params]) of the network as exported."""
    with mx.autograd.pause(train_mode=False):
        net(mx.nd.zeros((1, *data_shape), ctx=ctx))          # the graph at this input size
    with tempfile.TemporaryDirectory(prefix="xrayprototype-export-") as folder:
        net.export(str(Path(folder) / "net"), epoch=0)
        symbol, arg_params, aux_params = mx.model.load_checkpoint(str(Path(folder) / "net"), 0)
    activation = mx.sym.sigmoid(symbol) if multi_label else mx.sym.softmax(symbol, axis=1)
    return activation, [arg_params, aux_params]


def export_onnx(net, ctx, path: Path, data_shape: Tuple[int, int, int],
                multi_label: bool) -> Path:
    """``path``: the network (inference mode) with its activation, at opset ``OPSET``."""
    import onnx

    symbol, params = _with_activation(net, ctx, data_shape, multi_label)
    mapping = getattr(onnx, "mapping", None) or _onnx_mapping()
    with mock.patch.dict(sys.modules, {"onnx.mapping": mapping}), \
            mock.patch.object(onnx, "mapping", mapping, create=True), \
            mock.patch("onnx.defs.onnx_opset_version", lambda: OPSET):
        mx.onnx.export_model(symbol, params, [(1, *data_shape)], [np.float32], str(path),
                             dynamic=True, dynamic_input_shapes=[(None, *data_shape)])
    return Path(path)
