"""The contract between ``prototype`` and its verb groups (``facade_*.py``).

Each verb group is a mixin of ``prototype`` and uses only what ``FacadeBase`` declares here,
plus the public methods of the open ``Experiment`` (``experiment.py``); no verb group reads
another's private members. The verbs validate nothing themselves: a setting is a change of the
configuration, ``{section: {field: value}}``, that ``Experiment.update`` checks and applies.
"""
import functools
import inspect
from pathlib import Path
from typing import Any, Dict, Optional

from .errors import ConfigError, ExperimentError
from .experiment import Experiment
from .workspace import append_run_log


#: verbs that change a setting: a refused call of one of these blocks Train() (see below)
SETTING_VERB_PREFIXES = ("update_", "optimizer_", "lr_", "loss_", "apply_", "append_", "reset_")
SETTING_VERBS = ("Dataset_Params", "Model_Params", "Training_Params", "Freeze_Layers", "Default")


def is_setting_verb(name: str) -> bool:
    return name in SETTING_VERBS or name.startswith(SETTING_VERB_PREFIXES)


def remember_refusals(verb):
    """Wrap a setting verb so that a refused call (a ConfigError, or arguments the verb does
    not take) is remembered for the open experiment and a successful one forgets it; only the
    outermost verb of nested calls (update_input_size -> Dataset_Params) counts."""
    signature = inspect.signature(verb)

    @functools.wraps(verb)
    def guarded(facade, *args, **kwargs):
        outermost = not facade._setting_call_depth
        facade._setting_call_depth += 1
        try:
            try:
                signature.bind(facade, *args, **kwargs)
            except TypeError as err:
                if outermost:
                    facade._note_refusal(verb.__name__, f"TypeError: {err}")
                raise
            result = verb(facade, *args, **kwargs)
        except ConfigError as err:
            if outermost:
                facade._note_refusal(verb.__name__, f"{type(err).__name__}: {err}")
            raise
        finally:
            facade._setting_call_depth -= 1
        if outermost:
            facade._note_refusal(verb.__name__, None)
        return result

    guarded.remembers_refusals = True
    return guarded


class FacadeBase:
    """What every verb group may use: the open experiment, reporting, and changes.

    Every setting verb of every verb group (``is_setting_verb``) is wrapped, when its class
    is defined, by ``remember_refusals``: a refused setting is remembered per experiment and
    ``Train()`` refuses to start until that verb succeeds or ``Clear_Refused_Settings()``
    is called, so a run never silently trains without a setting the script asked for."""

    verbose: int
    workspace_root: Path
    experiment: Optional[Experiment]
    _setting_call_depth: int = 0

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        for name, value in list(vars(cls).items()):
            if is_setting_verb(name) and inspect.isfunction(value) \
                    and not getattr(value, "remembers_refusals", False):
                setattr(cls, name, remember_refusals(value))

    def _note_refusal(self, verb: str, error: Optional[str]) -> None:
        """Remember (``error``) or forget (None) a refused ``verb`` of the open experiment.
        A refusal in eval_infer mode (which never trains) does not block a later Train()."""
        if self.experiment is None or self.experiment.mode == "eval_infer":
            return
        refused = self._refusals_by_experiment().setdefault(str(self.experiment.paths.dir), {})
        if error is None:
            refused.pop(verb, None)
        else:
            refused[verb] = error

    def _refused(self) -> Dict[str, str]:
        """The open experiment's refused setting verbs and their errors."""
        if self.experiment is None:
            return {}
        return dict(self._refusals_by_experiment().get(str(self.experiment.paths.dir), {}))

    def _refusals_by_experiment(self) -> Dict[str, Dict[str, str]]:
        """``{experiment folder: {verb: the error it raised}}`` of this facade object."""
        return vars(self).setdefault("refusals_by_experiment", {})

    def _check_no_refused_settings(self) -> None:
        """Raise, naming each refused setting and its error, when there is one."""
        refused = self._refused()
        if refused:
            calls = "; ".join(f"{verb}(...) was refused ({error})"
                              for verb, error in refused.items())
            raise ExperimentError(
                f"Train() will not start: {len(refused)} setting(s) asked for were refused, so "
                f"the run would train something else: {calls}. Call each verb again with a "
                "value it takes, or call Clear_Refused_Settings() to train without them.")

    def _require_experiment(self) -> Experiment:
        """The open experiment; raises when ``Prototype`` has not been called."""
        if self.experiment is None:
            raise ExperimentError("no experiment is open; call Prototype(project, experiment) "
                                  "first.")
        return self.experiment

    def _update(self, **changes: Dict[str, Any]) -> None:
        """Apply ``section={field: value}`` changes to the open experiment, all or nothing."""
        self._require_experiment().update(changes)

    def _say(self, text: str) -> None:
        """Print (when verbose) and append to the open experiment's ``logs/run.log``."""
        if self.verbose:
            print(text, flush=True)
        if self.experiment is not None:
            append_run_log(self.experiment.paths, text)
