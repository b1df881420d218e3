"""Loading an experiment's saved model files (``models/<which>.*``) with errors that name the
file, what is wrong with it and the fix, whatever the framework raised.

Every backend's ``load(stem)`` raises its framework's own error for a damaged file
(safetensors' "incomplete metadata", MXNet's ``MXNetError``, Keras' zip and HDF5 errors,
torch's "PytorchStreamReader failed"), and none of them names the path. The core calls
``load_model_files`` instead of ``backend.load`` and turns any of them into a
``ModelFileError``; no code here knows a framework.

Example:
    >>> load_model_files(experiment.backend, experiment.paths, "best", experiment.state)
"""
from pathlib import Path
from typing import Dict, List

from .errors import ModelFileError, XrayPrototypeError

#: name parts of the files holding optimizer state rather than weights (every backend's)
OPTIMIZER_MARKS = ("optimizer", ".states")


def saved_files(models: Path, which: str) -> List[Path]:
    """``models/<which>.*`` and ``models/<which>-*`` (gluon's ``best-0000.params``)."""
    return sorted(p for p in Path(models).glob(f"{which}[.-]*") if p.is_file())


def completed_epochs(state: Dict) -> int:
    return int(((state.get("training") or {}).get("progress") or {}).get("epoch_completed")
               or 0)


def _relative(path: Path, folder: Path) -> str:
    try:
        return str(Path(path).relative_to(folder))
    except ValueError:
        return str(path)


def _restore_hint(paths, which: str) -> str:
    """Retrain, or the newest archived run that holds the same model, when one does."""
    archived = sorted(paths.dir.glob(f"archive/*/models/{which}[.-]*"), reverse=True)
    again = (f"train it again: Prototype('{paths.project}', '{paths.experiment}') then Train() "
             "without resume_train (the damaged run moves to archive/)")
    hint = (f"the resume point is lost, so {again}; the run's best model, if intact, still "
            "serves eval_infer=True") if which == "resume" else again
    if archived:
        folder = archived[0].parent
        hint += (f"; an earlier run's '{which}' model is in {_relative(folder, paths.dir)}/ "
                 "(copy its files back only if that earlier run is the model you want)")
    return hint


def _missing(paths, which: str, state: Dict) -> ModelFileError:
    epochs = completed_epochs(state)
    if not epochs:
        return ModelFileError(f"no saved '{which}' model in {paths.models}; the experiment has "
                              "not completed an epoch yet; run Train() first.")
    names = sorted({p.name.replace(p.name.split(".")[0].split("-")[0], which, 1)
                    for stem in ("resume", "last", "best") if stem != which
                    for p in saved_files(paths.models, stem)
                    if not any(mark in p.name for mark in OPTIMIZER_MARKS)})
    committed = ((state.get("training") or {}).get("checkpoint") or {}).get("files") or {}
    names = sorted(n for n in committed if n.split(".")[0].split("-")[0] == which) or names
    expected = ", ".join(str(paths.models / n) for n in names) or f"{paths.models / which}.*"
    return ModelFileError(
        f"the saved '{which}' model is missing: {expected} does not exist, although "
        f"{paths.state_file.name} records {epochs} completed epoch(s) (deleted or moved?); "
        f"{_restore_hint(paths, which)}.")


def _culprits(files: List[Path], err: Exception, optimizer_only: bool) -> List[Path]:
    """The files to blame: those the error names, else empty ones, else (when the weights
    alone load) the optimizer state, else all of them."""
    text = str(err)
    named = [p for p in files if p.name in text]
    if named:
        return named
    empty = [p for p in files if p.stat().st_size == 0]
    if empty:
        return empty
    shrunk = [p for p in files if p.stat().st_size < 0.5 * _sibling_size(p)]
    if shrunk and not optimizer_only:
        return shrunk
    if optimizer_only:
        return [p for p in files if any(mark in p.name for mark in OPTIMIZER_MARKS)] or files
    return files


def _sibling_size(path: Path) -> int:
    """The largest size of the same file of the other saved models (``resume``, ``last``,
    ``best``): weights of one network have about one size, so a much smaller one is cut."""
    stem = path.name.split(".")[0].split("-")[0]
    sizes = [(path.parent / path.name.replace(stem, other, 1)).stat().st_size
             for other in ("resume", "last", "best") if other != stem
             and (path.parent / path.name.replace(stem, other, 1)).is_file()]
    return max(sizes, default=0)


def load_model_files(backend, paths, which: str, state: Dict,
                     with_optimizer: bool = False) -> None:
    """``backend.load(models/<which>)``; a missing, truncated or corrupt file raises a
    ``ModelFileError`` naming it, what is wrong and the fix (a missing model of an
    experiment that completed epochs is reported as missing, not as untrained)."""
    files = saved_files(paths.models, which)
    if not files:
        raise _missing(paths, which, state)
    try:
        backend.load(paths.model_stem(which), with_optimizer=with_optimizer)
    except ModelFileError:
        raise
    except XrayPrototypeError as err:      # the backend's own message names the file already
        raise ModelFileError(f"{err} To fix: {_restore_hint(paths, which)}.") from err
    except FileNotFoundError as err:
        raise _missing_part(paths, which, state, err) from err
    except Exception as err:  # noqa: BLE001  (each framework raises its own type)
        optimizer_only = with_optimizer and _weights_load(backend, paths.model_stem(which))
        raise _damaged(paths, which, files, err, optimizer_only) from err


def _weights_load(backend, stem: Path) -> bool:
    try:
        backend.load(stem, with_optimizer=False)
    except Exception:  # noqa: BLE001
        return False
    return True


def _missing_part(paths, which: str, state: Dict, err: Exception) -> ModelFileError:
    missing = getattr(err, "filename", None) or str(err)
    return ModelFileError(f"a file of the saved '{which}' model is missing ({missing}); "
                          f"{_restore_hint(paths, which)}.")


def _damaged(paths, which: str, files: List[Path], err: Exception,
             optimizer_only: bool) -> ModelFileError:
    culprits = _culprits(files, err, optimizer_only)
    names = ", ".join(f"{p} ({p.stat().st_size} bytes)" for p in culprits)
    part = "the optimizer state (the weights load)" if optimizer_only else f"the '{which}' model"
    lines = [line.strip() for line in str(err).strip().splitlines() if line.strip()]
    # MXNet puts a C++ traceback first and the reason last
    detail = (lines[-1] if lines[0].startswith("Traceback") else lines[0])[:300] if lines else ""
    what = "is" if len(culprits) == 1 else "are"
    kind = type(err).__name__
    detail = detail[len(kind) + 2:] if detail.startswith(f"{kind}: ") else detail
    reason = f"{kind}: {detail}" if detail else kind
    return ModelFileError(
        f"{names} {what} truncated or corrupt: {part} cannot be read ({reason}); "
        f"{_restore_hint(paths, which)}.")
