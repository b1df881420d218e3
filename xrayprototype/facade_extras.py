"""Monk verbs with no other home: ``Estimate_Train_Time``, ``Clear_Refused_Settings``, Monk's
``update_display_progress_realtime`` / ``update_save_training_logs`` /
``update_gpu_memory_fraction`` (kept here so ``facade_settings`` stays small), and the
refusal of Monk's custom-network builder (``Compile_Network`` and its layer and block
functions, e.g. ``gtf.convolution(...)``), which this library does not have: it trains named
backbones (``List_Models``) with their new head (``append_*`` layers where available)."""
import warnings
from typing import Dict, Optional

from .errors import ConfigError, did_you_mean
from .facade_base import FacadeBase, is_setting_verb

LOGS_ALWAYS_KEPT = ("save_training_logs=False: this library always keeps the training logs "
                    "(logs/metrics.jsonl, run.log, the curves); compare, resume and Summary "
                    "need them. The setting is ignored.")


def warn_logs_always_kept() -> None:
    """Say (once per process) that training logs cannot be turned off."""
    warnings.warn(LOGS_ALWAYS_KEPT, UserWarning, stacklevel=4)


#: Monk's custom-network builder: the layer, activation and block functions a script calls
#: on the prototype object to build a network for ``Compile_Network``, and its listings
CUSTOM_NETWORK_BUILDER = frozenset(
    [f"{kind}{dims}" for kind in ("convolution", "transposed_convolution", "max_pooling",
                                  "average_pooling", "global_max_pooling",
                                  "global_average_pooling")
     for dims in ("", "1d", "2d", "3d")]
    + ["flatten", "fully_connected", "dropout", "identity", "add", "concatenate",
       "batch_normalization", "instance_normalization", "layer_normalization", "relu",
       "sigmoid", "tanh", "softplus", "softsign", "elu", "gelu", "leaky_relu", "prelu", "selu",
       "swish", "resnet_v1_block", "resnet_v2_block", "resnet_v1_bottleneck_block",
       "resnet_v2_bottleneck_block", "resnext_block", "mobilenet_v2_linear_bottleneck_block",
       "mobilenet_v2_inverted_linear_bottleneck_block", "separable_convolution_block",
       "conv_bn_relu_block", "inception_a_block", "inception_b_block", "inception_c_block",
       "inception_d_block", "inception_e_block", "squeezenet_fire_block", "densenet_block",
       "List_Layers_Custom_Model", "List_Activations_Custom_Model", "List_Blocks",
       "Visualize_Network"])


def custom_network_error(name: str) -> ConfigError:
    return ConfigError(
        f"{name}(...) belongs to Monk's custom-network builder (Compile_Network and its layer "
        "and block functions), which this library does not provide: it fine-tunes a named "
        "backbone with a new classification head. Choose a backbone from List_Models() with "
        "Model_Params(model_name=...) and add head layers with the append_* verbs "
        "(List_Layers_Transfer_Learning()).")


