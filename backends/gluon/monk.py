"""Reading the network a Monk v1 run exported (``HybridBlock.export``: ``final-symbol.json`` +
``final-0000.params``) as ``SymbolBlock.imports`` does: a JSON graph and arrays, no Python code.
A graph ending in a softmax or sigmoid gives its input (class scores) instead."""
import json
import warnings
from pathlib import Path

from xrayprototype.monk_workspace import model_file_error

from ._compat import import_mxnet

#: the files Monk's eval_infer loads (gluon/models/return_model.py: load_model(final=True))
SYMBOL, PARAMS = "final-symbol.json", "final-0000.params"
#: final operators left out: the backend applies its own softmax (or sigmoid, multi-label)
SOFTMAX_OPS = ("softmax", "SoftmaxActivation", "SoftmaxOutput", "sigmoid")


def load_exported_model(model_dir: Path, ctx):
    """A ``SymbolBlock`` of Monk's ``final`` export on ``ctx``; missing or damaged files raise
    ModelFileError naming them."""
    mx = import_mxnet()
    symbol, params = Path(model_dir) / SYMBOL, Path(model_dir) / PARAMS
    for path in (symbol, params):
        if not path.is_file():
            raise model_file_error(path, "does not exist")
    try:
        graph = mx.sym.load(str(symbol))
    except Exception as err:  # noqa: BLE001  (MXNetError, JSON errors)
        raise model_file_error(symbol, "is truncated or corrupt", err) from err
    graph = strip_softmax(graph)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            net = mx.gluon.SymbolBlock(graph, mx.sym.var("data"))
            net.collect_params().load(str(params), ctx=ctx, allow_missing=False,
                                      ignore_extra=True)
    except Exception as err:  # noqa: BLE001
        raise model_file_error(params, "is truncated or corrupt, or does not fit "
                                       f"{symbol.name}", err) from err
    return net


def strip_softmax(graph):
    """``graph`` without a final softmax / sigmoid operator (its input instead)."""
    described = json.loads(graph.tojson())
    nodes, heads = described["nodes"], described["heads"]
    last = nodes[heads[0][0]] if len(heads) == 1 else {}
    activation = (last.get("attrs") or {}).get("act_type")
    if last.get("op") in SOFTMAX_OPS or activation in ("softmax", "sigmoid"):
        children = graph.get_children()
        if children is not None:
            return children[0]
    return graph
