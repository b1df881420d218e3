"""The facade's custom-head verbs (Monk's transfer-learning layers): ``append_linear``,
``append_dropout`` (and Keras' ``append_globalaveragepooling`` / ``append_flatten``),
``reset_custom_head``, ``List_Layers_Transfer_Learning``, ``List_Activations_Transfer_Learning``
and ``Freeze_Layers``; the activations' ``append_*`` verbs are in ``facade_activations.py``.

The appended layers replace the default classification head, in the order they are appended
(``head.resolve_head`` says how the head is completed). They are stored in the experiment's
configuration (``model.custom_head`` in ``experiment.json``), so ``eval_infer``,
``resume_train`` and ``copy_from`` rebuild the same network; appending before or after
``Dataset()`` / ``Model()`` is the same (the model is rebuilt when next needed).

Example:
    >>> gtf.Model_Params(model_name="resnet18", freeze_base_network=True)
    >>> gtf.append_dropout(probability=0.1)
    >>> gtf.append_linear(num_neurons=512)
    >>> gtf.append_relu()
    >>> gtf.append_linear(final_layer=True)
    >>> gtf.Train()
"""
import weakref
from typing import Any, Dict, List, Optional, Sequence

from .errors import ConfigError
from .facade_base import FacadeBase
from .head import HEAD_ACTIVATIONS, HEAD_LAYERS, PASS_THROUGH, check_supported, describe


#: experiments (as opened by one Prototype call) whose custom head was started by an append
_STARTED_HERE = weakref.WeakSet()


def append_layer(verbs: FacadeBase, name: str, params: Dict[str, Any],
                 final_layer: bool) -> None:
    """Append one layer to the open experiment's custom head (checked, all or nothing). As in
    Monk, where Prototype starts with no appended layers, the first append after Prototype
    starts a new head: a head saved with a reopened experiment is replaced, and that is said
    (a notebook run again appends its layers once, not twice)."""
    experiment = verbs._require_experiment()
    if experiment.mode != "train":
        raise ConfigError(f"append_{name}: the network of an experiment opened with "
                          f"{experiment.mode} is fixed by its saved weights; use copy_from="
                          "[project, experiment] to train a variant with another head.")
    head = list(experiment.config.model.custom_head or [])
    replaced = describe(head) if head and experiment not in _STARTED_HERE else None
    head = [] if replaced else head
    if head and head[-1]["final_layer"]:
        raise ConfigError(f"cannot append {name}: append_{head[-1]['name']}(final_layer=True) "
                          "ended the custom head; call reset_custom_head() to build it again.")
    check_supported([name], experiment.open_backend().capabilities().head_layers,
                    f"backend '{experiment.backend_name}'")
    head.append({"name": name, "params": params, "final_layer": final_layer})
    verbs._update(model={"custom_head": head})
    _STARTED_HERE.add(experiment)
    if replaced:
        verbs._say(f"custom head: the one saved with this experiment ({', '.join(replaced)}) "
                   "is replaced by the layers appended after Prototype")
    shown = describe(experiment.config.model.custom_head)
    verbs._say(f"custom head: {' -> '.join(shown)}{' (final)' if final_layer else ''}")


