"""The on-disk layout: ``<root>/<project>/<experiment>/``, ``<root>/comparison/<name>/`` and
``<root>/ensembles/<name>/``.

The root is resolved to an absolute path once, when the facade is created, so that a later
``os.chdir`` (common in notebooks) never sends files elsewhere.
"""
import os
import re
import time
from pathlib import Path
from typing import Optional, Union

from .errors import ConfigError, ExperimentError

WORKSPACE_ENV = "XRAYPROTOTYPE_WORKSPACE"
_VALID_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9 ._+=@,-]*$")


def resolve_root(workspace: Union[None, str, os.PathLike] = None) -> Path:
    """The workspace root: the argument, else ``$XRAYPROTOTYPE_WORKSPACE``, else ``./workspace``."""
    chosen = workspace or os.environ.get(WORKSPACE_ENV) or "workspace"
    return Path(chosen).expanduser().resolve()


def validate_name(name: str, what: str) -> str:
    """Refuse names that could escape the workspace (separators, ``..``) or are empty.

    Example:
        >>> validate_name("Pneumonia", "project")
        'Pneumonia'
    """
    if not isinstance(name, str) or not name.strip():
        raise ConfigError(f"{what} name must be a non-empty string, got {name!r}.")
    if "/" in name or "\\" in name or ".." in name or not _VALID_NAME.match(name):
        raise ConfigError(
            f"{what} name {name!r} is not allowed: use letters, digits, spaces and . _ - + = @ ,"
            f" without '/', '\\' or '..' (it becomes a folder name), e.g. 'resnet18-224px'.")
    return name


class ExperimentPaths:
    """Every path of one experiment; creating the object touches nothing on disk."""

    def __init__(self, root: Path, project: str, experiment: str):
        self.root = Path(root)
        self.project = validate_name(project, "project")
        self.experiment = validate_name(experiment, "experiment")
        self.dir = self.root / project / experiment
        self.state_file = self.dir / "experiment.json"
        self.logs = self.dir / "logs"
        self.models = self.dir / "models"
        self.metrics_file = self.logs / "metrics.jsonl"
        self.run_log = self.logs / "run.log"
        self.cache = self.dir / "cache"

    def model_stem(self, which: str) -> Path:
        """``models/<which>``; the backend adds its own extension(s)."""
        return self.models / which

    def create(self) -> None:
        for folder in (self.logs, self.models):
            folder.mkdir(parents=True, exist_ok=True)

    def exists(self) -> bool:
        return self.state_file.is_file()


def append_run_log(paths: ExperimentPaths, text: str) -> None:
    """Append a time-stamped line to the experiment's ``logs/run.log`` (when logs exist)."""
    if paths.logs.is_dir():
        stamp = time.strftime("%Y-%m-%d %H:%M:%S")
        with open(paths.run_log, "a", encoding="utf-8") as log:
            log.write(f"{stamp} {text}\n")


def comparison_dir(root: Path, name: str) -> Path:
    return Path(root) / "comparison" / validate_name(name, "comparison")


def scratch_dir(root: Path, name: str, create: bool = True) -> Path:
    """A folder inside the workspace for generated data (demo sets, subsets)."""
    folder = Path(root) / "_data" / validate_name(name, "data")
    if create:
        folder.mkdir(parents=True, exist_ok=True)
    return folder


def describe(paths: Optional[ExperimentPaths]) -> str:
    return str(paths.dir) if paths else "<no experiment>"


def ensemble_dir(root: Path, name: str) -> Path:
    """``<root>/ensembles/<name>``: an ensemble's state, plots and predictions."""
    return Path(root) / "ensembles" / validate_name(name, "ensemble")


class NamedCollection:
    """What ``compare`` and ``ensemble`` share: a named folder of the workspace that lists saved
    experiments. Subclasses set ``kind`` ("comparison"), ``opening_verb`` ("Comparison") and
    ``folder_of`` (root, name -> folder)."""
    kind = "collection"
    opening_verb = "Open"
    folder_of = staticmethod(comparison_dir)

    def __init__(self, verbose: int = 1, workspace: Union[None, str, os.PathLike] = None):
        self.verbose = verbose
        self.workspace_root = resolve_root(workspace)
        self.name: Optional[str] = None

    def _say(self, text: str) -> None:
        if self.verbose:
            print(text, flush=True)

    @property
    def folder(self) -> Path:
        if self.name is None:
            raise ExperimentError(f"no {self.kind} is open; call {self.opening_verb}('name') "
                                  "first.")
        return self.folder_of(self.workspace_root, self.name)

    def _saved_experiment(self, project_name: str, experiment_name: str) -> ExperimentPaths:
        """The paths of a saved experiment of this workspace; ExperimentError if none."""
        paths = ExperimentPaths(self.workspace_root, project_name, experiment_name)
        if not paths.exists():
            raise ExperimentError(f"no experiment {project_name}/{experiment_name} under "
                                  f"{self.workspace_root}; check the names and workspace=.")
        return paths
