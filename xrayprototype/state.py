"""``experiment.json``: versioned, written atomically, upgraded when read.

The file is the single source of truth of an experiment: its configuration, class names,
data summary, status, training summary and evaluation results. Writes go to a temporary file
in the same folder followed by ``os.replace``, so a crash never leaves a half-written state.
"""
import datetime as _dt
import json
import os
import platform
import tempfile
from pathlib import Path
from typing import Any, Callable, Dict

from ._version import __version__
from .errors import ExperimentError

SCHEMA_VERSION = 1

STATUS_CREATED = "created"
STATUS_TRAINING = "training"
STATUS_TRAINED = "trained"
STATUS_FAILED = "failed"
STATUS_INTERRUPTED = "interrupted"

# Functions upgrading a state of schema N to N + 1, keyed by N.
_UPGRADES: Dict[int, Callable[[Dict[str, Any]], Dict[str, Any]]] = {}


def now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def new_state(project: str, experiment: str, backend: str) -> Dict[str, Any]:
    """A fresh state for an experiment that has not trained yet."""
    return {
        "schema_version": SCHEMA_VERSION,
        "project": project,
        "experiment": experiment,
        "created": now(),
        "updated": now(),
        "status": STATUS_CREATED,
        "backend": backend,
        "versions": {"xrayprototype": __version__, "python": platform.python_version()},
        "config": {},
        "classes": [],
        "dataset": {},
        "model": {},
        "training": {},
        "summary": {},
        "evaluation": {},
        "history_file": "logs/metrics.jsonl",
    }


def write_state(path: Path, state: Dict[str, Any]) -> None:
    """Write ``state`` as JSON atomically (temporary file + ``os.replace``)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state["updated"] = now()
    fd, tmp = tempfile.mkstemp(prefix=".experiment.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(state, handle, indent=2, sort_keys=False, default=_json_default)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def read_state(path: Path) -> Dict[str, Any]:
    """Read a state, upgrading older schemas; refuse newer ones with a clear message."""
    path = Path(path)
    try:
        state = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ExperimentError(f"no experiment state at {path}.") from None
    except json.JSONDecodeError as err:
        raise ExperimentError(f"{path} is not valid JSON ({err}); restore it from a backup "
                              "or start a new experiment.") from None
    version = int(state.get("schema_version", 0))
    if version > SCHEMA_VERSION:
        raise ExperimentError(
            f"{path} was written by a newer xrayprototype (schema {version} > {SCHEMA_VERSION});"
            " upgrade with `pip install -U xrayprototype`.")
    while version < SCHEMA_VERSION:
        state = _UPGRADES[version](state)
        version = state["schema_version"]
    return state


def _json_default(value: Any) -> Any:
    """Make numpy scalars and arrays, and paths, JSON-serialisable."""
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"cannot store {type(value).__name__} in experiment.json")


def _upgrade_0_to_1(state: Dict[str, Any]) -> Dict[str, Any]:
    """States written before versioning: only the marker is missing."""
    state = dict(state)
    state["schema_version"] = 1
    return state


_UPGRADES[0] = _upgrade_0_to_1
