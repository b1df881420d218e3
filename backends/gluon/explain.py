"""The Gluon explanation hooks: a layer's activations and the gradients of a class score with
respect to them, and the classification head's input.

A hybridized network runs as one cached graph, so there are no forward hooks to read a layer
with. Instead the network is decomposed once into the chain of blocks its forward calls one
after another (``features.0``, ``features.1``, ..., ``output``; a ``HybridSequential`` is
opened up, a block with a skip connection or a concatenation stays whole): a symbolic trace
(forward hooks on a call with ``mx.sym.var("data")``, which computes nothing and touches no
parameter) records every block call with its input and output, and a block is opened up only
when its children's calls feed each other from its input to its output, so the chain computes
exactly what the network computes. A layer's activations are then the chain's prefix run in
inference, and its gradient that of the rest, recorded in predict mode, by ``autograd.grad``
(no parameter gradient is written). A model whose forward is no such chain gets no layers.

The CAM math is the core's (``xrayprototype.explain``); this file only reads arrays.
"""
from dataclasses import dataclass, field
from typing import Dict, List, Optional

import numpy as np

from xrayprototype.backend import LayerGradients
from xrayprototype.errors import ConfigError

from ._compat import import_mxnet

mx = import_mxnet()
autograd, nd, nn = mx.autograd, mx.nd, mx.gluon.nn

#: global pools reduce a feature map to a vector; they are never an explanation layer
GLOBAL_POOLS = (nn.GlobalAvgPool2D, nn.GlobalMaxPool2D)
#: blocks that pass a map through unchanged at inference: never chosen as the layer
PASS_THROUGH = (nn.Dropout, mx.gluon.contrib.nn.Identity)
#: the input side of the symbolic trace (shapes only: nothing is computed)
TRACE_SIZE = 224


@dataclass
class _Call:
    """One block call of the symbolic trace, with the calls its forward made."""
    block: object
    inputs: tuple
    output: object = None
    children: List["_Call"] = field(default_factory=list)


@dataclass
class Chain:
    """A network as the blocks its forward calls one after another.

    Attributes:
        blocks: the chain's blocks, in call order; running them one after another on a batch
            gives the network's output.
        ends: layer name -> index in ``blocks`` of the last block of that layer (a container
            ends with its last child), input side first.
        spatial: the names of ``spatial_layers()``.
        head_start: index in ``blocks`` of the head's first block (None: an empty chain).
    """
    blocks: list = field(default_factory=list)
    ends: Dict[str, int] = field(default_factory=dict)
    spatial: List[str] = field(default_factory=list)
    head_start: Optional[int] = None


def _paths(net) -> Dict[int, str]:
    """id(block) -> dotted child path ("features.7.1"), the first path of a shared block."""
    paths: Dict[int, str] = {}

    def visit(block, path):
        paths.setdefault(id(block), path)
        for key, child in block._children.items():
            visit(child, f"{path}.{key}" if path else key)
    visit(net, "")
    return paths


def _trace(net) -> _Call:
    """The call tree of one symbolic forward pass of ``net``."""
    root = _Call(net, ())
    stack = [root]

    def before(block, inputs):
        call = _Call(block, inputs)
        stack[-1].children.append(call)
        stack.append(call)

    def after(_block, _inputs, output):
        stack.pop().output = output

    handles = []
    net.apply(lambda block: handles.extend((block.register_forward_pre_hook(before),
                                            block.register_forward_hook(after))))
    try:
        net(mx.sym.var("data"))
    finally:
        for handle in handles:
            handle.detach()
    return root.children[0]


def _single(value) -> bool:
    return isinstance(value, mx.sym.Symbol) and len(value.list_outputs()) == 1


def _is_chain(call: _Call) -> bool:
    """Whether ``call``'s children, one input and one output each, feed each other from its
    input to its output (and nothing else happens in between)."""
    kids = call.children
    if not kids or not all(len(k.inputs) == 1 and _single(k.output) for k in kids):
        return False
    fed = all(later.inputs[0] is earlier.output for earlier, later in zip(kids, kids[1:]))
    return fed and kids[0].inputs[0] is call.inputs[0] and kids[-1].output is call.output


def _expand(call: _Call, chain: Chain, names: Dict[int, str], outputs: Dict[str, object],
            counts: Dict[int, int]) -> None:
    """Append ``call``'s blocks to ``chain.blocks`` and its layer names (post-order: a
    container after its children, as PyTorch's forward hooks fire) to ``chain.ends``."""
    if _is_chain(call):
        for kid in call.children:
            _expand(kid, chain, names, outputs, counts)
    else:
        chain.blocks.append(call.block)
    name = names.get(id(call.block), "")
    if name and counts[id(call.block)] == 1:    # a block called twice has no single output
        chain.ends[name] = len(chain.blocks) - 1
        outputs[name] = call.output


