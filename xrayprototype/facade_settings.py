"""The facade's setting verbs: ``Dataset_Params``, ``Model_Params``, ``Training_Params``,
``update_*``, ``optimizer_*``, ``lr_*``, ``loss_*`` and ``apply_*``.

Each verb turns its arguments into one change of the configuration (``{section: {field:
value}}``) and hands it to ``Experiment.update``, which checks every value against the tables
of ``validation.py`` and applies all of it or none of it; the experiment's ``experiment.json``
is saved at once, and whatever the change invalidates (the data split, the model) is rebuilt
when next needed. ``Reload()`` exists for Monk scripts but is never required.
"""
from typing import Any, Dict, Optional

from .errors import ConfigError
from .facade_base import FacadeBase
from .facade_extras import warn_logs_always_kept

#: Monk's argument names -> DataConfig field names
DATA_ARGUMENTS = {"split": "trainval_split", "num_processors": "num_workers"}
#: Training_Params options Monk scripts pass that mean nothing here (logs are always saved)
IGNORED_MONK_OPTIONS = ("intermediate_model_prefix", "save_training_logs")


def data_changes(values: Dict[str, Any]) -> Dict[str, Any]:
    """Dataset arguments (Monk's names accepted) as DataConfig changes; None keeps a value."""
    return {DATA_ARGUMENTS.get(k, k): v for k, v in values.items() if v is not None}


