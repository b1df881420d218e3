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
#: "custom" (apply_normalize) reads normalization_mean and normalization_std; "mean_subtraction"
#: (apply_mean_subtraction) reads normalization_mean and keeps the 0..255 scale
NORMALIZATION_CHOICES = ("auto", "dataset") + tuple(NORMALIZATIONS) + ("custom",
                                                                      "mean_subtraction")
#: "last_epoch": the latest epoch is the model kept (fastai's rule; with a one-cycle schedule
#: the rate has annealed there), no validation figure chooses it
LAST_EPOCH = "last_epoch"
BEST_METRICS = (LAST_EPOCH, "val_accuracy", "val_loss", "val_roc_auc", "train_accuracy",
                "train_loss")


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
    "multi_label": Setting(NONE, Boolean(), label="multi_label",
                           hint="None reads a CSV as multi-label when a row has several labels"),
    "label_delimiter": Setting(Satisfies(lambda v: isinstance(v, str) and len(v) == 1,
                                         "one character, e.g. ' ' or '|'"),
                               label="label_delimiter"),
}
_CHANNEL_VALUES = ListOf(Interval(float, 0, 1))
PREPROCESSING_SETTINGS = {   # deterministic: train, val, test and Infer alike (data section)
    "resize": Setting(NONE, _POSITIVE_INT, label="resize (input_size of apply_resize)"),
    "center_crop": Setting(NONE, _POSITIVE_INT,
                           label="center crop (input_size of apply_center_crop)"),
    "grayscale": Setting(Boolean(), label="grayscale"),
    "normalization_mean": Setting(NONE, _CHANNEL_VALUES, label="mean",
                                  hint="one value per channel on the 0..1 scale, e.g. "
                                       "[0.485, 0.456, 0.406]"),
    "normalization_std": Setting(NONE, ListOf(Interval(float, 0, 1, closed="right")),
                                 label="std", hint="one value per channel in (0, 1], e.g. "
                                                   "[0.229, 0.224, 0.225]"),
}
DATA_SETTINGS.update(PREPROCESSING_SETTINGS)
AUGMENTATION_SETTINGS = {
    "horizontal_flip": Setting(_FRACTION, label="horizontal flip probability"),
    "rotation": Setting(Interval(float, 0, 180), label="rotation (degrees)"),
    "shift": Setting(_FRACTION, label="shift (fraction of the image size)"),
    "shear": Setting(Interval(float, 0, 90), label="shear (degrees)"),
    "zoom": Setting(Interval(float, 0, 1, closed="left"), label="zoom (relative)"),
    "brightness": Setting(_FRACTION, label="brightness change (relative)"),
    "contrast": Setting(_FRACTION, label="contrast change (relative)"),
    "vertical_flip": Setting(_FRACTION, label="vertical flip probability"),
    "saturation": Setting(Interval(float, 0), label="saturation change (relative)"),
    "hue": Setting(Interval(float, 0, 0.5), label="hue shift (turns)"),
    "perspective": Setting(_FRACTION, label="distortion_scale"),
    "perspective_probability": Setting(_FRACTION, label="perspective probability"),
    "lighting": Setting(Interval(float, 0), label="alpha (lighting noise)"),
    "random_crop": Setting(NONE, _POSITIVE_INT, label="random crop (input_size)"),
    "crop_scale": Setting(NONE, ListOf(Interval(float, 0, 1, closed="right"), length=2),
                          label="scale", hint="[min, max] fractions of the area, e.g. "
                                              "(0.08, 1.0)"),
    "crop_ratio": Setting(NONE, ListOf(Interval(float, 0, closed="neither"), length=2),
                          label="ratio", hint="[min, max] aspect ratios, e.g. (0.75, 1.333)"),
}
MODEL_SETTINGS = {
    "model_name": Setting(NONE, Text(), hint="see List_Models()"),
    "freeze_base_network": Setting(Boolean()),
    "use_pretrained": Setting(Boolean()),
    "model_path": Setting(NONE, PathList(), label="model_path"),
    "use_gpu": Setting(Boolean()),
    "dropout": Setting(Interval(float, 0, 1, closed="left"), label="dropout"),
    "freeze_layers": Setting(NONE, Interval(int, 0), label="freeze_layers (num_layers)"),
    "gpu_memory_fraction": Setting(NONE, Interval(float, 0, 1, closed="right"),
                                   label="gpu_memory_fraction",
                                   hint="a fraction of each GPU's memory, e.g. 0.6"),
    "custom_head": Setting(NONE, ListOf(Satisfies(lambda v: isinstance(v, dict), "a dict"),
                                        min_length=0), label="custom_head",
                           hint="the layers of append_* calls; checked by checked_head"),
}
_ANY = Interval(float)
_NON_NEGATIVE = Interval(float, 0)
_POSITIVE = Interval(float, 0, closed="neither")
#: the parameters of each custom-head layer: Monk's append_<name> verbs, argument names and
#: ranges; the order of HEAD_LAYER_SETTINGS is the order List_*_Transfer_Learning shows
HEAD_LAYER_SETTINGS = {
    "linear": {"num_neurons": Setting(NONE, _POSITIVE_INT, hint="None: the number of classes")},
    "dropout": {"probability": Setting(Interval(float, 0, 1, closed="left"),
                                       hint="the fraction of features dropped, e.g. 0.2")},
    "globalaveragepooling": {}, "flatten": {},
    "elu": {"alpha": Setting(_ANY)}, "celu": {"alpha": Setting(_POSITIVE)},
    "hardshrink": {"lambd": Setting(_NON_NEGATIVE)},
    "hardtanh": {"min_val": Setting(_ANY), "max_val": Setting(_ANY)},
    "leakyrelu": {"negative_slope": Setting(_NON_NEGATIVE, hint="e.g. 0.01")},
    "logsigmoid": {}, "logsoftmax": {},
    "prelu": {"num_parameters": Setting(Options((1,)), hint="one learnt slope, shared by every "
                                        "feature, is what every backend builds"),
              "init": Setting(_ANY, hint="the slope's initial value, e.g. 0.25")},
    "relu": {}, "relu6": {},
    "rrelu": {"lower": Setting(Interval(float, 0, 1)), "upper": Setting(Interval(float, 0, 1))},
    "selu": {}, "sigmoid": {},
    "softplus": {"beta": Setting(_POSITIVE), "threshold": Setting(_POSITIVE)},
    "softshrink": {"lambd": Setting(_NON_NEGATIVE)}, "softsign": {}, "softmin": {},
    "softmax": {}, "swish": {"beta": Setting(_ANY)}, "tanh": {}, "tanhshrink": {},
    "threshold": {"threshold": Setting(_ANY), "value": Setting(_ANY)},
}
for _layer, _table in HEAD_LAYER_SETTINGS.items():
    for _name, _setting in _table.items():
        _setting.label = f"append_{_layer}({_name}=...)"
