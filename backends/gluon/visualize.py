"""The Gluon visualization hooks: convolution kernels, convolution outputs and the model
exported for Netron (symbol ``.json`` + ``.params``, what ``HybridBlock.export`` writes).

A hybridized network runs as one cached graph (no forward hooks fire inside it), so the
outputs of its convolutions are read from its symbol: a ``SymbolBlock`` whose outputs are
the convolutions' outputs, sharing the network's parameters, runs one inference pass. Layers
are named by their dotted child paths ("features.0", "features.5.0.body.0"), as the
explanation layers are. The grids are drawn by the core (``xrayprototype.visualize``).
"""
import warnings
from pathlib import Path
from typing import Dict, List, Tuple

import numpy as np

from ._compat import import_mxnet

mx = import_mxnet()
nn = mx.gluon.nn


def _convolutions(net) -> Dict[str, object]:
    """Dotted child path -> ``nn.Conv2D`` block, in registration (definition) order; a block
    registered twice is named by its first path."""
    found: Dict[str, object] = {}
    seen = set()

    def visit(block, path):
        if id(block) in seen:
            return
        seen.add(id(block))
        if isinstance(block, nn.Conv2D):
            found[path] = block
        for key, child in block._children.items():
            visit(child, f"{path}.{key}" if path else key)
    visit(net, "")
    return found


def conv_layers(net) -> List[str]:
    return list(_convolutions(net))


def conv_kernels(net, ctx, layers: List[str]) -> List[Tuple[str, np.ndarray]]:
    blocks = _convolutions(net)
    return [(name, blocks[name].weight.data(ctx).asnumpy().astype(np.float32))
            for name in layers]


def conv_feature_maps(net, x, layers: List[str]) -> List[Tuple[str, np.ndarray]]:
    """The convolutions' outputs (the symbol's ``<block name>_fwd_output``) in inference."""
    blocks = _convolutions(net)
    data = mx.sym.var("data")
    internals = net(data).get_internals()
    outputs = [internals[blocks[name].name + "_fwd_output"] for name in layers]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")       # SymbolBlock's note on the untyped input
        reader = mx.gluon.SymbolBlock(outputs, data, params=net.collect_params())
    with mx.autograd.pause(train_mode=False):
        results = reader(x)
    results = results if isinstance(results, (list, tuple)) else [results]
    return [(name, result.asnumpy().astype(np.float32)) for name, result in zip(layers, results)]


def export_model(net, ctx, stem: Path, data_shape: Tuple[int, int, int]) -> Path:
    """``<stem>-symbol.json`` (what Netron opens) and ``<stem>-0000.params``, after one
    inference pass at ``data_shape`` so that the exported graph has that input."""
    with mx.autograd.pause(train_mode=False):
        net(mx.nd.zeros((1, *data_shape), ctx=ctx))
    net.export(str(stem), epoch=0)
    return Path(f"{stem}-symbol.json")