class SettingsVerbs(FacadeBase):
    """Mixed into ``prototype``: the setting verbs."""

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
                Other layouts name their columns: file_column="filename",
                label_column="label", group_column="patientid" (the defaults read the first
                column as the file and the second as the label).
            delimiter: the CSV's column separator.
            split: training fraction when no validation folder exists (seeded, stratified,
                grouped by patient where file names give one).
            input_size: side of the square network input, in pixels.
            batch_size: images per step.
            shuffle_data: shuffle the training images every epoch.
            num_processors: decoding threads.
            options: any other DataConfig field, e.g. on_corrupt="error", resize_mode=
                "center_crop", group_column="patientid", cache_images=False, class_names=
                ["NORMAL", "PNEUMONIA"] (the label order of an .npz file); for multi-label
                CSVs (Monk's ``img.jpg,Atelectasis Effusion``): label_delimiter=" " (what
                separates the labels of one cell) and multi_label=None (multi-label when a
                cell holds several labels, said when training starts), True or False.

        A MedMNIST-style ``file.npz`` is read from memory: its official train and val splits
        for training, its test split in eval_infer mode; ``"file.npz:val"`` picks a split.

        Example:
            >>> gtf.Dataset_Params(dataset_path="chest_xray/train", input_size=224, batch_size=32)
        """
        values = data_changes(dict(dataset_path=dataset_path, path_to_csv=path_to_csv,
                                   delimiter=delimiter, split=split, input_size=input_size,
                                   batch_size=batch_size, shuffle_data=shuffle_data,
                                   num_processors=num_processors, **options))
        experiment = self._require_experiment()
        if experiment.mode == "eval_infer":
            experiment.set_evaluation_data(values)
        else:
            self._update(data=values)

    def Model_Params(self, model_name: Optional[str] = None,
                     freeze_base_network: Optional[bool] = None, use_gpu: Optional[bool] = None,
                     use_pretrained: Optional[bool] = None, model_path: Optional[str] = None,
                     dropout: Optional[float] = None,
                     gpu_memory_fraction: Optional[float] = None) -> None:
        """Which network and from which weights (None keeps the current value). In
        eval_infer mode only ``model_path`` may be given: the saved model of this experiment
        (or compatible weights file) that Evaluate / Infer use instead of the best one.

        Args:
            model_name: a name of ``List_Models()``.
            freeze_base_network: train only the new classification head.
            use_gpu: use a GPU when the backend finds one.
            use_pretrained: start from ImageNet weights.
            model_path: a local weights file to start from instead (the head is new). In
                eval_infer mode: which saved model predicts, "best" (default), "last",
                "epoch_3" or Monk's "output/models/intermediate_model_2" ("final",
                "best_model"), or a weights file this library saved for the same network.
            dropout: dropout probability before the head.
            gpu_memory_fraction: Monk's Keras cap on the GPU memory the process may take,
                in (0, 1]: applied on pytorch and keras, a no-op with a note without a GPU;
                gluon has no such cap and says so.

        Example:
            >>> gtf.Model_Params(model_name="densenet121", freeze_base_network=True)
            >>> gtf.Switch_Mode(eval_infer=True)
            >>> gtf.Model_Params(model_path="workspace/Pneumonia/resnet18/output/models/"
            ...                             "intermediate_model_2")
        """
        model_path = None if model_path is False else model_path      # Monk's "no path"
        values = dict(model_name=model_name, freeze_base_network=freeze_base_network,
                      use_gpu=use_gpu, use_pretrained=use_pretrained, model_path=model_path,
                      dropout=dropout, gpu_memory_fraction=gpu_memory_fraction)
        values = {k: v for k, v in values.items() if v is not None}
        experiment = self._require_experiment()
        if experiment.mode == "eval_infer" and values.get("model_path") is not None:
            values.pop("model_path")            # a value as trained is no change (use_gpu=True)
            values = {k: v for k, v in values.items()
                      if v != getattr(experiment.config.model, k, None)}
            self._update(model=values)          # anything else is refused in eval_infer
            chosen = experiment.use_saved_model(model_path)
            self._say(f"Evaluate / Infer now use {chosen}")
            return
        self._update(model=values)

    def Training_Params(self, num_epochs: Optional[int] = None,
                        display_progress: Optional[bool] = None,
                        display_progress_realtime: Optional[bool] = None,
                        save_intermediate_models: Optional[bool] = None,
                        best_metric: Optional[str] = None,
                        early_stopping_patience: Optional[int] = None, seed: Optional[int] = None,
                        **monk_options) -> None:
        """Epochs and what the loop keeps (None keeps the current value).

        Args:
            num_epochs: epochs to train.
            display_progress: progress bars and the epoch table.
            display_progress_realtime: Monk's name for display_progress (used when
                display_progress is None).
            save_intermediate_models: keep every epoch's model in ``models/``.
            best_metric: which epoch's model is "best": last_epoch (the default: the latest
                epoch, as fastai keeps it), val_accuracy, val_loss, val_roc_auc,
                train_accuracy or train_loss.
            early_stopping_patience: stop after that many epochs without a better
                ``best_metric`` (0 turns early stopping off).
            seed: seeds the split, the shuffling, augmentation and initialisation.
            monk_options: Monk-only options (intermediate_model_prefix, save_training_logs)
                are accepted and ignored: logs are always saved.

        Example:
            >>> gtf.Training_Params(num_epochs=10, best_metric="val_loss")
        """
        unknown = sorted(set(monk_options) - set(IGNORED_MONK_OPTIONS))
        if unknown:
            raise ConfigError(f"Training_Params got unknown options {unknown}.")
        if monk_options.get("save_training_logs") is False:
            warn_logs_always_kept()
        display = display_progress if display_progress is not None else display_progress_realtime
        values = dict(num_epochs=num_epochs, display_progress=display,
                      save_intermediate_models=save_intermediate_models, best_metric=best_metric,
                      early_stopping_patience=early_stopping_patience, seed=seed)
        values = {k: v for k, v in values.items() if v is not None}
        if values.get("early_stopping_patience") == 0:         # 0 turns early stopping off
            values["early_stopping_patience"] = None
        self._update(train=values)

    # ------------------------------------------------------------------ update_*
    def update_dataset(self, dataset_path=None, path_to_csv=None, delimiter=None) -> None:
        """Change where the images are (see ``Dataset_Params``).

        Args:
            dataset_path: a folder of class sub-folders, a folder holding train/ (+ val/),
                a [train, val] pair, or a .npz file (None keeps the current one).
            path_to_csv: a CSV of ``file,label`` rows; dataset_path is then its image folder.
            delimiter: the CSV's column separator.

        Example:
            >>> gtf.update_dataset(dataset_path="chest_xray/train")
        """
        self.Dataset_Params(dataset_path=dataset_path, path_to_csv=path_to_csv, delimiter=delimiter)

    def update_input_size(self, input_size: int) -> None:
        """Side of the square network input, in pixels.

        Args:
            input_size: an integer >= 1, e.g. 224.

        Example:
            >>> gtf.update_input_size(64)
        """
        self.Dataset_Params(input_size=input_size)

    def update_batch_size(self, batch_size: int) -> None:
        """Images per training step.

        Args:
            batch_size: an integer >= 1, e.g. 16.

        Example:
            >>> gtf.update_batch_size(32)
        """
        self.Dataset_Params(batch_size=batch_size)

    def update_shuffle_data(self, shuffle: bool) -> None:
        """Shuffle the training images every epoch (True) or keep their order.

        Args:
            shuffle: True or False.

        Example:
            >>> gtf.update_shuffle_data(True)
        """
        self.Dataset_Params(shuffle_data=shuffle)

    def update_num_processors(self, num_processors: int) -> None:
        """Threads that decode images.

        Args:
            num_processors: an integer >= 1.

        Example:
            >>> gtf.update_num_processors(2)
        """
        self.Dataset_Params(num_processors=num_processors)

    def update_trainval_split(self, split: float) -> None:
        """Training fraction when no validation folder exists (patient-grouped as closely
        as the patients allow).

        Args:
            split: the training fraction, in (0, 1); 0.8 keeps 20% for validation.

        Example:
            >>> gtf.update_trainval_split(0.8)      # 20% of the images validate
        """
        self.Dataset_Params(split=split)

    def update_normalization(self, normalization: str) -> None:
        """Input normalisation: "auto" (the model's own), "imagenet", "inception", "lite",
        "dataset" (estimated on the training images) or "none". Models that normalise
        inside the network (some Keras applications) take only "auto" or "none".

        Args:
            normalization: one of "auto", "imagenet", "inception", "lite", "dataset",
                "none".

        Example:
            >>> gtf.update_normalization("dataset")
        """
        self.Dataset_Params(normalization=normalization)

    def update_weighted_sampling(self, enabled: bool = True) -> None:
        """Draw each epoch (same length) with replacement so every class is seen equally
        often; majority images are left out at random. Excludes ``update_oversampling``.

        Args:
            enabled: True turns weighted sampling on, False off.

        Example:
            >>> gtf.update_weighted_sampling(True)
        """
        self._update(data={"weighted_sampling": enabled})

    def update_model_name(self, model_name: str) -> None:
        """The network, by a name of ``List_Models()``.

        Args:
            model_name: a name of ``List_Models()`` for the experiment's backend.

        Example:
            >>> gtf.update_model_name("densenet121")
        """
        self.Model_Params(model_name=model_name)

    def update_use_gpu(self, use_gpu: bool) -> None:
        """Use a GPU when the backend finds one.

        Args:
            use_gpu: True uses a GPU when there is one; False trains on the CPU.

        Example:
            >>> gtf.update_use_gpu(False)
        """
        self.Model_Params(use_gpu=use_gpu)

    def update_use_pretrained(self, use_pretrained: bool) -> None:
        """Start from ImageNet weights (True) or from random ones.

        Args:
            use_pretrained: True or False.

        Example:
            >>> gtf.update_use_pretrained(False)
        """
        self.Model_Params(use_pretrained=use_pretrained)

    def update_freeze_base_network(self, freeze: bool) -> None:
        """Train only the classification head (True) or the whole network.

        Args:
            freeze: True freezes the base network, False trains all of it.

        Example:
            >>> gtf.update_freeze_base_network(False)
        """
        self.Model_Params(freeze_base_network=freeze)

    def update_model_path(self, model_path: str, force: bool = False) -> None:
        """Start from a local weights file (its head is replaced); in eval_infer mode, the
        saved model Evaluate / Infer use (see ``Model_Params``).

        Args:
            model_path: a local weights file of the model, used instead of ImageNet
                weights; in eval_infer mode "best", "last", "epoch_3", Monk's
                "output/models/intermediate_model_2" ... or a weights file.
            force: Monk's flag to skip its confirmation prompt (there is none here).

        Example:
            >>> gtf.update_model_path("weights/resnet18.pth")
        """
        self.Model_Params(model_path=model_path)

    def update_num_epochs(self, num_epochs: int) -> None:
        """Epochs to train.

        Args:
            num_epochs: an integer >= 1.

        Example:
            >>> gtf.update_num_epochs(10)
        """
        self.Training_Params(num_epochs=num_epochs)

    def update_seed(self, seed: int) -> None:
        """Seed of the split, shuffling, augmentation and initialisation.

        Args:
            seed: an integer >= 0.

        Example:
            >>> gtf.update_seed(1)
        """
        self.Training_Params(seed=seed)

    def update_learning_rate(self, learning_rate: float) -> None:
        """The learning rate (the schedule's base rate; the head's with fine-tune stages).

        Args:
            learning_rate: a number > 0, e.g. 1e-3.

        Example:
            >>> gtf.update_learning_rate(1e-4)
        """
        self._update(optim={"learning_rate": learning_rate})

    def update_class_weights(self, class_weights="balanced") -> None:
        """Loss weight per class: "balanced" (inverse class frequency), a list of one
        positive weight per class, or None.

        Args:
            class_weights: "balanced", a list of one weight > 0 per class (in class order),
                or None (every class weighs 1).

        Example:
            >>> gtf.update_class_weights("balanced")
        """
        self._update(optim={"class_weights": class_weights})

    def update_display_progress(self, display: bool) -> None:
        """Show progress bars and the epoch table.

        Args:
            display: True or False.

        Example:
            >>> gtf.update_display_progress(False)
        """
        self.Training_Params(display_progress=display)

    def update_save_intermediate_models(self, save: bool,
                                        prefix: str = "intermediate_model_") -> None:
        """Keep every epoch's model in ``models/`` (``epoch_001.*`` ...; in eval_infer,
        ``Model_Params(model_path=...)`` finds them by Monk's names too).

        Args:
            save: True keeps them; False keeps only the best and the last model (and the
                resume point).
            prefix: Monk's file-name prefix (accepted; the files are named ``epoch_NNN``).

        Example:
            >>> gtf.update_save_intermediate_models(True)
        """
        self.Training_Params(save_intermediate_models=save)
