"""Every per-setting rule of an experiment's configuration, in one table per config dataclass.

A change is applied to a copy of the configuration, each changed value is checked and
converted by its table (``constraints.Setting``), then the rules that relate settings of the
same section run; only a configuration that passes replaces the old one (``updated_config``),
so a refused setting changes nothing. Where the other rules live:

- optimizer, loss and schedule parameters: ``optim.PARAMETER_RULES``;
- rules across sections (progressive resizing against ``input_size`` and ``num_epochs``,
  fine-tune stages against ``num_epochs``) and against a backend's capabilities (recipes it
  lacks, model input sizes, input channels, preprocessing inside the model):
  ``recipes.TrainingPlan`` and ``check_for_backend`` below;
- what a data set on disk must look like: ``data/``.

Example:
    >>> from xrayprototype.config import ExperimentConfig
    >>> config = updated_config(ExperimentConfig(), {"data": {"trainval_split": 0.7}})
    >>> config.data.trainval_split
    0.7
"""
import copy
import re
from dataclasses import fields, is_dataclass
from typing import Any, Dict

from .config import AugmentationConfig, DataConfig, ExperimentConfig, ModelConfig, OptimConfig, \
    TrainConfig
from .constraints import (NONE, Boolean, Interval, ListOf, Options, PathList, Satisfies, Setting,
                          Text, check_settings)
from .errors import ConfigError, unknown_name
from .optim import LOSSES, OPTIMIZERS, SCHEDULES, checked_params

#: named input normalisations (mean, std on the 0..1 scale), besides "auto" (the model's own)
#: and "dataset" (estimated on the training images)
NORMALIZATIONS = {
    "imagenet": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
    "inception": ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),
    "lite": ((127 / 255,) * 3, (128 / 255,) * 3),
    "none": (None, None),
}
NORMALIZATION_CHOICES = ("auto", "dataset") + tuple(NORMALIZATIONS)
BEST_METRICS = ("val_accuracy", "val_loss", "val_roc_auc", "train_accuracy", "train_loss")


def _compiles(pattern: str) -> bool:
    re.compile(pattern)
    return True


_POSITIVE_INT = Interval(int, 1)
_FRACTION = Interval(float, 0, 1)

