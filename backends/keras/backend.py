"""KerasBackend: the framework calls of one experiment (Keras 3 on TensorFlow), nothing else."""
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import numpy as np

from xrayprototype.backend import Backend, Capabilities
from xrayprototype.config import ModelConfig, OptimConfig
from xrayprototype.errors import ConfigError, ExperimentError
from xrayprototype.optim import LOSSES, OPTIMIZERS

from ._compat import setup_tensorflow
from .models import base_layers, create_model, freeze_first, model_table, parameter_count

tf, keras = setup_tensorflow()

#: optimizers whose weight decay is decoupled in both frameworks (the others: L2 on gradients,
#: as torch.optim does)
DECOUPLED_DECAY = {"adamw"}


def _optimizer(name: str, lr: float, p: Dict) -> keras.optimizers.Optimizer:
    """Keras optimizer from the core's neutral names (beta1 -> beta_1, decay_rate -> rho)."""
    o = keras.optimizers
    betas = {"beta_1": p.get("beta1", 0.9), "beta_2": p.get("beta2", 0.999)}
    builders = {
        "sgd": lambda: o.SGD(lr, momentum=p["momentum"]),
        "nesterov_sgd": lambda: o.SGD(lr, momentum=p["momentum"], nesterov=True),
        "rmsprop": lambda: o.RMSprop(lr, rho=p["decay_rate"], momentum=p["momentum"],
                                     epsilon=p["epsilon"]),
        "adam": lambda: o.Adam(lr, epsilon=p["epsilon"], amsgrad=p["amsgrad"], **betas),
        "adamw": lambda: o.AdamW(lr, weight_decay=p["weight_decay"], epsilon=p["epsilon"],
                                 **betas),
        "adamax": lambda: o.Adamax(lr, epsilon=p["epsilon"], **betas),
        "adagrad": lambda: o.Adagrad(lr, initial_accumulator_value=0.0, epsilon=p["epsilon"]),
        "adadelta": lambda: o.Adadelta(lr, rho=p["rho"], epsilon=p["epsilon"]),
    }
    if name not in builders:
        from xrayprototype.errors import unknown_name
        raise unknown_name("optimizer", name, builders, "backend 'keras'")
    return builders[name]()


class ClassificationLoss:
    """Softmax cross-entropy or focal loss on logits, with label smoothing and class weights
    (a weighted mean, ``sum(w_y * loss) / sum(w_y)``, as the PyTorch backend computes it).

    Example:
        >>> loss = ClassificationLoss("focal", {"gamma": 2.0, "alpha": None,
        ...                                     "label_smoothing": 0.0}, None, num_classes=2)
    """

    def __init__(self, name: str, params: Dict, class_weights: Optional[np.ndarray],
                 num_classes: int):
        smoothing = float(params.get("label_smoothing") or 0.0)
        if name == "softmax_crossentropy":
            self.per_sample = keras.losses.CategoricalCrossentropy(
                from_logits=True, label_smoothing=smoothing, reduction=None)
        elif name == "focal":
            self.per_sample = keras.losses.CategoricalFocalCrossentropy(
                alpha=1.0, gamma=float(params["gamma"]), from_logits=True,
                label_smoothing=smoothing, reduction=None)
        else:
            from xrayprototype.errors import unknown_name
            raise unknown_name("loss", name, LOSSES, "backend 'keras'")
        weights = None if class_weights is None else np.asarray(class_weights, np.float32)
        alpha = params.get("alpha") if name == "focal" else None
        if alpha is not None:
            alpha = np.broadcast_to(np.asarray(alpha, np.float32), (num_classes,))
            weights = alpha if weights is None else weights * alpha
        self.weights = None if weights is None else tf.constant(weights, tf.float32)
        self.num_classes = num_classes

    def __call__(self, logits, labels):
        """``labels``: class indices, or (N, C) target distributions (mixup), which weigh
        ``targets @ class_weights`` each."""
        soft = labels.shape.rank == 2
        targets = labels if soft else tf.one_hot(labels, self.num_classes)
        losses = self.per_sample(targets, logits)
        if self.weights is None:
            return tf.reduce_mean(losses)
        weight = tf.linalg.matvec(targets, self.weights) if soft else \
            tf.gather(self.weights, labels)
        return tf.reduce_sum(losses * weight) / tf.reduce_sum(weight)


