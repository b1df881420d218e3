"""The facade's training-recipe verbs: minority oversampling, mixup, progressive resizing,
fine-tune stages with discriminative learning rates, freeze_layers, and the learning-rate
range test ``Find_Learning_Rate``.

Each setting is validated, stored in the experiment's configuration (so it survives
``eval_infer``, ``resume_train`` and ``copy_from``) and applied by the core at ``Train()``
on every backend whose ``capabilities()`` has the mechanics (all three built-in ones do).
"""
from typing import Optional, Sequence

from .errors import ConfigError
from .facade_base import FacadeBase
from .recipes import progressive_schedule


class RecipeVerbs(FacadeBase):
    """Mixed into ``prototype``: the training-recipe verbs."""

    def update_oversampling(self, enabled: bool = True) -> None:
        """Repeat minority-class training images (each repeat augmented afresh) until every
        class has as many as the largest: every image is seen each epoch, and the epoch grows
        to ``classes x largest class`` images. Unlike ``update_weighted_sampling``, which
        keeps the epoch length and draws it with replacement (majority images are left out at
        random). The two exclude each other.

        Args:
            enabled: True turns oversampling on, False off.

        Example:
            >>> gtf.update_oversampling(True)
        """
        self._update(data={"oversampling": enabled})

    def update_mixup(self, alpha: float = 0.2) -> None:
        """Mixup: each training batch is mixed with a shuffled copy of itself, images and
        one-hot targets alike, ``lambda ~ Beta(alpha, alpha)`` per batch (seeded); training
        accuracy counts the dominant label. ``alpha=0`` turns it off. Combines with class
        weights, label smoothing and focal loss.

        Args:
            alpha: the Beta distribution's parameter, >= 0; 0.2-0.4 is usual, 0 turns mixup
                off.

        Example:
            >>> gtf.update_mixup(alpha=0.2)
        """
        self._update(train={"mixup_alpha": alpha})

    def update_progressive_resizing(self, sizes: Optional[Sequence] = None,
                                    epochs: Optional[Sequence[int]] = None) -> None:
        """Train at growing input sizes within one ``Train()``: the loaders are rebuilt at
        each stage's size and validation runs at the current size. The last size becomes the
        experiment's input size (evaluation and inference use it), ``num_epochs`` becomes the
        sum of the stages, and only epochs at the last size can become the best model. The
        last stage runs to the end, so ``update_num_epochs`` later lengthens it. ``None``
        turns it off.

        Args:
            sizes: input sizes, e.g. [64, 128, 224]; or (size, epochs) pairs.
            epochs: epochs per size, e.g. [2, 2, 4].

        Example:
            >>> gtf.update_progressive_resizing([64, 128, 224], epochs=[2, 2, 4])
        """
        if not sizes:
            self._update(train={"progressive_resizing": None})
            return
        schedule = progressive_schedule(sizes, epochs)
        num_epochs = sum(count for _, count in schedule)
        self._update(train={"progressive_resizing": schedule, "num_epochs": num_epochs},
                     data={"input_size": schedule[-1][0]})
        self._say(f"progressive resizing: {', '.join(f'{s} px x {e}' for s, e in schedule)} "
                  f"epochs; input_size {schedule[-1][0]}, num_epochs {num_epochs}")

    def update_fine_tune(self, frozen_epochs: int = 1, base_lr_factor: float = 0.1) -> None:
        """Two stages (fastai's ``fine_tune``): the head alone for ``frozen_epochs`` epochs,
        then the whole network (less ``update_freeze_layers``) with the base at
        ``base_lr_factor`` times the head's learning rate (discriminative learning rates;
        the schedule sets the head's). A fresh optimizer starts with the second stage. This
        replaces ``freeze_base_network``. ``frozen_epochs=0`` gives only the discriminative
        rates; ``update_fine_tune(0, 1.0)`` turns it all off.

        Args:
            frozen_epochs: epochs of the first stage (head only), an integer >= 0; they
                count within ``num_epochs``.
            base_lr_factor: the base network's learning rate as a multiple (> 0) of the
                head's; 0.1: the base learns 10x slower.

        Example:
            >>> gtf.update_fine_tune(frozen_epochs=1, base_lr_factor=0.1)
        """
        changes = {"train": {"fine_tune_frozen_epochs": frozen_epochs},
                   "optim": {"base_lr_factor": base_lr_factor}}
        if isinstance(frozen_epochs, int) and frozen_epochs > 0:
            changes["model"] = {"freeze_base_network": False}
        self._update(**changes)

    def update_freeze_layers(self, num_layers: Optional[int]) -> None:
        """Monk's freeze_layers: the first ``num_layers`` layers of the base network that own
        parameters (convolutions, BatchNorm, ...; input side first) stay frozen, everything
        after them and the head train. Overrides ``freeze_base_network``; ``None`` turns it
        off. Train() says how many layers the model has when ``num_layers`` is too large.

        Args:
            num_layers: how many parameter-owning base layers stay frozen (an integer >= 0),
                or None.

        Example:
            >>> gtf.update_freeze_layers(10)
        """
        model = {"freeze_layers": num_layers}
        if num_layers is not None:
            model["freeze_base_network"] = False
        self._update(model=model)

    def Find_Learning_Rate(self, start_lr: float = 1e-6, end_lr: float = 1.0,
                           num_iterations: int = 100, smoothing: float = 0.98,
                           divergence_factor: float = 4.0) -> float:
        """Learning-rate range test (Leslie Smith; fastai ``lr_find``): from the current
        model, one training step per mini-batch at rates rising exponentially from
        ``start_lr`` to ``end_lr``, stopping when the smoothed loss diverges; then the weights
        are put back (nothing else changes). Saves ``logs/lr_finder.png`` and the curve in
        ``experiment.json`` (``lr_finder``); returns the suggested learning rate (steepest
        descent of the smoothed loss, else the minimum's rate / 10). Apply it with
        ``update_learning_rate``.

        Args:
            start_lr: the first learning rate, > 0.
            end_lr: the last learning rate, > start_lr.
            num_iterations: steps (one mini-batch each) from start_lr to end_lr, >= 2.
            smoothing: factor of the loss's exponential moving average (debiased), e.g. 0.98.
            divergence_factor: the test stops once the smoothed loss exceeds this many times
                its lowest value (or is not finite).

        Returns:
            The suggested learning rate (a float).

        Example:
            >>> lr = gtf.Find_Learning_Rate(start_lr=1e-6, end_lr=1, num_iterations=100)
            >>> gtf.update_learning_rate(lr); gtf.Train()
        """
        from .lr_finder import find_learning_rate

        experiment = self._require_experiment()
        if experiment.mode != "train":
            raise ConfigError("Find_Learning_Rate trains a copy of the model's state; open the "
                              "experiment for training (no eval_infer / resume_train).")
        if not 0 < start_lr < end_lr:
            raise ConfigError(f"need 0 < start_lr < end_lr, got start_lr={start_lr}, "
                              f"end_lr={end_lr}.")
        if isinstance(num_iterations, bool) or not isinstance(num_iterations, int) \
                or num_iterations < 2:
            raise ConfigError(f"num_iterations must be an integer >= 2, got {num_iterations!r}.")
        experiment.check_model_name()
        with experiment.writing("Find_Learning_Rate"):      # refused before the sweep
            result = find_learning_rate(experiment, float(start_lr), float(end_lr),
                                        num_iterations, smoothing, divergence_factor)
        self._say(f"learning-rate range test: {len(result.learning_rates)} steps, "
                  f"{result.stopped}; suggested learning rate {result.suggested_lr:.2e} "
                  f"({result.method}); plot: {experiment.paths.logs / 'lr_finder.png'}")
        return result.suggested_lr