DATA_SETTINGS = {
    "dataset_path": Setting(NONE, PathList()),
    "path_to_csv": Setting(NONE, PathList()),
    "delimiter": Setting(Text()),
    "trainval_split": Setting(Interval(float, 0, 1, closed="neither"),
                              label="split (the training fraction)",
                              hint="e.g. 0.8 keeps 20% for validation"),
    "input_size": Setting(_POSITIVE_INT, label="input_size", hint="e.g. 224"),
    "batch_size": Setting(_POSITIVE_INT, label="batch_size", hint="e.g. 16"),
    "shuffle_data": Setting(Boolean()),
    "num_workers": Setting(_POSITIVE_INT, label="num_processors (num_workers)"),
    "channels": Setting(Options((1, 3)), hint="1 (grayscale) or 3 (RGB)"),
    "normalization": Setting(Options(NORMALIZATION_CHOICES),
                             hint="'auto' uses the model's own"),
    "resize_mode": Setting(Options(("stretch", "center_crop"))),
    "cache_images": Setting(Options(("auto",)), Boolean()),
    "on_corrupt": Setting(Options(("skip", "error")),
                          hint="'skip' lists unreadable images and goes on"),
    "group_pattern": Setting(NONE, Satisfies(
        _compiles, "a regular expression whose first group names the patient")),
    "group_column": Setting(NONE, Text(), label="group_column",
                            hint="the name of the CSV column naming the patient"),
    "file_column": Setting(NONE, Text(), label="file_column",
                           hint="the name of the CSV column of image file names"),
    "label_column": Setting(NONE, Text(), label="label_column",
                            hint="the name of the CSV column of labels"),
    "class_names": Setting(NONE, ListOf(Text()), label="class_names",
                           hint="class_names takes a list of names in label order, e.g. "
                                "['NORMAL', 'PNEUMONIA']"),
    "weighted_sampling": Setting(Boolean()),
    "oversampling": Setting(Boolean()),
}
AUGMENTATION_SETTINGS = {
    "horizontal_flip": Setting(_FRACTION, label="horizontal flip probability"),
    "rotation": Setting(Interval(float, 0, 180), label="rotation (degrees)"),
    "shift": Setting(_FRACTION, label="shift (fraction of the image size)"),
    "shear": Setting(Interval(float, 0, 90), label="shear (degrees)"),
    "zoom": Setting(Interval(float, 0, 1, closed="left"), label="zoom (relative)"),
    "brightness": Setting(_FRACTION, label="brightness change (relative)"),
    "contrast": Setting(_FRACTION, label="contrast change (relative)"),
}
MODEL_SETTINGS = {
    "model_name": Setting(NONE, Text(), hint="see List_Models()"),
    "freeze_base_network": Setting(Boolean()),
    "use_pretrained": Setting(Boolean()),
    "model_path": Setting(NONE, PathList(), label="model_path"),
    "use_gpu": Setting(Boolean()),
    "dropout": Setting(Interval(float, 0, 1, closed="left"), label="dropout"),
    "freeze_layers": Setting(NONE, Interval(int, 0), label="freeze_layers (num_layers)"),
}
OPTIM_SETTINGS = {
    "optimizer": Setting(Options(tuple(OPTIMIZERS))),
    "learning_rate": Setting(Interval(float, 0, closed="neither"), label="learning_rate",
                             hint="e.g. 1e-3"),
    "optimizer_params": Setting(Satisfies(lambda v: isinstance(v, dict), "a dict")),
    "schedule": Setting(Options(tuple(SCHEDULES))),
    "schedule_params": Setting(Satisfies(lambda v: isinstance(v, dict), "a dict")),
    "loss": Setting(Options(tuple(LOSSES))),
    "loss_params": Setting(Satisfies(lambda v: isinstance(v, dict), "a dict")),
    "class_weights": Setting(NONE, Options(("balanced",)),
                             ListOf(Interval(float, 0, closed="neither")),
                             label="class_weights", hint="'balanced' (inverse class "
                             "frequency), one positive weight per class, or None"),
    "base_lr_factor": Setting(Interval(float, 0, closed="neither"), label="base_lr_factor",
                              hint="e.g. 0.1: the base learns 10x slower than the head"),
}
TRAIN_SETTINGS = {
    "num_epochs": Setting(_POSITIVE_INT, label="num_epochs"),
    "seed": Setting(Interval(int, 0), label="seed"),
    "display_progress": Setting(Boolean()),
    "best_metric": Setting(Options(BEST_METRICS), label="best_metric",
                           hint="a loss is minimised, the others maximised"),
    "early_stopping_patience": Setting(NONE, _POSITIVE_INT, label="early_stopping_patience",
                                       hint="None (or 0 in Training_Params) turns it off"),
    "save_intermediate_models": Setting(Boolean()),
    "mixup_alpha": Setting(Interval(float, 0), label="mixup alpha",
                           hint="0 turns mixup off; 0.2-0.4 is usual"),
    "progressive_resizing": Setting(NONE, ListOf(ListOf(_POSITIVE_INT, length=2)),
                                    label="progressive_resizing",
                                    hint="[[size, epochs], ...], e.g. [[64, 2], [128, 3]]"),
    "fine_tune_frozen_epochs": Setting(Interval(int, 0), label="frozen_epochs"),
}

#: section of ExperimentConfig -> (dataclass, its table, the name users read in errors)
SECTIONS = {
    "data": (DataConfig, DATA_SETTINGS, "dataset"),
    "model": (ModelConfig, MODEL_SETTINGS, "model"),
    "optim": (OptimConfig, OPTIM_SETTINGS, "optimizer"),
    "train": (TrainConfig, TRAIN_SETTINGS, "training"),
}
NESTED = {("data", "augmentation"): (AugmentationConfig, AUGMENTATION_SETTINGS, "augmentation")}