class ExtraVerbs(FacadeBase):
    """Mixed into ``prototype``."""

    def __getattr__(self, name: str):
        """Monk's custom-network builder functions exist, and say they are out of scope; a
        setting verb that does not exist (e.g. a Monk verb this library lacks) is remembered
        as refused, so Train() does not silently run without it."""
        if name in CUSTOM_NETWORK_BUILDER:
            def refuse(*args, **kwargs):
                raise custom_network_error(name)
            return refuse
        message = f"'{type(self).__name__}' object has no attribute '{name}'"
        if is_setting_verb(name) and not name.startswith("__"):
            message = (f"prototype has no setting verb {name}(...);"
                       f"{did_you_mean(name, [n for n in dir(type(self)) if is_setting_verb(n)])}"
                       " see List_Transforms(), List_Optimizers(), List_Losses() ...")
            if vars(self).get("experiment") is not None:
                self._note_refusal(name, f"AttributeError: {message}")
        raise AttributeError(message)

    def Compile_Network(self, network=None, data_shape=None, use_gpu: bool = True,
                        network_initializer: str = "xavier_normal") -> None:
        """Monk's custom-network builder is out of scope here: this always raises a
        ConfigError that says so and what to use instead (a named backbone from
        ``List_Models()`` and ``append_*`` head layers).

        Args:
            network: Monk's list of layers (not used).
            data_shape: Monk's input shape (not used).
            use_gpu: Monk's device choice (not used).
            network_initializer: Monk's weight initialiser (not used).

        Example:
            >>> gtf.Model_Params(model_name="resnet18")    # instead of Compile_Network(...)
        """
        raise custom_network_error("Compile_Network")

    def Clear_Refused_Settings(self) -> Dict[str, str]:
        """Forget the setting verbs refused so far for the open experiment, so that
        ``Train()`` starts without them (it refuses to start while one is remembered, naming
        each refused call and its error; a later successful call of the same verb forgets
        it too).

        Returns:
            The forgotten ``{verb: error}``.

        Example:
            >>> gtf.optimizer_sgd(0.01, clipnorm=-1)   # refused: ConfigError
            >>> gtf.Clear_Refused_Settings()           # train with the optimizer as it was
            >>> gtf.Train()
        """
        refused = self._refused()
        for verb in refused:
            self._note_refusal(verb, None)
        if refused:
            self._say(f"forgotten refused settings: {', '.join(refused)}")
        return refused

    def Estimate_Train_Time(self, num_epochs: Optional[int] = None) -> float:
        """Measure and print how long training will take: a few real training and
        validation steps on the experiment's data with a throwaway copy of its network
        (the experiment's model, weights and split are not touched), extrapolated to the
        epochs and the number of batches of each split. The figures are kept in
        ``experiment.json`` as ``train_time_estimate``.

        Args:
            num_epochs: the epochs to estimate for; default (None, or Monk's False) the
                experiment's num_epochs.

        Returns:
            The estimated training time in seconds (validation included).

        Example:
            >>> gtf.Estimate_Train_Time(num_epochs=10)
        """
        from .estimate import estimate_train_time

        experiment = self._require_experiment()
        num_epochs = None if num_epochs is False else num_epochs      # Monk's default
        if experiment.mode != "train":
            raise ConfigError(f"Estimate_Train_Time estimates a new training run; this "
                              f"experiment is open in mode '{experiment.mode}'. Open it with "
                              "Prototype(project, experiment) to train.")
        if num_epochs is not None and (isinstance(num_epochs, bool) or
                                       not isinstance(num_epochs, int) or num_epochs < 1):
            raise ConfigError(f"num_epochs must be an integer >= 1, got {num_epochs!r}.")
        experiment.check_model_name()
        if experiment.data is None:
            experiment.load_data()
        estimate = estimate_train_time(experiment, num_epochs)
        experiment.state["train_time_estimate"] = estimate
        experiment.save_state()
        total = estimate["total_seconds"]
        self._say(f"Training time estimate: {estimate['num_epochs']} epochs: approx. "
                  f"{total:.0f} s ({total / 60:.1f} min); {estimate['seconds_per_epoch']:.1f} s "
                  f"per epoch ({estimate['train_steps_per_epoch']} training + "
                  f"{estimate['val_steps_per_epoch']} validation batches, measured on "
                  f"{estimate['timed_steps']} steps each)")
        return total

    def update_gpu_memory_fraction(self, fraction: float) -> None:
        """Cap the GPU memory this process may take (Monk's Keras ``gpu_memory_fraction``).

        Args:
            fraction: in (0, 1], e.g. 0.6; see ``Model_Params``.

        Example:
            >>> gtf.update_gpu_memory_fraction(0.6)
        """
        self.Model_Params(gpu_memory_fraction=fraction)

    def update_display_progress_realtime(self, display: bool) -> None:
        """Monk's name for ``update_display_progress``: progress bars during each epoch.

        Args:
            display: True or False.

        Example:
            >>> gtf.update_display_progress_realtime(False)
        """
        self.Training_Params(display_progress=display)

    def update_save_training_logs(self, save: bool) -> None:
        """Accepted for Monk scripts: the training logs are always kept (``False`` warns
        once that it is ignored).

        Args:
            save: True (the behaviour anyway) or False (warned, ignored).

        Example:
            >>> gtf.update_save_training_logs(True)
        """
        if not isinstance(save, bool):
            raise ConfigError(f"update_save_training_logs takes True or False, got {save!r}.")
        if not save:
            warn_logs_always_kept()