#: rules between one layer's parameters: (test, what it asks)
HEAD_LAYER_RULES = {"hardtanh": (lambda p: p["min_val"] < p["max_val"], "min_val < max_val"),
                    "rrelu": (lambda p: p["lower"] <= p["upper"], "lower <= upper")}
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
    data, optim, train = config.data, config.optim, config.train
    if train.best_metric == LAST_EPOCH and train.early_stopping_patience:
        raise ConfigError("early stopping waits for a better best_metric, and with "
                          "best_metric='last_epoch' every epoch is the best: choose a "
                          "validation metric, e.g. Training_Params(best_metric='val_loss'), or "
                          "turn early stopping off (early_stopping_patience=0).")
    if data.weighted_sampling and data.oversampling:
        raise ConfigError("weighted sampling and oversampling are two ways of balancing an "
                          "epoch; choose one: update_weighted_sampling(False) or "
                          "update_oversampling(False).")
    check_preprocessing(data)
    config.model.custom_head = checked_head(config.model.custom_head)
    optim.optimizer_params = checked_params(OPTIMIZERS, "optimizer", optim.optimizer,
                                            optim.optimizer_params)
    optim.loss_params = checked_params(LOSSES, "loss", optim.loss, optim.loss_params)
    optim.schedule_params = checked_params(SCHEDULES, "learning-rate schedule", optim.schedule,
                                           optim.schedule_params)


def checked_head_layer(spec: Dict[str, Any]) -> Dict[str, Any]:
    """One appended head layer ``{"name", "params", "final_layer"}``, checked by
    ``HEAD_LAYER_SETTINGS`` and converted; every parameter is stored, defaults included."""
    name = spec.get("name")
    if name not in HEAD_LAYER_SETTINGS:
        raise unknown_name("custom-head layer", str(name), HEAD_LAYER_SETTINGS,
                           hint="see List_Layers_Transfer_Learning() and "
                                "List_Activations_Transfer_Learning().")
    table, params = HEAD_LAYER_SETTINGS[name], dict(spec.get("params") or {})
    missing = sorted(set(table) - set(params))
    if missing:
        raise ConfigError(f"append_{name} needs {', '.join(missing)}; e.g. "
                          f"append_{name}({', '.join(f'{m}=...' for m in missing)}).")
    params = check_settings(f"append_{name}", params, table)
    test, wanted = HEAD_LAYER_RULES.get(name, (lambda p: True, ""))
    if not test(params):
        raise ConfigError(f"append_{name} needs {wanted}, got {params}.")
    final = Setting(Boolean(), label="final_layer").check("final_layer",
                                                          spec.get("final_layer", False))
    return {"name": name, "params": params, "final_layer": final}


