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
import warnings
from pathlib import Path
from typing import Any, Callable, Dict, List

from ._version import __version__
from .durable import fsync_dir
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
        fsync_dir(path.parent)           # the rename itself survives a power loss
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def read_state(path: Path) -> Dict[str, Any]:
    """Read a state, upgrading older schemas; refuse newer ones with a clear message."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ExperimentError(f"no experiment state at {path}.") from None
    except (OSError, UnicodeDecodeError) as err:
        raise ExperimentError(f"{path} cannot be read ({type(err).__name__}: {err}); "
                              f"{_state_fix(path)}") from None
    if not text.strip():
        raise ExperimentError(f"{path} is empty (0 bytes of JSON); {_state_fix(path)}")
    try:
        state = json.loads(text)
    except json.JSONDecodeError as err:
        raise ExperimentError(f"{path} is not valid JSON ({err}); {_state_fix(path)}") from None
    version = state.get("schema_version", 0) if isinstance(state, dict) else 0
    if isinstance(version, int) and not isinstance(version, bool) and version > SCHEMA_VERSION:
        raise ExperimentError(       # checked first: a newer schema may have another shape
            f"{path} was written by a newer xrayprototype (schema {version} > {SCHEMA_VERSION});"
            " upgrade with `pip install -U xrayprototype`.")
    state = _checked_shape(path, state)
    version = state["schema_version"]
    while version < SCHEMA_VERSION:
        state = _UPGRADES[version](state)
        version = state["schema_version"]
    return state


#: keys every state needs, with their types; a missing one of the others takes its default
_REQUIRED = {"backend": str, "config": dict}
_TYPES = {"status": str, "classes": list, "dataset": dict, "model": dict, "training": dict,
          "summary": dict, "evaluation": dict, "versions": dict, "project": str,
          "experiment": str}


def _state_fix(path: Path) -> str:
    """How to get a usable state back: the run's snapshot or an archived copy, when present."""
    folder = path.parent
    backups = [folder / "logs" / "run_state.json"] + sorted(
        (folder / "archive").glob("*/experiment.json"), reverse=True)
    found = [str(p) for p in backups if p.is_file() and p != path]
    if found:
        return (f"copy a saved copy over it (the newest first: {', '.join(found[:3])}), or "
                "delete the experiment folder and train it again.")
    return ("restore it from a backup, or delete the experiment folder and train it again "
            "(no copy was found in its logs/run_state.json or archive/).")


def _checked_shape(path: Path, state: Any) -> Dict[str, Any]:
    """The state as a dict with every key of ``new_state`` of the right type, or an
    ExperimentError naming the file, the first wrong field and the fix."""
    if not isinstance(state, dict):
        raise ExperimentError(f"{path} holds a JSON {type(state).__name__}, not an experiment "
                              f"state (a JSON object with 'backend' and 'config'); "
                              f"{_state_fix(path)}")
    if state.get("kind") == "ensemble":         # ensemble.json: members, not a model
        if not isinstance(state.get("members"), list) or not isinstance(
                state.get("schema_version"), int):
            raise ExperimentError(f"{path} is not a usable ensemble state ('members' must be a "
                                  "list, 'schema_version' an integer); delete it and call "
                                  "Ensemble(name) and Add_Member(...) again.")
        return state
    problems = [f"'{key}' is missing" for key in _REQUIRED if key not in state]
    for key, kind in list(_REQUIRED.items()) + list(_TYPES.items()):
        if key in state and not isinstance(state[key], kind):
            problems.append(f"'{key}' is a {type(state[key]).__name__}, expected a "
                            f"{kind.__name__}")
    for section, value in (state.get("config") or {}).items() if isinstance(
            state.get("config"), dict) else ():
        if section in ("data", "model", "optim", "train") and not isinstance(value, (dict,
                                                                                     type(None))):
            problems.append(f"'config.{section}' is a {type(value).__name__}, expected an object")
    version = state.get("schema_version", 0)
    if isinstance(version, bool) or not isinstance(version, int):
        problems.append(f"'schema_version' is {version!r}, expected an integer")
    if problems:
        raise ExperimentError(f"{path} is not a usable experiment state: "
                              f"{'; '.join(problems)}; {_state_fix(path)}")
    defaults = new_state(path.parent.parent.name, path.parent.name, state["backend"])
    defaults.pop("created")
    checked = dict(defaults, **state)
    checked["schema_version"] = version
    return checked


def read_metrics(path: Path, repair: bool = False) -> List[Dict[str, Any]]:
    """The records of a ``logs/metrics.jsonl``; every reader goes through here.

    A torn last line (what a kill during the append leaves: part of a JSON object and no
    newline) is dropped with a warning naming the file and line; with ``repair`` the file is
    rewritten without it (atomically), so that the next append starts on a line of its own. A
    line in the middle that is not a JSON object is skipped with a warning naming the file and
    line. A missing file has no records.

    Example:
        >>> records = read_metrics(paths.metrics_file)
    """
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return []
    lines = raw.decode("utf-8", errors="replace").split("\n")
    records, torn = [], False
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        last = number == len(lines)          # no newline after it: the append did not finish
        try:
            record = json.loads(line)
        except ValueError:
            record = None
        if isinstance(record, dict):
            records.append(record)
            continue
        torn = torn or last
        what = "a torn last line (an append that did not finish), dropped" if last else \
            "not a JSON object, skipped"
        warnings.warn(f"{path}, line {number}: {what}: {line[:80]!r}", MetricsFileWarning,
                      stacklevel=2)
    if repair and (torn or (raw and not raw.endswith(b"\n"))):
        _rewrite_metrics(path, records)
    return records


class MetricsFileWarning(UserWarning):
    """A line of ``logs/metrics.jsonl`` could not be read and was left out."""


def _rewrite_metrics(path: Path, records: List[Dict[str, Any]]) -> None:
    fd, tmp = tempfile.mkstemp(prefix=".metrics.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write("".join(json.dumps(r) + "\n" for r in records))
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


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