def updated_config(config: ExperimentConfig,
                   changes: Dict[str, Dict[str, Any]]) -> ExperimentConfig:
    """A checked copy of ``config`` with ``changes`` (``{section: {field: value}}``, a nested
    dataclass as a dict) applied; ``config`` itself is never modified."""
    new = copy.deepcopy(config)
    for section, values in changes.items():
        if section not in SECTIONS:
            raise unknown_name("configuration section", section, SECTIONS)
        kind, table, title = SECTIONS[section]
        _apply(getattr(new, section), values, kind, table, title, section)
    check_sections(new)
    return new


def _apply(target, values: Dict[str, Any], kind, table, title: str, section: str) -> None:
    if not isinstance(values, dict):
        raise ConfigError(f"the {title} settings must be a dict of field -> value, got "
                          f"{values!r}.")
    known = [f.name for f in fields(kind)]
    plain = {k: v for k, v in values.items() if (section, k) not in NESTED}
    for name, value in check_settings(title, plain, table, known).items():
        setattr(target, name, value)
    for (parent, name), (nested_kind, nested_table, nested_title) in NESTED.items():
        if parent == section and name in values:
            value = values[name]
            if is_dataclass(value):
                value = {f.name: getattr(value, f.name) for f in fields(value)}
            _apply(getattr(target, name), value, nested_kind, nested_table, nested_title,
                   f"{section}.{name}")


def check_sections(config: ExperimentConfig) -> None:
    """The rules between settings of one section; the optimizer, loss and schedule
    parameters are completed with their defaults and checked by ``optim.PARAMETER_RULES``."""
    data, optim = config.data, config.optim
    if data.weighted_sampling and data.oversampling:
        raise ConfigError("weighted sampling and oversampling are two ways of balancing an "
                          "epoch; choose one: update_weighted_sampling(False) or "
                          "update_oversampling(False).")
    optim.optimizer_params = checked_params(OPTIMIZERS, "optimizer", optim.optimizer,
                                            optim.optimizer_params)
    optim.loss_params = checked_params(LOSSES, "loss", optim.loss, optim.loss_params)
    optim.schedule_params = checked_params(SCHEDULES, "learning-rate schedule", optim.schedule,
                                           optim.schedule_params)


def validated(config: ExperimentConfig) -> ExperimentConfig:
    """A checked copy of a whole configuration (every field of every section)."""
    changes = {}
    for section, (kind, _, _) in SECTIONS.items():
        part = getattr(config, section)
        changes[section] = {f.name: getattr(part, f.name) for f in fields(kind)}
    return updated_config(ExperimentConfig(), changes)


def check_for_backend(config: ExperimentConfig, capabilities, backend_name: str) -> None:
    """Rules between the configuration and what the backend's model takes: input channels,
    and no second normalisation on a model that normalises its input itself."""
    channels = config.data.channels
    if channels not in capabilities.input_channels:
        raise ConfigError(f"backend '{backend_name}' builds models for "
                          f"{' or '.join(map(str, capabilities.input_channels))}-channel input "
                          f"(grayscale X-rays are replicated to RGB); got channels={channels}. "
                          "Use Dataset_Params(channels=3).")
    info = capabilities.models.get(config.model.model_name)
    requested = config.data.normalization
    if info is not None and info.preprocessing_in_model and \
            requested not in ("auto", "none"):
        raise ConfigError(
            f"model '{config.model.model_name}' on backend '{backend_name}' normalises its "
            f"input inside the network (it takes RGB pixels scaled to 0..1, normalization "
            f"'{info.normalization}'); normalization '{requested}' would normalise twice. "
            "Keep update_normalization('auto').")
