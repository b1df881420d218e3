"""KerasBackend: the framework calls of one experiment (Keras 3 on TensorFlow), nothing else."""
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import numpy as np

from xrayprototype.backend import (Backend, Capabilities, LayerGradients,
                                   check_explanation_layer)
from xrayprototype.config import ModelConfig, OptimConfig
from xrayprototype.errors import ConfigError, ExperimentError
from xrayprototype.optim import cycled_momentum, gradient_changes

from . import export, visualize
from ._compat import setup_tensorflow
from .explain import Explainer
from .losses import LOSS_NAMES, ClassificationLoss, MultiLabelLoss
from .monk import FINAL, load_saved_model
from .heads import HEAD_LAYER_NAMES, head_variables
from .models import base_layers, create_model, freeze_first, model_table, parameter_count
from .optimizers import (CYCLED_MOMENTUM_ATTRIBUTE, DECOUPLED_DECAY, OPTIMIZER_NAMES,
                         create_optimizer, variable_momentum)

tf, keras = setup_tensorflow()


class KerasBackend(Backend):
    """keras.applications models trained by a compiled TensorFlow step, saved as ``.keras``.

    Example:
        >>> from xrayprototype.backend import create_backend
        >>> backend = create_backend("keras")
        >>> backend.build_model(ModelConfig("mobilenet_v2", use_pretrained=False), 2)
    """

    name = "keras"
    _capabilities: Optional[Capabilities] = None

    def __init__(self):
        self.model: Optional[keras.Model] = None
        self.optimizer: Optional[keras.optimizers.Optimizer] = None
        # discriminative learning rates: the base's own optimizer at base_lr_factor x the rate
        self.base_optimizer: Optional[keras.optimizers.Optimizer] = None
        self.base_lr_factor, self._head_variables = 1.0, frozenset()
        self.loss_fn: Optional[ClassificationLoss] = None
        self.device, self.num_classes, self.weight_decay = "/CPU:0", 0, 0.0
        self.gradient_changes = gradient_changes({})
        self._fixed_size: Optional[Tuple[int, int]] = None
        self._seed: Optional[int] = None
        self._train_fn = self._eval_fn = self._predict_fn = None
        self._explainer: Optional[Explainer] = None

    @classmethod
    def framework_versions(cls) -> Dict[str, str]:
        return {"keras": keras.__version__, "tensorflow": tf.__version__}

    def capabilities(self) -> Capabilities:
        if KerasBackend._capabilities is None:
            gpus = tf.config.list_physical_devices("GPU")
            KerasBackend._capabilities = Capabilities(
                model_table(), OPTIMIZER_NAMES, LOSS_NAMES, "NHWC", None,
                ("cpu", "gpu") if gpus else ("cpu",), soft_targets=True, layer_freezing=True,
                discriminative_lr=True, input_channels=(3,), explanations=True,
                multi_label=True, visualization=True, head_layers=HEAD_LAYER_NAMES,
                export_formats=("onnx",), momentum_cycling=tuple(CYCLED_MOMENTUM_ATTRIBUTE))
        return KerasBackend._capabilities

    def limit_gpu_memory(self, fraction: float) -> str:
        """A logical GPU of ``fraction`` x the GPU's memory (NVML's total) per physical GPU,
        else memory growth; either only before TensorFlow has initialised the GPUs."""
        gpus = tf.config.list_physical_devices("GPU")
        if not gpus:
            return f"gpu_memory_fraction={fraction}: no GPU visible to TensorFlow, nothing to cap."
        totals = _gpu_total_bytes()
        try:
            for index, gpu in enumerate(gpus):
                if index < len(totals):
                    limit_mb = int(fraction * totals[index] / 2 ** 20)
                    tf.config.set_logical_device_configuration(
                        gpu, [tf.config.LogicalDeviceConfiguration(memory_limit=limit_mb)])
                else:
                    tf.config.experimental.set_memory_growth(gpu, True)
        except RuntimeError as err:        # the GPUs were initialised already
            return (f"gpu_memory_fraction={fraction} not applied: TensorFlow had initialised "
                    f"the GPUs already ({err}); set it before the first model of the process "
                    "is built (a fresh Python process).")
        how = "a logical device with that memory limit" if totals else "memory growth " \
            "(the GPU's total memory is unknown without NVML)"
        return f"gpu_memory_fraction={fraction}: TensorFlow's GPU memory capped by {how}."

    def build_model(self, config: ModelConfig, num_classes: int) -> Dict:
        gpu = config.use_gpu and bool(tf.config.list_physical_devices("GPU"))
        self.device = "/GPU:0" if gpu else "/CPU:0"
        if self._seed is not None:
            keras.utils.set_random_seed(self._seed)
        with tf.device(self.device):
            self.model = create_model(config, num_classes)
        self.num_classes, self.weight_decay = num_classes, 0.0
        size = tuple(self.model.input_shape[1:3])
        self._fixed_size = None if None in size else size
        self.optimizer, self.base_optimizer, self.loss_fn = None, None, None
        self._explainer = None          # sub-models of the previous model are stale
        self._compile_functions()
        return {"num_parameters": parameter_count(self.model),
                "trainable_parameters": self._trainable_count(), "device": "gpu" if gpu else "cpu"}

    def _trainable_count(self) -> int:
        return sum(int(np.prod(v.shape)) for v in self.model.trainable_weights)

    def base_layers(self) -> List[str]:
        return [name for name, _ in base_layers(self.model)]

    def set_frozen_layers(self, count: int) -> Dict:
        freeze_first(self.model, count)
        self.optimizer = self.base_optimizer = None    # configure() follows
        return {"trainable_parameters": self._trainable_count()}

    def snapshot_weights(self):
        return [np.array(v.numpy()) for v in self.model.weights]

    def named_weights(self) -> List[Tuple[str, np.ndarray]]:
        """``model.weights`` order (kernels and BatchNorm statistics, input side first, the
        head last), named by variable path."""
        return [(variable.path, np.array(variable.numpy())) for variable in self.model.weights]

    def restore_weights(self, snapshot) -> None:
        for variable, value in zip(self.model.weights, snapshot):
            variable.assign(value)

    def configure(self, config: OptimConfig, class_weights: Optional[np.ndarray]) -> None:
        """One optimizer, or with ``base_lr_factor`` != 1 one for the head and one for the
        base (Keras has no per-variable learning rate); ``set_learning_rate`` sets both."""
        params, trainable = config.optimizer_params, self.model.trainable_variables
        head = {id(v) for v in head_variables(self.model)}
        base = [v for v in trainable if id(v) not in head]
        split = config.base_lr_factor != 1.0 and bool(base)
        self.base_lr_factor = float(config.base_lr_factor) if split else 1.0
        self._head_variables = frozenset(head)
        with tf.device(self.device):
            self.optimizer = create_optimizer(config.optimizer, config.learning_rate, params)
            self.optimizer.build([v for v in trainable if id(v) in head] if split else trainable)
            self.base_optimizer = None
            if split:
                self.base_optimizer = create_optimizer(
                    config.optimizer, config.learning_rate * self.base_lr_factor, params)
                self.base_optimizer.build(base)
        self._momentum_variables = [
            variable_momentum(optimizer, config.optimizer)
            for optimizer in (self.optimizer, self.base_optimizer) if optimizer is not None
        ] if config.optimizer in CYCLED_MOMENTUM_ATTRIBUTE and \
            cycled_momentum(config.optimizer, params) else []
        self.weight_decay = 0.0 if config.optimizer in DECOUPLED_DECAY else \
            float(params.get("weight_decay") or 0.0)
        self.gradient_changes = gradient_changes(params)
        self.loss_fn = MultiLabelLoss(class_weights, float(config.loss_params.get(
            "weight", 1.0))) if self.multi_label else \
            ClassificationLoss(config.loss, config.loss_params, class_weights, self.num_classes)
        self._compile_functions()

    def set_learning_rate(self, learning_rate: float) -> None:
        self.optimizer.learning_rate.assign(float(learning_rate))
        if self.base_optimizer is not None:
            self.base_optimizer.learning_rate.assign(float(learning_rate) * self.base_lr_factor)

    def set_momentum(self, momentum: float) -> None:
        for variable in self._momentum_variables:
            variable.assign(float(momentum))

    def _optimizer_variables(self) -> list:
        extra = self.base_optimizer.variables if self.base_optimizer is not None else []
        return list(self.optimizer.variables) + list(extra)

    def _apply_gradients(self, gradients, variables) -> None:
        pairs = list(zip(gradients, variables))
        if self.base_optimizer is None:
            self.optimizer.apply_gradients(pairs)
            return
        head = self._head_variables
        self.optimizer.apply_gradients([(g, v) for g, v in pairs if id(v) in head])
        self.base_optimizer.apply_gradients([(g, v) for g, v in pairs if id(v) not in head])

    def _changed(self, gradients):
        """Clip (element-wise, then the global norm) and damp, as ``optim.gradient_changes``
        (traced into the compiled step)."""
        change = self.gradient_changes
        if change["clipvalue"]:
            gradients = [tf.clip_by_value(g, -change["clipvalue"], change["clipvalue"])
                         for g in gradients]
        if change["clipnorm"]:
            gradients, _ = tf.clip_by_global_norm(gradients, change["clipnorm"])
        if change["scale"] != 1.0:
            gradients = [g * change["scale"] for g in gradients]
        return list(gradients)

    # ------------------------------------------------------------------ compiled steps
    def _compile_functions(self) -> None:
        """tf.functions of one step each; XLA where Keras' own ``fit`` would use it (GPU)."""
        model, jit = self.model, self.device.startswith("/GPU")
        # traced on the first batch's static shape (fast kernels and layouts); a second shape
        # (the last, smaller batch) gives one more trace with the batch size generalised
        compiled = dict(reduce_retracing=True, jit_compile=jit)

        multi_label = self.multi_label        # sigmoid outputs, multi-hot targets
        activation = tf.nn.sigmoid if multi_label else tf.nn.softmax

        def loss_of(logits, y):
            if self.loss_fn is None and multi_label:
                return MultiLabelLoss()(logits, y)
            if self.loss_fn is None:
                return tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(y, logits))
            return self.loss_fn(logits, y)

        @tf.function(**compiled)
        def train(x, y):
            variables = model.trainable_variables
            with tf.GradientTape() as tape:
                logits = model(x, training=True)
                loss = loss_of(logits, y)
            gradients = self._changed(tape.gradient(loss, variables))
            if self.weight_decay:
                gradients = [g + self.weight_decay * v for g, v in zip(gradients, variables)]
            self._apply_gradients(gradients, variables)
            if multi_label:                  # every class right at 0.5 (targets may be mixed)
                right = tf.reduce_all((logits > 0) == (y > 0.5), axis=1)
                return loss, tf.reduce_sum(tf.cast(right, tf.int32))
            target = tf.argmax(y, 1) if y.shape.rank == 2 else y   # mixup: the dominant label
            correct = tf.reduce_sum(tf.cast(tf.argmax(logits, 1) == target, tf.int32))
            return loss, correct

        @tf.function(**compiled)
        def evaluate(x, y):
            logits = model(x, training=False)
            return loss_of(logits, y), activation(logits)

        @tf.function(**compiled)
        def predict(x):
            return activation(model(x, training=False))

        self._train_fn, self._eval_fn, self._predict_fn = train, evaluate, predict

    def _check_size(self, images: np.ndarray) -> None:
        if self._fixed_size and tuple(images.shape[1:3]) != self._fixed_size:
            raise ConfigError(
                f"keras model '{self.model.name.replace('xrayprototype_', '')}' only takes "
                f"{self._fixed_size[0]}x{self._fixed_size[1]} images; got "
                f"{images.shape[1]}x{images.shape[2]}. Set update_input_size("
                f"{self._fixed_size[0]}) or choose another model.")

    def train_step(self, images: np.ndarray, labels: np.ndarray) -> Tuple[float, int]:
        self._check_size(images)
        with tf.device(self.device):
            loss, correct = self._train_fn(tf.constant(images), tf.constant(labels))
        return float(loss), int(correct)

    def eval_step(self, images: np.ndarray, labels: np.ndarray) -> Tuple[float, np.ndarray]:
        self._check_size(images)
        with tf.device(self.device):
            loss, probabilities = self._eval_fn(tf.constant(images), tf.constant(labels))
        return float(loss), probabilities.numpy().astype(np.float64)

    def predict(self, images: np.ndarray) -> np.ndarray:
        self._check_size(images)
        with tf.device(self.device):
            return self._predict_fn(tf.constant(images)).numpy().astype(np.float64)

    # ------------------------------------------------------------------ explanations
    def _explain(self) -> Explainer:
        if self._explainer is None:
            self._explainer = Explainer(self.model, self.device)
        return self._explainer

    def spatial_layers(self) -> List[str]:
        """Layers of the base network by the base's own names (``base.get_layer``), e.g.
        ``conv5_block3_out`` last for resnet50; see ``explain``."""
        return self._explain().spatial_layers()

    def layer_gradients(self, images: np.ndarray, class_indices: np.ndarray,
                        layer: Optional[str] = None) -> LayerGradients:
        layer = check_explanation_layer(self.spatial_layers(), layer)
        self._check_size(images)
        return self._explain().layer_gradients(images, class_indices, layer)

    def penultimate_features(self, images: np.ndarray) -> np.ndarray:
        self._check_size(images)
        return self._explain().penultimate_features(images)

    # ------------------------------------------------------------------ visualization
    def conv_layers(self) -> List[str]:
        return visualize.conv_layers(self.model)

    def conv_kernels(self, layers: List[str]) -> List[Tuple[str, np.ndarray]]:
        return visualize.conv_kernels(self.model, layers)

    def conv_feature_maps(self, images: np.ndarray,
                          layers: List[str]) -> List[Tuple[str, np.ndarray]]:
        self._check_size(images)
        return visualize.conv_feature_maps(self.model, self.device, images, layers)

    def export_model(self, stem: Path, data_shape: Tuple[int, int, int]) -> Path:
        return visualize.export_model(self.model, stem)

    def export_onnx(self, path: Path, data_shape: Tuple[int, int, int]) -> Path:
        return export.export_onnx(self.model, self.device, path, data_shape, self.multi_label)

    # ------------------------------------------------------------------ persistence
    def save(self, stem: Path, with_optimizer: bool = False) -> List[Path]:
        model_file = Path(f"{stem}.keras")
        self.model.save(model_file)
        written = [model_file]
        if with_optimizer and self.optimizer is not None:
            optimizer_file = Path(f"{stem}.optimizer.npz")
            variables = self._optimizer_variables()
            with open(optimizer_file, "wb") as handle:  # arrays only, never a pickle
                np.savez(handle, names=np.array([v.path for v in variables]),
                         **{f"v{i:05d}": v.numpy() for i, v in enumerate(variables)})
            written.append(optimizer_file)
        return written

    def load(self, stem: Path, with_optimizer: bool = False) -> None:
        model_file = Path(f"{stem}.keras")
        if not model_file.is_file():
            raise ExperimentError(f"no Keras model file {model_file}; was this experiment "
                                  "trained with the keras backend?")
        saved = keras.saving.load_model(model_file, safe_mode=True, compile=False)
        self._copy_weights(saved, model_file)
        if with_optimizer:
            self._load_optimizer(Path(f"{stem}.optimizer.npz"))

    def _copy_weights(self, saved: keras.Model, source: Path) -> None:
        values, targets = saved.get_weights(), self.model.weights
        shapes = [tuple(v.shape) for v in targets]
        if len(values) != len(targets) or any(a.shape != s for a, s in zip(values, shapes)):
            raise ExperimentError(
                f"{source} holds a different network ({saved.name}, {len(values)} tensors) than "
                f"the one built ({self.model.name}, {len(targets)} tensors); rebuild with the "
                "experiment's own model settings.")
        self.model.set_weights(values)

    def _load_optimizer(self, path: Path) -> None:
        if self.optimizer is None:
            raise ExperimentError("configure() the optimizer before loading its state.")
        with np.load(path, allow_pickle=False) as stored:
            arrays = [stored[k] for k in sorted(k for k in stored.files if k != "names")]
        variables = self._optimizer_variables()
        if len(arrays) != len(variables) or any(
                a.shape != tuple(v.shape) for a, v in zip(arrays, variables)):
            raise ExperimentError(
                f"optimizer state {path} does not fit this optimizer ({len(arrays)} saved vs "
                f"{len(variables)} variables); resume with the optimizer it was trained with.")
        for variable, value in zip(variables, arrays):
            variable.assign(value)

    def load_monk_model(self, model_dir: Path, trust_pickled_model: bool = False) -> Dict:
        """Monk's ``final.h5`` (``monk.load_saved_model``: safe_mode, no Lambda layers)."""
        with tf.device(self.device):
            self.model = load_saved_model(model_dir)
        self.num_classes = int(self.model.output_shape[-1])
        size = tuple(self.model.input_shape[1:3])
        self._fixed_size = None if None in size else size
        self.optimizer, self.base_optimizer, self.loss_fn = None, None, None
        self._explainer = None
        self._compile_functions()
        device = "cpu" if self.device.startswith("/CPU") else "gpu"
        return {"num_parameters": parameter_count(self.model),
                "trainable_parameters": self._trainable_count(), "device": device,
                "files": [str(Path(model_dir) / FINAL)]}

    # ------------------------------------------------------------------ misc
    def seed(self, seed: int) -> None:
        """The next ``build_model`` starts from Keras' global seed (initial weights); a built
        model (the core re-seeds every epoch) gets its random-state variables (dropout) set,
        since ``tf.random.set_seed`` would clear TensorFlow's kernel caches every epoch."""
        self._seed = int(seed) % (2 ** 31)
        if self.model is None:
            return
        states = [v for v in self.model.variables if v.path.endswith("seed_generator_state")]
        for offset, state in enumerate(states):
            state.assign(np.array([self._seed, offset], dtype=state.dtype))


def _gpu_total_bytes() -> List[int]:
    """Each GPU's total memory from NVML (``pynvml``), [] when unavailable."""
    try:
        import pynvml
        pynvml.nvmlInit()
    except Exception:  # noqa: BLE001  (no library, no driver)
        return []
    try:
        return [int(pynvml.nvmlDeviceGetMemoryInfo(pynvml.nvmlDeviceGetHandleByIndex(i)).total)
                for i in range(pynvml.nvmlDeviceGetCount())]
    except Exception:  # noqa: BLE001
        return []
    finally:
        pynvml.nvmlShutdown()