class LayerVerbs(FacadeBase):
    """Mixed into ``prototype``: custom-head layers, the lists of them, and Freeze_Layers."""

    def append_linear(self, num_neurons: Optional[int] = None, final_layer: bool = False) -> None:
        """Append a fully connected (dense) layer to the custom head.

        Args:
            num_neurons: its outputs, an integer >= 1; None (or Monk's False) gives the number
                of classes, as the final layer needs.
            final_layer: True ends the head: nothing can be appended after it.

        Example:
            >>> gtf.append_linear(num_neurons=512)
            >>> gtf.append_linear(final_layer=True)
        """
        append_layer(self, "linear", {"num_neurons": None if num_neurons is False
                                      else num_neurons}, final_layer)

    def append_dropout(self, probability: float = 0.5, final_layer: bool = False) -> None:
        """Append dropout: each feature is zeroed with ``probability`` while training (the
        others scaled up to keep the sum); it does nothing at evaluation and inference. The
        probability is the fraction dropped on every backend, as Monk documents it (Monk's
        Keras backend dropped ``1 - probability``).

        Args:
            probability: the fraction of features dropped, in [0, 1), e.g. 0.2.
            final_layer: True ends the head.

        Example:
            >>> gtf.append_dropout(probability=0.1)
        """
        append_layer(self, "dropout", {"probability": probability}, final_layer)

    def append_globalaveragepooling(self, final_layer: bool = False) -> None:
        """Monk's Keras verb: global average pooling of the base network's feature map. Every
        backend pools it into a vector before the head already, so this layer passes the
        features through unchanged; it is accepted so that Keras scripts run as written.

        Args:
            final_layer: True ends the head.

        Example:
            >>> gtf.append_globalaveragepooling()
        """
        append_layer(self, "globalaveragepooling", {}, final_layer)

    def append_flatten(self, final_layer: bool = False) -> None:
        """Monk's Keras verb: flatten the features into a vector. The head's input is a pooled
        vector on every backend already, so this layer passes it through unchanged.

        Args:
            final_layer: True ends the head.

        Example:
            >>> gtf.append_flatten()
        """
        append_layer(self, "flatten", {}, final_layer)

    def reset_custom_head(self) -> None:
        """Forget the appended layers: the model gets the default head again (a linear layer
        to the classes, after ``Model_Params``' dropout).

        Example:
            >>> gtf.reset_custom_head()
        """
        self._update(model={"custom_head": None})

    def List_Layers_Transfer_Learning(self) -> List[str]:
        """The layer verbs that build a custom head on this experiment's backend (all of the
        library's when no experiment is open).

        Returns:
            Verb names, e.g. ``["append_linear", "append_dropout", ...]``.

        Example:
            >>> gtf.List_Layers_Transfer_Learning()
        """
        return self._list_verbs("Layers", HEAD_LAYERS)

    def List_Activations_Transfer_Learning(self) -> List[str]:
        """The activation verbs that build a custom head on this experiment's backend (all of
        the library's when no experiment is open).

        Returns:
            Verb names, e.g. ``["append_elu", "append_leakyrelu", ...]``.

        Example:
            >>> gtf.List_Activations_Transfer_Learning()
        """
        return self._list_verbs("Activations", HEAD_ACTIVATIONS)

    def List_Layers(self) -> List[str]:
        """Monk's older name of ``List_Layers_Transfer_Learning``.

        Returns:
            As ``List_Layers_Transfer_Learning``.

        Example:
            >>> gtf.List_Layers()
        """
        return self.List_Layers_Transfer_Learning()

    def List_Activations(self) -> List[str]:
        """Monk's older name of ``List_Activations_Transfer_Learning``.

        Returns:
            As ``List_Activations_Transfer_Learning``.

        Example:
            >>> gtf.List_Activations()
        """
        return self.List_Activations_Transfer_Learning()

    def _list_verbs(self, title: str, names: Sequence[str]) -> List[str]:
        if self.experiment is not None:
            built = self.experiment.open_backend().capabilities().head_layers
            names = [n for n in names if n in built or n in PASS_THROUGH]
        verbs = [f"append_{name}" for name in names]
        self._say(f"{title} List for transfer learning:\n" +
                  "\n".join(f"    {i}. {verb}" for i, verb in enumerate(verbs, 1)))
        return verbs

    def Freeze_Layers(self, num: int = 10) -> Dict[str, int]:
        """Monk's Freeze_Layers: the first ``num`` layers of the base network that own
        parameters (input side first) stay frozen; the rest of the base and the whole head
        train (``update_freeze_layers(num)``, stored in the experiment). The model is built
        now (the data set is read first if it has not been), so the count is checked and the
        trainable parameters are reported. Unlike Monk, head layers are never counted or
        frozen: a head that cannot learn would keep its random weights.

        Args:
            num: how many base layers stay frozen, an integer from 0 to the number of base
                layers (the error names it when ``num`` is larger).

        Returns:
            ``{"frozen_layers", "base_layers", "num_parameters", "trainable_parameters"}``.

        Example:
            >>> gtf.Freeze_Layers(num=10)["trainable_parameters"]
        """
        experiment = self._require_experiment()
        if experiment.mode != "train":
            raise ConfigError("Freeze_Layers sets up training; open the experiment without "
                              "eval_infer / resume_train (or with copy_from) to use it.")
        model = experiment.config.model
        before = {"freeze_layers": model.freeze_layers,
                  "freeze_base_network": model.freeze_base_network}
        self._update(model={"freeze_layers": num, "freeze_base_network": False})
        try:
            return self._frozen_report(experiment, num)
        except Exception:       # e.g. too large a num, or missing weights: nothing changes
            self._update(model=before)
            raise

    def _frozen_report(self, experiment, num: int) -> Dict[str, int]:
        if experiment.data is None:
            experiment.load_data()
        info = experiment.build_model()
        layers = experiment.backend.base_layers()
        if num > len(layers):
            raise ConfigError(f"Freeze_Layers(num={num}), but model "
                              f"'{experiment.config.model.model_name}' has {len(layers)} base "
                              f"layers on backend '{experiment.backend_name}'; use num <= "
                              f"{len(layers)} (Freeze_Layers(num={len(layers)}) trains the head "
                              "only).")
        trainable = experiment.backend.set_frozen_layers(num)["trainable_parameters"]
        experiment.state["model"]["trainable_parameters"] = trainable
        experiment.save_state()
        self._say(f"Freeze_Layers: the first {num} of {len(layers)} base layers are frozen; "
                  f"{trainable:,} of {info['num_parameters']:,} parameters train")
        return {"frozen_layers": num, "base_layers": len(layers),
                "num_parameters": info["num_parameters"], "trainable_parameters": trainable}