def checked_head(specs):
    """The custom head's layers checked (``checked_head_layer``); only the last may be the
    final layer. None (the default head) stays None."""
    if specs is None:
        return None
    layers = [checked_head_layer(spec) for spec in specs]
    if any(layer["final_layer"] for layer in layers[:-1]):
        raise ConfigError("only the last appended layer can be the final layer (final_layer="
                          "True ends the head); reset_custom_head() and append the layers again.")
    return layers


def check_preprocessing(data) -> None:
    """The rules between the transform settings of one data section."""
    def ordered(name, pair):
        if pair is not None and pair[0] > pair[1]:
            raise ConfigError(f"{name} must be (min, max) with min <= max, got {tuple(pair)}.")

    ordered("scale", data.augmentation.crop_scale)
    ordered("ratio", data.augmentation.crop_ratio)
    image_side = data.resize or data.input_size
    if data.center_crop and data.center_crop > image_side:
        raise ConfigError(f"apply_center_crop({data.center_crop}) is larger than the resized "
                          f"image ({image_side} px); crop at most {image_side}, or "
                          f"apply_resize({data.center_crop}) first.")
    wanted = {"custom": ("normalization_mean", "normalization_std"),
              "mean_subtraction": ("normalization_mean",)}.get(data.normalization, ())
    for name in ("normalization_mean", "normalization_std"):
        values = getattr(data, name)
        if name in wanted and values is None:
            raise ConfigError(f"normalization '{data.normalization}' needs {name}; set it with "
                              "apply_normalize(mean, std) or apply_mean_subtraction(mean).")
        if values is not None and len(values) not in (1, data.channels):
            raise ConfigError(f"{name} has {len(values)} values for {data.channels}-channel "
                              f"images; give one value, or one per channel.")


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
                          "Use Dataset_Params(channels=3) (or apply_grayscale("
                          "num_output_channels=3): grey replicated to 3 channels).")
    check_optim_for_backend(config, capabilities, backend_name)
    info = capabilities.models.get(config.model.model_name)
    requested = config.data.normalization
    if info is not None and info.preprocessing_in_model and \
            requested not in ("auto", "none"):
        raise ConfigError(
            f"model '{config.model.model_name}' on backend '{backend_name}' normalises its "
            f"input inside the network (it takes RGB pixels scaled to 0..1, normalization "
            f"'{info.normalization}'); normalization '{requested}' would normalise twice. "
            "Keep update_normalization('auto') (apply_normalize / apply_mean_subtraction set "
            "a normalisation too; reset_transforms() removes theirs).")


#: the arguments of the Visualize_* verbs (checked per call, nothing is stored)
VISUALIZE_ARGUMENTS = {
    "data_shape": Setting(NONE, ListOf(_POSITIVE_INT, length=3), label="data_shape",
                          hint="give (channels, height, width), e.g. (3, 224, 224)"),
    "port": Setting(NONE, Interval(int, 1, 65535), label="port",
                    hint="None lets netron pick a free port"),
    "browse": Setting(Boolean()),
    "store_images_if_plot_fails": Setting(Boolean()),
    "max_tiles": Setting(_POSITIVE_INT, label="max_tiles", hint="e.g. 64"),
    "layers": Setting(NONE, Text(), ListOf(Text()), label="layers",
                      hint="give a convolution layer's name or a list of them (None: all)"),
}


def check_optim_for_backend(config: ExperimentConfig, capabilities, backend_name: str) -> None:
    """The optimizer and loss must be among those the backend declares; the error names the
    installed backends that declare it."""
    for kind, name, declared in (("optimizer", config.optim.optimizer, capabilities.optimizers),
                                 ("loss", config.optim.loss, capabilities.losses)):
        if name in declared:
            continue
        others = [other for other in _installed_backends() if other != backend_name
                  and name in getattr(_capabilities_of(other),
                                      "losses" if kind == "loss" else "optimizers")]
        raise ConfigError(
            f"backend '{backend_name}' has no {kind} '{name}'; it has {', '.join(declared)} "
            f"(List_{'Losses' if kind == 'loss' else 'Optimizers'}()). "
            + (f"Backend(s) {', '.join(others)} have it: Prototype(..., backend="
               f"'{others[0]}')." if others else f"No installed backend has '{name}'."))


def _installed_backends():
    from .backend import installed_backends

    return installed_backends()


def _capabilities_of(name: str):
    from .backend import create_backend

    return create_backend(name).capabilities()
