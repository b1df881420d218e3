"""Plain dataclasses for everything an experiment is configured with.

They hold values only; the facade validates user input before it lands here, and the whole
``ExperimentConfig`` is written to ``experiment.json`` as a dict and read back with
``ExperimentConfig.from_dict``.
"""
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Dict, List, Optional, Union

PathOrPaths = Union[None, str, List[str]]

#: Regular expression whose first group names the patient in a file name (Kermany style):
#: ``person12_bacteria_3.jpeg`` -> person12; Kermany's NORMAL files carry no person id but a
#: study id, ``IM-0523-0001[-0002].jpeg`` / ``NORMAL2-IM-1345-0001[-0001].jpeg`` -> the images
#: of one study (up to 4 in the training set) stay on one side of the split too.
DEFAULT_GROUP_PATTERN = r"(person\d+(?=_)|(?:NORMAL2-)?IM-\d+-\d+)"


@dataclass
class AugmentationConfig:
    """Random training-time augmentation; validation and test images are never augmented."""
    horizontal_flip: float = 0.0     # probability
    rotation: float = 0.0            # max degrees either way
    shift: float = 0.0               # max fraction of the image size either way
    shear: float = 0.0               # max degrees either way
    zoom: float = 0.0                # max relative zoom either way (0.1 -> 0.9x..1.1x)
    brightness: float = 0.0          # max relative brightness change either way
    contrast: float = 0.0            # max relative contrast change either way
    vertical_flip: float = 0.0       # probability
    saturation: float = 0.0          # max relative saturation change either way (colour jitter)
    hue: float = 0.0                 # max hue shift either way, in turns (0.5: half the circle)
    perspective: float = 0.0         # distortion scale (0 off, 1 corners move up to half the side)
    perspective_probability: float = 0.5
    lighting: float = 0.0            # std of AlexNet PCA lighting noise (Gluon's RandomLighting)
    random_crop: Optional[int] = None        # side of a random window, in the pixels of the
    #                                          preprocessed image (before the final resize)
    crop_scale: Optional[List[float]] = None  # random resized crop: [min, max] area fraction
    crop_ratio: Optional[List[float]] = None  # random resized crop: [min, max] aspect ratio

    def is_identity(self) -> bool:
        return not any(getattr(self, f.name) for f in fields(self)
                       if f.name != "perspective_probability")


@dataclass
class DataConfig:
    """Where the images are and how they become batches."""
    dataset_path: PathOrPaths = None
    path_to_csv: PathOrPaths = None
    delimiter: str = ","
    trainval_split: float = 0.8
    input_size: int = 224
    batch_size: int = 16
    shuffle_data: bool = True
    num_workers: int = 2
    channels: int = 3
    normalization: str = "auto"      # auto (the model's own) | imagenet | inception | lite | dataset | none
    #                                  | custom / mean_subtraction (normalization_mean / _std)
    resize_mode: str = "stretch"     # stretch | center_crop
    cache_images: Union[str, bool] = "auto"
    on_corrupt: str = "skip"         # skip | error
    group_pattern: Optional[str] = DEFAULT_GROUP_PATTERN
    group_column: Optional[str] = None       # CSV column naming the patient (else group_pattern)
    file_column: Optional[str] = None        # CSV column of file names (None: the first column)
    label_column: Optional[str] = None       # CSV column of labels (None: the second column)
    class_names: Optional[List[str]] = None   # label order of an .npz file (folders name their own)
    multi_label: Optional[bool] = None        # None: a CSV is multi-label when a row has several labels
    label_delimiter: str = " "                # separates the labels of one CSV cell (Monk: a space)
    weighted_sampling: bool = False   # draw each epoch with replacement, classes equally likely
    oversampling: bool = False        # repeat minority-class images until classes are balanced
    # deterministic preprocessing (apply_resize / apply_center_crop / apply_grayscale /
    # apply_normalize / apply_mean_subtraction): the same for train, val, test and Infer
    resize: Optional[int] = None      # decode at this size, before center_crop (None: input_size)
    center_crop: Optional[int] = None  # the central square of this side (then to input_size)
    grayscale: bool = False           # luminance, replicated to every channel
    normalization_mean: Optional[List[float]] = None   # normalization "custom"/"mean_subtraction"
    normalization_std: Optional[List[float]] = None    # normalization "custom"
    augmentation: AugmentationConfig = field(default_factory=AugmentationConfig)


