"""The facade's setting verbs: ``Dataset_Params``, ``Model_Params``, ``Training_Params``,
``update_*``, ``optimizer_*``, ``lr_*``, ``loss_*`` and ``apply_*``.

Every setting applies at once: it is validated, stored in the experiment's configuration
and ``experiment.json``, and whatever it invalidates (the data split, the model) is rebuilt
when next needed. ``Reload()`` exists for Monk scripts but is never required.
"""
import warnings
from dataclasses import replace
from pathlib import Path
from typing import List, Optional, Sequence

from .config import DataConfig
from .errors import ConfigError
from .optim import LOSSES, OPTIMIZERS, SCHEDULES, checked_params

_DATA_KEYS = {"split": "trainval_split", "num_processors": "num_workers"}
_RESIZE_MODES = ("stretch", "center_crop")
_CORRUPT_POLICIES = ("skip", "error")


def _absolute(paths):
    """Dataset paths are stored absolute, so a later change of directory changes nothing."""
    if isinstance(paths, (list, tuple)):
        return [_absolute(p) for p in paths]
    return str(Path(paths).expanduser().resolve())


def _positive_int(value, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{what} must be a positive integer, got {value!r}.")
    return value


class SettingsVerbs:
    """Mixed into ``prototype``; relies on its ``_require_experiment`` and ``_say``."""

    # ------------------------------------------------------------------ helpers
    def _config(self):
        return self._require_experiment().config

    def _changed(self, data: bool = False, model: bool = False) -> None:
        experiment = self._require_experiment()
        if model and self._mode == "eval_infer":
            raise ConfigError("this experiment was opened with eval_infer=True; its model is "
                              "fixed. Use copy_from=[project, experiment] to train a variant.")
        if data:
            experiment.data = None
        if model:
            experiment.model_ready = False
        experiment.save_state()

    def _set_data(self, **values) -> None:
        """Apply dataset settings to a copy, validate it, and only then keep it."""
        data = replace(self._config().data)
        for key, value in values.items():
            if value is None:
                continue
            key = _DATA_KEYS.get(key, key)
            if key in ("dataset_path", "path_to_csv"):
                value = _absolute(value)
            if not hasattr(data, key):
                known = sorted(DataConfig.__dataclass_fields__)
                raise ConfigError(f"unknown dataset option '{key}'; known options: {known}.")
            setattr(data, key, value)
        self._validate_data(data)
        self._config().data = data

    @staticmethod
    def _validate_data(data: DataConfig) -> None:
        if not 0.0 < float(data.trainval_split) < 1.0:
            raise ConfigError(f"split (the training fraction) must be between 0 and 1, got "
                              f"{data.trainval_split}; e.g. 0.8 keeps 20% for validation.")
        _positive_int(data.input_size, "input_size")
        _positive_int(data.batch_size, "batch_size")
        _positive_int(data.num_workers, "num_processors")
        if data.resize_mode not in _RESIZE_MODES:
            raise ConfigError(f"resize_mode must be one of {_RESIZE_MODES}, got {data.resize_mode!r}.")
        if data.on_corrupt not in _CORRUPT_POLICIES:
            raise ConfigError(f"on_corrupt must be one of {_CORRUPT_POLICIES}, got {data.on_corrupt!r}.")
        if data.class_names is not None:
            if isinstance(data.class_names, str) or \
                    not all(isinstance(n, str) for n in data.class_names):
                raise ConfigError(f"class_names takes a list of names in label order, e.g. "
                                  f"['NORMAL', 'PNEUMONIA']; got {data.class_names!r}.")
            data.class_names = list(data.class_names)

    # ------------------------------------------------------------------ expert-mode params
    def Dataset_Params(self, dataset_path=None, path_to_csv=None, delimiter: Optional[str] = None,
                       split: Optional[float] = None, input_size: Optional[int] = None,
                       batch_size: Optional[int] = None, shuffle_data: Optional[bool] = None,
                       num_processors: Optional[int] = None, **options) -> None:
        """Where the images are and how batches are made (None keeps the current value).

        Args:
            dataset_path: a folder of class sub-folders; a folder holding train/ (+ val/);
                or a [train, val] pair. In eval_infer mode: the evaluation folder.
            path_to_csv: a CSV of ``file,label`` rows; dataset_path is then its image folder.
            split: training fraction when no validation folder exists (seeded, stratified,
                grouped by patient where file names give one).
            options: any other DataConfig field, e.g. on_corrupt="error", resize_mode=
                "center_crop", group_column="patientid", cache_images=False, class_names=
                ["NORMAL", "PNEUMONIA"] (the label order of an .npz file).

        A MedMNIST-style ``file.npz`` is read from memory: its official train and val splits
        for training, its test split in eval_infer mode; ``"file.npz:val"`` picks a split.

        Example:
            >>> gtf.Dataset_Params(dataset_path="chest_xray/train", input_size=224, batch_size=32)
        """
        values = dict(dataset_path=dataset_path, path_to_csv=path_to_csv, delimiter=delimiter,
                      split=split, input_size=input_size, batch_size=batch_size,
                      shuffle_data=shuffle_data, num_processors=num_processors, **options)
        if self._mode == "eval_infer":
            self._set_eval_data(values)
            return
        self._set_data(**values)
        self._changed(data=True)

    def _set_eval_data(self, values: dict) -> None:
        """In eval_infer mode the folder is an evaluation set; the trained experiment's own
        configuration (and its preprocessing) stays as it was saved."""
        fixed = [k for k in ("split", "input_size", "shuffle_data", "normalization", "resize_mode",
                             "channels", "augmentation") if values.get(k) is not None]
        if fixed:
            raise ConfigError(f"{fixed} are fixed by the trained model in eval_infer mode; "
                              "only the evaluation data (dataset_path, path_to_csv, delimiter, "
                              "batch_size, num_processors, on_corrupt) can change.")
        experiment = self._require_experiment()
        eval_config = replace(experiment.eval_data_config or experiment.config.data,
                              path_to_csv=None)
        for key, value in values.items():
            if value is not None:
                key = _DATA_KEYS.get(key, key)
                setattr(eval_config, key, _absolute(value) if key in ("dataset_path", "path_to_csv") else value)
        self._validate_data(eval_config)
        experiment.eval_data_config, experiment.eval_records = eval_config, None

    def Model_Params(self, model_name: Optional[str] = None,
                     freeze_base_network: Optional[bool] = None, use_gpu: Optional[bool] = None,
                     use_pretrained: Optional[bool] = None, model_path: Optional[str] = None,
                     dropout: Optional[float] = None) -> None:
        """Which network and from which weights.

        Example:
            >>> gtf.Model_Params(model_name="densenet121", freeze_base_network=True)
        """
        config = self._config()
        model = replace(config.model)
        for key, value in dict(model_name=model_name, freeze_base_network=freeze_base_network,
                               use_gpu=use_gpu, use_pretrained=use_pretrained,
                               model_path=model_path, dropout=dropout).items():
            if value is not None:
                setattr(model, key, value)
        previous, config.model = config.model, model
        try:
            if model.model_name is not None:
                self._check_model_name()
        except ConfigError:
            config.model = previous          # a refused setting changes nothing
            raise
        self._changed(model=True)

    def Training_Params(self, num_epochs: Optional[int] = None,
                        display_progress: Optional[bool] = None,
                        display_progress_realtime: Optional[bool] = None,
                        save_intermediate_models: Optional[bool] = None,
                        best_metric: Optional[str] = None,
                        early_stopping_patience: Optional[int] = None, seed: Optional[int] = None,
                        **monk_options) -> None:
        """Epochs and what the loop keeps. Monk-only options (intermediate_model_prefix,
        save_training_logs) are accepted and ignored: logs are always saved. Early stopping
        ends training after ``early_stopping_patience`` epochs without a better
        ``best_metric`` (0 turns it off).

        Example:
            >>> gtf.Training_Params(num_epochs=10, best_metric="val_loss")
        """
        train = self._config().train
        if num_epochs is not None:
            train.num_epochs = _positive_int(num_epochs, "num_epochs")
        if display_progress is not None or display_progress_realtime is not None:
            train.display_progress = bool(display_progress if display_progress is not None
                                          else display_progress_realtime)
        if save_intermediate_models is not None:
            train.save_intermediate_models = bool(save_intermediate_models)
        if best_metric is not None:
            split, _, key = best_metric.partition("_")
            if split not in ("val", "train") or key not in ("accuracy", "loss", "roc_auc"):
                raise ConfigError(f"best_metric '{best_metric}' is not recorded; use one of "
                                  "val_accuracy, val_loss, val_roc_auc, train_loss.")
            train.best_metric = best_metric
        if early_stopping_patience == 0:                  # 0 turns early stopping off
            train.early_stopping_patience = None
        elif early_stopping_patience is not None:
            train.early_stopping_patience = _positive_int(early_stopping_patience,
                                                          "early_stopping_patience")
        if seed is not None:
            train.seed = int(seed)
        unknown = set(monk_options) - {"intermediate_model_prefix", "save_training_logs"}
        if unknown:
            raise ConfigError(f"Training_Params got unknown options {sorted(unknown)}.")
        self._changed(data=seed is not None)

    # ------------------------------------------------------------------ update_*
    def update_dataset(self, dataset_path=None, path_to_csv=None, delimiter=None) -> None:
        self.Dataset_Params(dataset_path=dataset_path, path_to_csv=path_to_csv, delimiter=delimiter)

    def update_input_size(self, input_size: int) -> None:
        """Example: ``gtf.update_input_size(64)``."""
        self.Dataset_Params(input_size=input_size)

    def update_batch_size(self, batch_size: int) -> None:
        self.Dataset_Params(batch_size=batch_size)

    def update_shuffle_data(self, shuffle: bool) -> None:
        self.Dataset_Params(shuffle_data=shuffle)

    def update_num_processors(self, num_processors: int) -> None:
        self.Dataset_Params(num_processors=num_processors)

    def update_trainval_split(self, split: float) -> None:
        self.Dataset_Params(split=split)

    def update_normalization(self, normalization: str) -> None:
        """"auto" (the model's own), "imagenet", "inception", "lite", "dataset" or "none"."""
        self.Dataset_Params(normalization=normalization)

    def update_weighted_sampling(self, enabled: bool = True) -> None:
        """Draw each epoch (same length) with replacement so every class is seen equally
        often; majority images are left out at random. See also ``update_oversampling``."""
        if enabled and self._config().data.oversampling:
            raise ConfigError("oversampling is on; weighted sampling is the other way of "
                              "balancing an epoch. Call update_oversampling(False) first.")
        self.Dataset_Params(weighted_sampling=bool(enabled))

    def update_model_name(self, model_name: str) -> None:
        self.Model_Params(model_name=model_name)

    def update_use_gpu(self, use_gpu: bool) -> None:
        self.Model_Params(use_gpu=use_gpu)

    def update_use_pretrained(self, use_pretrained: bool) -> None:
        self.Model_Params(use_pretrained=use_pretrained)

    def update_freeze_base_network(self, freeze: bool) -> None:
        self.Model_Params(freeze_base_network=freeze)

    def update_model_path(self, model_path: str) -> None:
        self.Model_Params(model_path=model_path)

    def update_num_epochs(self, num_epochs: int) -> None:
        self.Training_Params(num_epochs=num_epochs)

    def update_seed(self, seed: int) -> None:
        self.Training_Params(seed=seed)

    def update_learning_rate(self, learning_rate: float) -> None:
        if not learning_rate > 0:
            raise ConfigError(f"learning_rate must be positive, got {learning_rate}.")
        self._config().optim.learning_rate = float(learning_rate)
        self._changed()

    def update_class_weights(self, class_weights="balanced") -> None:
        """"balanced" (inverse class frequency), a list of one weight per class, or None."""
        if class_weights not in (None, "balanced") and not isinstance(class_weights, (list, tuple)):
            raise ConfigError("class_weights must be 'balanced', a list, or None.")
        self._config().optim.class_weights = list(class_weights) \
            if isinstance(class_weights, (list, tuple)) else class_weights
        self._changed()

    def update_display_progress(self, display: bool) -> None:
        self.Training_Params(display_progress=display)

    def update_save_intermediate_models(self, save: bool) -> None:
        self.Training_Params(save_intermediate_models=save)

    # ------------------------------------------------------------------ optimizer_*
    def _set_optimizer(self, name: str, learning_rate: float, **params) -> None:
        optim = self._config().optim
        optim.optimizer_params = checked_params(OPTIMIZERS, "optimizer", name, params)
        optim.optimizer = name
        self.update_learning_rate(learning_rate)

    def optimizer_sgd(self, learning_rate: float, momentum: float = 0.0, weight_decay: float = 0.0):
        """Example: ``gtf.optimizer_sgd(0.01, momentum=0.9)``."""
        self._set_optimizer("sgd", learning_rate, momentum=momentum, weight_decay=weight_decay)

    def optimizer_nesterov_sgd(self, learning_rate: float, momentum: float = 0.9,
                               weight_decay: float = 0.0):
        self._set_optimizer("nesterov_sgd", learning_rate, momentum=momentum,
                            weight_decay=weight_decay)

    def optimizer_rmsprop(self, learning_rate: float, decay_rate: float = 0.99,
                          momentum: float = 0.0, epsilon: float = 1e-8, weight_decay: float = 0.0):
        self._set_optimizer("rmsprop", learning_rate, decay_rate=decay_rate, momentum=momentum,
                            epsilon=epsilon, weight_decay=weight_decay)

    def optimizer_adam(self, learning_rate: float, beta1: float = 0.9, beta2: float = 0.999,
                       epsilon: float = 1e-8, weight_decay: float = 0.0, amsgrad: bool = False):
        """Example: ``gtf.optimizer_adam(1e-3)``."""
        self._set_optimizer("adam", learning_rate, beta1=beta1, beta2=beta2, epsilon=epsilon,
                            weight_decay=weight_decay, amsgrad=amsgrad)

    def optimizer_adamw(self, learning_rate: float, beta1: float = 0.9, beta2: float = 0.999,
                        epsilon: float = 1e-8, weight_decay: float = 0.01):
        self._set_optimizer("adamw", learning_rate, beta1=beta1, beta2=beta2, epsilon=epsilon,
                            weight_decay=weight_decay)

    def optimizer_adamax(self, learning_rate: float, beta1: float = 0.9, beta2: float = 0.999,
                         epsilon: float = 1e-8, weight_decay: float = 0.0):
        self._set_optimizer("adamax", learning_rate, beta1=beta1, beta2=beta2, epsilon=epsilon,
                            weight_decay=weight_decay)

    def optimizer_adagrad(self, learning_rate: float, epsilon: float = 1e-10,
                          weight_decay: float = 0.0):
        self._set_optimizer("adagrad", learning_rate, epsilon=epsilon, weight_decay=weight_decay)

    def optimizer_adadelta(self, learning_rate: float = 1.0, rho: float = 0.9,
                           epsilon: float = 1e-6, weight_decay: float = 0.0):
        self._set_optimizer("adadelta", learning_rate, rho=rho, epsilon=epsilon,
                            weight_decay=weight_decay)

    # ------------------------------------------------------------------ lr_*
    def _set_schedule(self, name: str, **params) -> None:
        optim = self._config().optim
        optim.schedule_params = checked_params(SCHEDULES, "learning-rate schedule", name, params)
        optim.schedule = name
        self._changed()

    def lr_fixed(self):
        self._set_schedule("fixed")

    def lr_step_decrease(self, step_size: int, gamma: float = 0.1):
        """Multiply the rate by ``gamma`` every ``step_size`` epochs."""
        self._set_schedule("step_decrease", step_size=_positive_int(step_size, "step_size"),
                           gamma=gamma)

    def lr_multistep_decrease(self, milestones: Sequence[int], gamma: float = 0.1):
        self._set_schedule("multistep_decrease", milestones=sorted(int(m) for m in milestones),
                           gamma=gamma)

    def lr_exponential_decrease(self, gamma: float = 0.9):
        self._set_schedule("exponential_decrease", gamma=gamma)

    def lr_plateau_decrease(self, factor: float = 0.1, patience: int = 2, threshold: float = 1e-4,
                            min_lr: float = 0.0):
        """Multiply the rate by ``factor`` when validation loss stalls ``patience`` epochs."""
        self._set_schedule("plateau_decrease", factor=factor, patience=patience,
                           threshold=threshold, min_lr=min_lr)

    def lr_cosine(self, eta_min: float = 0.0, warmup_epochs: int = 0):
        self._set_schedule("cosine", eta_min=eta_min, warmup_epochs=warmup_epochs)

    def lr_onecycle(self, max_lr: Optional[float] = None, pct_start: float = 0.3,
                    div_factor: float = 25.0, final_div_factor: float = 1e4):
        """One-cycle: warm up to ``max_lr`` (default: the learning rate), then anneal."""
        self._set_schedule("onecycle", max_lr=max_lr, pct_start=pct_start,
                           div_factor=div_factor, final_div_factor=final_div_factor)

    # ------------------------------------------------------------------ loss_*
    def _set_loss(self, name: str, class_weights=None, **params) -> None:
        optim = self._config().optim
        optim.loss_params = checked_params(LOSSES, "loss", name, params)
        optim.loss = name
        if class_weights is not None:
            self.update_class_weights(class_weights)
        self._changed()

    def loss_softmax_crossentropy(self, label_smoothing: float = 0.0, class_weights=None):
        """Example: ``gtf.loss_softmax_crossentropy(label_smoothing=0.1, class_weights="balanced")``."""
        self._set_loss("softmax_crossentropy", class_weights, label_smoothing=label_smoothing)

    def loss_focal(self, gamma: float = 2.0, alpha: Optional[List[float]] = None,
                   label_smoothing: float = 0.0, class_weights=None):
        """Focal loss ``(1 - p_t)^gamma * CE``; ``alpha``: one weight per class (or a scalar)."""
        self._set_loss("focal", class_weights, gamma=gamma, alpha=alpha,
                       label_smoothing=label_smoothing)

    # ------------------------------------------------------------------ apply_* (augmentation)
    def _augment(self, name: str, value: float, train: bool = True, val: bool = False) -> None:
        if val:
            warnings.warn("validation images are never augmented; val=True is ignored.",
                          stacklevel=3)
        setattr(self._config().data.augmentation, name, float(value) if train else 0.0)
        self._changed()

    def apply_random_horizontal_flip(self, probability: float = 0.5, train: bool = True,
                                     val: bool = False):
        """Example: ``gtf.apply_random_horizontal_flip(0.5)``."""
        self._augment("horizontal_flip", probability, train, val)

    def apply_random_rotation(self, degrees: float = 10.0, train: bool = True, val: bool = False):
        self._augment("rotation", degrees, train, val)

    def apply_random_shift(self, fraction: float = 0.1, train: bool = True, val: bool = False):
        self._augment("shift", fraction, train, val)

    def apply_random_shear(self, degrees: float = 10.0, train: bool = True, val: bool = False):
        self._augment("shear", degrees, train, val)

    def apply_random_zoom(self, fraction: float = 0.1, train: bool = True, val: bool = False):
        self._augment("zoom", fraction, train, val)

    def apply_random_brightness_contrast(self, brightness: float = 0.1, contrast: float = 0.1,
                                         train: bool = True, val: bool = False):
        self._augment("brightness", brightness, train, val)
        self._augment("contrast", contrast, train, val)
