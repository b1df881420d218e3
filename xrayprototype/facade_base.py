"""The contract between ``prototype`` and its verb groups (``facade_*.py``).

Each verb group is a mixin of ``prototype`` and uses only what ``FacadeBase`` declares here,
plus the public methods of the open ``Experiment`` (``experiment.py``); no verb group reads
another's private members. The verbs validate nothing themselves: a setting is a change of the
configuration, ``{section: {field: value}}``, that ``Experiment.update`` checks and applies.
"""
from pathlib import Path
from typing import Any, Dict, Optional

from .errors import ExperimentError
from .experiment import Experiment
from .workspace import append_run_log


class FacadeBase:
    """What every verb group may use: the open experiment, reporting, and changes."""

    verbose: int
    workspace_root: Path
    experiment: Optional[Experiment]

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