@dataclass
class ModelConfig:
    """Which network, how much of it trains, and where its initial weights come from."""
    model_name: Optional[str] = None
    freeze_base_network: bool = True
    use_pretrained: bool = True
    model_path: Optional[str] = None
    use_gpu: bool = True
    dropout: float = 0.0
    freeze_layers: Optional[int] = None   # first N base layers frozen (overrides freeze_base_network)
    gpu_memory_fraction: Optional[float] = None   # cap on this process's GPU memory (Monk's Keras)
    # Monk's append_* layers replacing the classification head, in order: {"name", "params",
    # "final_layer"} (validation.checked_head; head.resolve_head builds the concrete head)
    custom_head: Optional[List[Dict[str, Any]]] = None


#: The default training recipe (issue 16): fastai's ``fit_one_cycle`` practice as this
#: library's verbs express it, each piece kept where patient-grouped cross-validation on
#: Kermany's training split did not find it worse (``benchmarks/ablate_recipe.py``; figures
#: in BENCHMARKS.md): AdamW with fastai's Adam constants, one-cycle with momentum cycling
#: (their values are those tables' defaults: ``optim.OPTIMIZERS["adamw"]``,
#: ``optim.SCHEDULES["onecycle"]``), plain cross-entropy, the last epoch kept. A verb replaces
#: its part: ``optimizer_*`` the optimizer and its parameters, ``lr_*`` the schedule.
DEFAULT_OPTIMIZER = "adamw"
DEFAULT_SCHEDULE = "onecycle"
DEFAULT_BEST_METRIC = "last_epoch"


@dataclass
class OptimConfig:
    """Optimizer, learning-rate schedule and loss, by name plus keyword parameters (defaults:
    the default recipe above)."""
    optimizer: str = DEFAULT_OPTIMIZER
    learning_rate: float = 1e-3
    optimizer_params: Dict[str, Any] = field(default_factory=dict)
    schedule: str = DEFAULT_SCHEDULE
    schedule_params: Dict[str, Any] = field(default_factory=dict)
    loss: str = "softmax_crossentropy"
    loss_params: Dict[str, Any] = field(default_factory=dict)
    class_weights: Union[None, str, List[float]] = None   # None | "balanced" | one per class
    base_lr_factor: float = 1.0      # the base network's learning rate = factor x the head's


@dataclass
class TrainConfig:
    """The epoch loop's settings."""
    num_epochs: int = 10
    seed: int = 0
    display_progress: bool = True
    best_metric: str = DEFAULT_BEST_METRIC   # "last_epoch", or a key of the epoch record
    #                                          (loss-like keys are minimised)
    early_stopping_patience: Optional[int] = None
    save_intermediate_models: bool = False
    mixup_alpha: float = 0.0              # 0: off; else lambda ~ Beta(alpha, alpha) per batch
    progressive_resizing: Optional[List[List[int]]] = None   # [[size, epochs], ...]; last: input_size
    fine_tune_frozen_epochs: int = 0      # > 0: train the head only for that many epochs, then all


@dataclass
class ExperimentConfig:
    """Everything needed to rebuild an experiment from its ``experiment.json``."""
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def to_dict(self) -> Dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, raw: Dict[str, Any]) -> "ExperimentConfig":
        """Rebuild from a dict, ignoring keys this version does not know."""
        def build(kind, values):
            known = {f.name for f in fields(kind)}
            return kind(**{k: v for k, v in (values or {}).items() if k in known})

        data = dict(raw.get("data") or {})
        augmentation = build(AugmentationConfig, data.pop("augmentation", None))
        return cls(data=DataConfig(augmentation=augmentation,
                                   **{k: v for k, v in data.items()
                                      if k in {f.name for f in fields(DataConfig)}}),
                   model=build(ModelConfig, raw.get("model")),
                   optim=build(OptimConfig, raw.get("optim")),
                   train=build(TrainConfig, raw.get("train")))