def _count_calls(call: _Call, counts: Dict[int, int]) -> None:
    counts[id(call.block)] = counts.get(id(call.block), 0) + 1
    for kid in call.children:
        _count_calls(kid, counts)


def decompose(net, head) -> Chain:
    """``net`` as a chain of blocks and its spatial layers (see the module docstring): 4-D
    outputs that end before the first global pool and before the head, neither a global
    pool nor a pass-through block. An empty chain when ``net``'s forward is not a chain of
    blocks that reaches ``head``."""
    root, chain = _trace(net), Chain()
    if not _is_chain(root):
        return chain
    counts: Dict[int, int] = {}
    _count_calls(root, counts)
    names, outputs = _paths(net), {}
    for kid in root.children:
        _expand(kid, chain, names, outputs, counts)
    starts = [i for i, block in enumerate(chain.blocks) if block is head or _inside(block, head)]
    if not starts:                      # the head is called inside a block that is no chain
        return Chain()
    chain.head_start = starts[0]
    pools = [i for i, block in enumerate(chain.blocks) if isinstance(block, GLOBAL_POOLS)]
    stop = min(pools + starts + [len(chain.blocks)])
    shapes = _output_shapes(outputs)
    chain.spatial = [name for name, end in chain.ends.items()
                     if end < stop and len(shapes[name]) == 4
                     and not isinstance(chain.blocks[end], PASS_THROUGH + GLOBAL_POOLS)]
    return chain


def _inside(block, container) -> bool:
    found = []
    container.apply(lambda b: found.append(b is block))
    return any(found)


def _output_shapes(outputs: Dict[str, object]) -> Dict[str, tuple]:
    if not outputs:
        return {}
    group = mx.sym.Group(list(outputs.values()))
    _, shapes, _ = group.infer_shape_partial(data=(1, 3, TRACE_SIZE, TRACE_SIZE))
    return dict(zip(outputs, (tuple(shape) for shape in shapes)))


def _run(blocks, x):
    for block in blocks:
        x = block(x)
    return x


def layer_gradients(chain: Chain, x, class_indices: np.ndarray, layer: str) -> LayerGradients:
    """The chain's prefix up to ``layer`` in inference, then the rest recorded in predict mode
    and ``autograd.grad`` of the chosen scores with respect to the prefix's output."""
    end = chain.ends[layer]
    with autograd.pause(train_mode=False):
        activations = _run(chain.blocks[:end + 1], x)
    activations.attach_grad()
    index = nd.array(np.asarray(class_indices), ctx=x.context, dtype=np.float32)
    with autograd.record(train_mode=False):
        scores = _run(chain.blocks[end + 1:], activations)
        chosen = nd.pick(scores, index, axis=1).sum()
    gradients = autograd.grad(chosen, [activations], train_mode=False)[0]
    scores = scores.asnumpy().astype(np.float64)
    return LayerGradients(layer, activations.asnumpy().astype(np.float32),
                          gradients.asnumpy().astype(np.float32), scores, _softmax(scores))


def _softmax(scores: np.ndarray) -> np.ndarray:
    exp = np.exp(scores - scores.max(axis=1, keepdims=True))
    return exp / exp.sum(axis=1, keepdims=True)


def require_chain(chain: Chain, net) -> None:
    """Refuse a model whose forward is no chain of blocks reaching its head (darknet53: a
    functional global pool between ``features`` and ``output``)."""
    if not chain.blocks:
        raise ConfigError(
            f"the forward of this gluon model ({type(net).__name__}) is not a chain of blocks "
            "ending in its classification head (it computes between its blocks), so its layers "
            "and head input cannot be read for explanations; choose a model whose network is "
            "'features' then 'output', e.g. 'resnet18', 'densenet121' or 'mobilenet_v2'.")


def penultimate_features(chain: Chain, x) -> np.ndarray:
    """The head's input for batch ``x``; a spatial input (squeezenet) is averaged over space."""
    with autograd.pause(train_mode=False):
        features = _run(chain.blocks[:chain.head_start], x)
    if features.ndim == 4:
        features = features.mean(axis=(2, 3))
    return features.reshape((features.shape[0], -1)).asnumpy().astype(np.float64)