class KerasBackend(Backend):
    """keras.applications models trained by a compiled TensorFlow step, saved as ``.keras``.

    Example:
        >>> from xrayprototype.backend import create_backend
        >>> backend = create_backend("keras")
        >>> backend.build_model(ModelConfig("mobilenet_v2", use_pretrained=False), 2, 3)
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
        self._fixed_size: Optional[Tuple[int, int]] = None
        self._seed: Optional[int] = None
        self._train_fn = self._eval_fn = self._predict_fn = None

    @classmethod
    def framework_versions(cls) -> Dict[str, str]:
        return {"keras": keras.__version__, "tensorflow": tf.__version__}

    def capabilities(self) -> Capabilities:
        if KerasBackend._capabilities is None:
            gpus = tf.config.list_physical_devices("GPU")
            KerasBackend._capabilities = Capabilities(
                model_table(), tuple(OPTIMIZERS), tuple(LOSSES), "NHWC", None,
                ("cpu", "gpu") if gpus else ("cpu",), soft_targets=True, layer_freezing=True,
                discriminative_lr=True)
        return KerasBackend._capabilities

    def build_model(self, config: ModelConfig, num_classes: int, channels: int) -> Dict:
        if channels != 3:
            raise ConfigError("the keras backend feeds 3-channel images (grayscale X-rays are "
                              f"replicated); got channels={channels}.")
        gpu = config.use_gpu and bool(tf.config.list_physical_devices("GPU"))
        self.device = "/GPU:0" if gpu else "/CPU:0"
        if self._seed is not None:
            keras.utils.set_random_seed(self._seed)
        with tf.device(self.device):
            self.model = create_model(config.model_name, num_classes, config.use_pretrained,
                                      config.dropout, config.model_path,
                                      config.freeze_base_network, channels)
        self.num_classes, self.weight_decay = num_classes, 0.0
        size = tuple(self.model.input_shape[1:3])
        self._fixed_size = None if None in size else size
        self.optimizer, self.base_optimizer, self.loss_fn = None, None, None
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

    def restore_weights(self, snapshot) -> None:
        for variable, value in zip(self.model.weights, snapshot):
            variable.assign(value)

    def configure(self, config: OptimConfig, class_weights: Optional[np.ndarray]) -> None:
        """One optimizer, or with ``base_lr_factor`` != 1 one for the head and one for the
        base (Keras has no per-variable learning rate); ``set_learning_rate`` sets both."""
        params, trainable = config.optimizer_params, self.model.trainable_variables
        head = {id(v) for v in self.model.get_layer("head").trainable_variables}
        base = [v for v in trainable if id(v) not in head]
        split = config.base_lr_factor != 1.0 and bool(base)
        self.base_lr_factor = float(config.base_lr_factor) if split else 1.0
        self._head_variables = frozenset(head)
        with tf.device(self.device):
            self.optimizer = _optimizer(config.optimizer, config.learning_rate, params)
            self.optimizer.build([v for v in trainable if id(v) in head] if split else trainable)
            self.base_optimizer = None
            if split:
                self.base_optimizer = _optimizer(config.optimizer,
                                                 config.learning_rate * self.base_lr_factor, params)
                self.base_optimizer.build(base)
        self.weight_decay = 0.0 if config.optimizer in DECOUPLED_DECAY else \
            float(params.get("weight_decay") or 0.0)
        self.loss_fn = ClassificationLoss(config.loss, config.loss_params, class_weights,
                                          self.num_classes)
        self._compile_functions()

    def set_learning_rate(self, learning_rate: float) -> None:
        self.optimizer.learning_rate.assign(float(learning_rate))
        if self.base_optimizer is not None:
            self.base_optimizer.learning_rate.assign(float(learning_rate) * self.base_lr_factor)

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

    # ------------------------------------------------------------------ compiled steps
    def _compile_functions(self) -> None:
        """tf.functions of one step each; XLA where Keras' own ``fit`` would use it (GPU)."""
        model, jit = self.model, self.device.startswith("/GPU")
        # traced on the first batch's static shape (fast kernels and layouts); a second shape
        # (the last, smaller batch) gives one more trace with the batch size generalised
        compiled = dict(reduce_retracing=True, jit_compile=jit)

        def loss_of(logits, y):
            if self.loss_fn is None:
                return tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(y, logits))
            return self.loss_fn(logits, y)

        @tf.function(**compiled)
        def train(x, y):
            variables = model.trainable_variables
            with tf.GradientTape() as tape:
                logits = model(x, training=True)
                loss = loss_of(logits, y)
            gradients = tape.gradient(loss, variables)
            if self.weight_decay:
                gradients = [g + self.weight_decay * v for g, v in zip(gradients, variables)]
            self._apply_gradients(gradients, variables)
            target = tf.argmax(y, 1) if y.shape.rank == 2 else y   # mixup: the dominant label
            correct = tf.reduce_sum(tf.cast(tf.argmax(logits, 1) == target, tf.int32))
            return loss, correct

        @tf.function(**compiled)
        def evaluate(x, y):
            logits = model(x, training=False)
            return loss_of(logits, y), tf.nn.softmax(logits)

        @tf.function(**compiled)
        def predict(x):
            return tf.nn.softmax(model(x, training=False))

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

    def peak_memory(self) -> Dict[str, int]:
        if self.device.startswith("/GPU"):
            return {"gpu_bytes": int(tf.config.experimental.get_memory_info("GPU:0")["peak"])}
        return {}

    def reset_peak_memory(self) -> None:
        if self.device.startswith("/GPU"):
            tf.config.experimental.reset_memory_stats("GPU:0")
