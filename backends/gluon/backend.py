"""GluonBackend: the MXNet Gluon calls of one experiment, nothing else."""
import json
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import numpy as np

from xrayprototype.backend import (Backend, Capabilities, LayerGradients,
                                   check_explanation_layer)
from xrayprototype.config import ModelConfig, OptimConfig
from xrayprototype.errors import ExperimentError
from xrayprototype.optim import MOMENTUM_PARAMETER, gradient_changes

from . import explain, export, visualize
from ._compat import import_gluoncv, import_mxnet
from .losses import LOSS_NAMES, ClassificationLoss, MultiLabelLoss
from .monk import PARAMS, SYMBOL, load_exported_model
from .heads import HEAD_LAYER_NAMES
from .models import (NATIVE_PREFIX, base_layers, create_model, freeze_first, head_name,
                     head_parameters, inferred_shapes, model_table)
from .optimizers import OPTIMIZER_NAMES, create_optimizer, load_states, save_states

mx = import_mxnet()
autograd, nd = mx.autograd, mx.nd


def _gpu_count() -> int:
    try:
        return mx.context.num_gpus()
    except mx.base.MXNetError:
        return 0


class GluonBackend(Backend):
    """``mxnet.gluon.model_zoo`` / gluoncv models trained with ``gluon.Trainer``; hybridized.

    Models are saved as ``{stem}-symbol.json`` + ``{stem}-0000.params`` (``HybridBlock.export``,
    loadable without any Python class through ``mx.gluon.SymbolBlock.imports``), a small
    ``{stem}.json`` that says so, and the optimizer state as ``{stem}.states`` (an NDArray file).

    Example:
        >>> from xrayprototype import prototype
        >>> gtf = prototype(verbose=1)
        >>> gtf.Prototype("Pneumonia", "resnet18-gluon", backend="gluon")
        >>> gtf.Default(dataset_path="data/train", model_name="resnet18", num_epochs=2)
        >>> gtf.Train()
    """

    name = "gluon"

    def __init__(self):
        self.net = None
        self.trainer: Optional[mx.gluon.Trainer] = None
        self.loss_fn: Optional[ClassificationLoss] = None
        self.ctx = mx.cpu()
        self._chain: Optional[explain.Chain] = None

    @property
    def model(self):
        """The built ``HybridBlock`` (``None`` before ``build_model``)."""
        return self.net

    @classmethod
    def framework_versions(cls) -> Dict[str, str]:
        from importlib.metadata import PackageNotFoundError, version
        try:
            gluoncv = version("gluoncv")        # the distribution's; its __version__ says 0.11.0
        except PackageNotFoundError:
            gluoncv = import_gluoncv().__version__
        return {"mxnet": mx.__version__, "gluoncv": gluoncv}

    def capabilities(self) -> Capabilities:
        devices = ("cpu", "gpu") if _gpu_count() else ("cpu",)
        return Capabilities(model_table(), tuple(OPTIMIZER_NAMES), LOSS_NAMES, "NCHW",
                            NATIVE_PREFIX, devices, soft_targets=True, layer_freezing=True,
                            discriminative_lr=True, input_channels=(3,),
                            explanations=True, multi_label=True, visualization=True,
                            head_layers=HEAD_LAYER_NAMES, export_formats=("onnx",),
                            momentum_cycling=tuple(MOMENTUM_PARAMETER))

    def build_model(self, config: ModelConfig, num_classes: int) -> Dict:
        self.ctx = mx.gpu(0) if config.use_gpu and _gpu_count() else mx.cpu()
        net = create_model(config, num_classes)
        net.collect_params().reset_ctx(self.ctx)
        self._shapes = inferred_shapes(net, 224)
        net.hybridize(static_alloc=True, static_shape=True)
        self.net, self.trainer, self.loss_fn, self._chain = net, None, None, None
        return {"num_parameters": self._count(False), "trainable_parameters": self._count(True),
                "device": str(self.ctx)}

    def _count(self, trainable: bool) -> int:
        """Learnable parameters (BatchNorm statistics excluded), as PyTorch counts them; a
        layer sized by the input (VGG's first Dense) is counted at 224 x 224."""
        shapes = self._shapes
        params = [p for name, p in self.net.collect_params().items()
                  if name in shapes["__arguments__"] and (not trainable or p.grad_req != "null")]
        return int(sum(np.prod(shapes[p.name]) for p in params))

    def configure(self, config: OptimConfig, class_weights: Optional[np.ndarray]) -> None:
        optimizer = create_optimizer(config.optimizer, config.learning_rate,
                                     config.optimizer_params)
        head = {id(p) for p in head_parameters(self.net)}
        for param in self.net.collect_params().values():    # discriminative learning rates
            param.lr_mult = 1.0 if id(param) in head else float(config.base_lr_factor)
        trainable = [p for p in self.net.collect_params().values() if p.grad_req != "null"]
        self.trainer = mx.gluon.Trainer(trainable, optimizer, kvstore=None)
        self.optimizer_name = config.optimizer
        self.gradient_changes = gradient_changes(config.optimizer_params)
        self.loss_fn = MultiLabelLoss(class_weights, self.ctx, float(config.loss_params.get(
            "weight", 1.0))) if self.multi_label else \
            ClassificationLoss(config.loss, config.loss_params, class_weights, self.ctx)

    def _probabilities(self, logits) -> np.ndarray:
        """Softmax over classes, or per-class sigmoid in multi-label mode."""
        scores = nd.sigmoid(logits) if self.multi_label else nd.softmax(logits, axis=1)
        return scores.asnumpy().astype(np.float64)

    def set_learning_rate(self, learning_rate: float) -> None:
        self.trainer.set_learning_rate(learning_rate)

    def set_momentum(self, momentum: float) -> None:
        # mx optimizers read it at every update; the attribute has the core's name
        setattr(self.trainer._optimizer, MOMENTUM_PARAMETER[self.optimizer_name], momentum)

    def _change_gradients(self) -> None:
        """Clip (element-wise, then the global norm) and damp, as ``optim.gradient_changes``."""
        change = self.gradient_changes
        if not (change["clipvalue"] or change["clipnorm"] or change["scale"] != 1.0):
            return
        grads = [p.grad(self.ctx) for p in self.trainer._params if p.grad_req != "null"]
        if change["clipvalue"]:
            for grad in grads:
                grad[:] = nd.clip(grad, -change["clipvalue"], change["clipvalue"])
        if change["clipnorm"]:
            mx.gluon.utils.clip_global_norm(grads, change["clipnorm"], check_isfinite=False)
        if change["scale"] != 1.0:
            for grad in grads:
                grad[:] = grad * change["scale"]

    def base_layers(self) -> List[str]:
        return [name for name, _ in base_layers(self.net)]

    def set_frozen_layers(self, count: int) -> Dict:
        freeze_first(self.net, count)
        self.net.hybridize(static_alloc=True, static_shape=True)  # rebuilt graph: BatchNorm modes
        self.trainer = None
        return {"trainable_parameters": self._count(True)}

    def snapshot_weights(self):
        """In memory: ``save`` exports a graph, which exists only after a first batch."""
        return {name: param.data(self.ctx).copy()
                for name, param in self.net.collect_params().items() if param._data is not None}

    def restore_weights(self, snapshot) -> None:
        params = self.net.collect_params()
        for name, value in snapshot.items():
            params[name].set_data(value)

    def _arrays(self, images: np.ndarray, labels: Optional[np.ndarray] = None):
        x = nd.array(images, ctx=self.ctx, dtype=np.float32)
        y = None if labels is None else nd.array(labels, ctx=self.ctx, dtype=np.float32)
        return x, y

    def train_step(self, images: np.ndarray, labels: np.ndarray) -> Tuple[float, int]:
        if self.trainer is None:
            raise ExperimentError("train_step before configure(); the core configures the "
                                  "optimizer and loss first.")
        x, y = self._arrays(images, labels)
        with autograd.record():
            logits = self.net(x)
            loss = self.loss_fn(logits, y)
        loss.backward()
        self._change_gradients()
        self.trainer.step(1)          # the loss is already the batch mean
        if self.multi_label:                 # every class right at 0.5 (targets may be mixed)
            right = ((logits > 0) == (y > 0.5)).min(axis=1)
            return float(loss.asscalar()), int(right.sum().asscalar())
        target = y.argmax(axis=1) if y.ndim == 2 else y     # mixup: the dominant label
        correct = int((logits.argmax(axis=1) == target).sum().asscalar())
        return float(loss.asscalar()), correct

    def eval_step(self, images: np.ndarray, labels: np.ndarray) -> Tuple[float, np.ndarray]:
        x, y = self._arrays(images, labels)
        logits = self.net(x)
        loss_fn = self.loss_fn or (MultiLabelLoss(None, self.ctx) if self.multi_label else
                                   ClassificationLoss("softmax_crossentropy", {}, None, self.ctx))
        loss = float(loss_fn(logits, y).asscalar())
        return loss, self._probabilities(logits)

    def predict(self, images: np.ndarray) -> np.ndarray:
        x, _ = self._arrays(images)
        return self._probabilities(self.net(x))

    def save(self, stem: Path, with_optimizer: bool = False) -> List[Path]:
        if not self.net._cached_graph:
            raise ExperimentError("the gluon backend exports a network after it has run at "
                                  "least one batch (its graph and input size come from it).")
        self.net.export(str(stem), epoch=0)
        written = [Path(f"{stem}-symbol.json"), Path(f"{stem}-0000.params"), Path(f"{stem}.json")]
        written[2].write_text(json.dumps({      # also what the core's models/<which>.* looks for
            "format": "mxnet HybridBlock.export", "symbol": written[0].name,
            "params": written[1].name, "input": "data", "layout": "NCHW",
            "reload": f"mx.gluon.SymbolBlock.imports('{written[0].name}', ['data'], "
                      f"'{written[1].name}')", **self.framework_versions()}, indent=2))
        if with_optimizer and self.trainer is not None:
            save_states(self.trainer, f"{stem}.states")
            written.append(Path(f"{stem}.states"))
        return written

    def load(self, stem: Path, with_optimizer: bool = False) -> None:
        params = Path(f"{stem}-0000.params")
        if not params.is_file():
            raise ExperimentError(f"{params} does not exist; it is written by save({stem}).")
        loaded = nd.load(str(params))
        own = self.net.collect_params()
        names = {key[4:] for key in loaded}
        if names != set(own.keys()):
            missing, extra = sorted(set(own.keys()) - names), sorted(names - set(own.keys()))
            raise ExperimentError(f"{params.name} does not fit the built network (missing "
                                  f"{missing[:3]}, unexpected {extra[:3]}); was it saved from "
                                  "another model or class count?")
        for key, value in loaded.items():
            own[key[4:]]._load_init(value, self.ctx)
        if with_optimizer:
            load_states(self.trainer, f"{stem}.states", self.ctx)

    def load_monk_model(self, model_dir: Path, trust_pickled_model: bool = False) -> Dict:
        """Monk's exported ``final`` network (``monk.load_exported_model``), hybridized."""
        net = load_exported_model(model_dir, self.ctx)
        net.hybridize(static_alloc=True, static_shape=True)
        self.net, self.trainer, self.loss_fn, self._chain = net, None, None, None
        count = int(sum(p.data(self.ctx).size for p in net.collect_params().values()
                        if p.grad_req != "null" and p._data is not None))
        return {"num_parameters": count, "trainable_parameters": count, "device": str(self.ctx),
                "files": [str(Path(model_dir) / name) for name in (SYMBOL, PARAMS)]}

    def seed(self, seed: int) -> None:
        mx.random.seed(int(seed))

    def named_weights(self) -> List[Tuple[str, np.ndarray]]:
        """``collect_params`` order: parameters and BatchNorm statistics, stem first, head
        last; a parameter sized by the input (VGG's first Dense) appears after a first batch."""
        return [(name, param.data(self.ctx).asnumpy())
                for name, param in self.net.collect_params().items() if param._data is not None]

    # ----------------------------------------------------------------- explanations
    def _explain_chain(self) -> "explain.Chain":
        """The network as the chain of blocks its forward calls (traced once per model)."""
        if self._chain is None:
            self._chain = explain.decompose(self.net, self.net._children[head_name(self.net)])
        return self._chain

    def spatial_layers(self) -> List[str]:
        """Dotted child paths ("features.7" is resnet18's last stage), input side first."""
        return list(self._explain_chain().spatial)

    def layer_gradients(self, images: np.ndarray, class_indices: np.ndarray,
                        layer: Optional[str] = None) -> LayerGradients:
        explain.require_chain(self._explain_chain(), self.net)
        layer = check_explanation_layer(self.spatial_layers(), layer)
        x, _ = self._arrays(images)
        return explain.layer_gradients(self._explain_chain(), x, class_indices, layer)

    def penultimate_features(self, images: np.ndarray) -> np.ndarray:
        explain.require_chain(self._explain_chain(), self.net)
        x, _ = self._arrays(images)
        return explain.penultimate_features(self._explain_chain(), x)

    # ----------------------------------------------------------------- visualization
    def conv_layers(self) -> List[str]:
        return visualize.conv_layers(self.net)

    def conv_kernels(self, layers: List[str]) -> List[Tuple[str, np.ndarray]]:
        return visualize.conv_kernels(self.net, self.ctx, layers)

    def conv_feature_maps(self, images: np.ndarray,
                          layers: List[str]) -> List[Tuple[str, np.ndarray]]:
        x, _ = self._arrays(images)
        return visualize.conv_feature_maps(self.net, x, layers)

    def export_model(self, stem: Path, data_shape: Tuple[int, int, int]) -> Path:
        return visualize.export_model(self.net, self.ctx, stem, data_shape)

    def export_onnx(self, path: Path, data_shape: Tuple[int, int, int]) -> Path:
        return export.export_onnx(self.net, self.ctx, path, data_shape, self.multi_label)
