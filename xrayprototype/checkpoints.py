"""Crash-safe checkpoints: stage, commit, apply; on opening, verify and finish or roll back.

The protocol of every checkpoint (each epoch's ``resume.*``, ``best.*`` when the epoch
improved, ``epoch_NNN.*`` with ``save_intermediate_models``, and ``last.*`` when training ends),
whatever the backend and however many files its ``save`` writes:

1. **stage**: the backend saves into ``models/.pending/`` under the final file names; each file
   and the folder are fsynced. ``models/`` is untouched.
2. **commit**: ``experiment.json`` (written atomically, ``state.write_state``) records under
   ``training.checkpoint`` the epoch and the size and SHA-256 of every current file: the staged
   ones and the earlier ones still valid (a best model of an earlier epoch). This write is the
   commit: before it the epoch does not exist, after it it does.
3. **apply**: each staged file is renamed over its final name (``durable.replace_durably``), and
   ``.pending`` is removed.

A crash before 2 leaves ``models/`` exactly as the last commit describes it; the staged files
are discarded when the experiment is opened again (a rollback to the last committed epoch, which
``resume_train`` then repeats from the same weights, so it reproduces the uninterrupted run). A
crash after 2 leaves the new files in ``.pending``; opening the experiment finishes the renames
(a roll forward). A file that matches neither its committed checksum nor a staged copy (changed
or damaged after the commit) is refused with a message naming it and how to recover. No file
under ``models/`` is ever rewritten in place, so the best model is never left half-written.
"""
import shutil
from pathlib import Path
from typing import Callable, Dict, List, Optional

from .durable import fault_point, file_record, fsync_dir, fsync_file, matches, replace_durably
from .errors import ExperimentError
from .state import read_state

PENDING = ".pending"


class CheckpointStore:
    """Stages a backend's checkpoint files and commits them with the state (see the module)."""

    def __init__(self, backend, paths):
        self.backend, self.paths = backend, paths
        self.staged: List[str] = []

    @property
    def pending(self) -> Path:
        return self.paths.models / PENDING

    def stage(self, which: str, with_optimizer: bool = False) -> None:
        """Save ``models/<which>.*`` into ``.pending`` (complete and on disk, not yet current)."""
        if not self.staged and self.pending.exists():       # left by a failed attempt
            shutil.rmtree(self.pending)
        self.pending.mkdir(parents=True, exist_ok=True)
        for path in self.backend.save(self.pending / which, with_optimizer=with_optimizer):
            path = Path(path)
            fsync_file(path)
            fault_point(f"staged {path.name}", path)
            if path.name not in self.staged:
                self.staged.append(path.name)
        fsync_dir(self.pending)

    def commit(self, state: Dict, epoch: int, save_state: Callable[[], None]) -> None:
        """Record the staged files in ``state["training"]["checkpoint"]``, write the state
        (the commit) and move the files into place."""
        training = state.setdefault("training", {})
        files = dict((training.get("checkpoint") or {}).get("files", {}))
        for name in self.staged:
            files[name] = file_record(self.pending / name)
        training["checkpoint"] = {"epoch": epoch, "files": files}
        fault_point("state-before")
        save_state()
        fault_point("state-after")
        self.apply(files)

    def apply(self, files: Dict[str, Dict]) -> None:
        for name in self.staged:
            _finish_rename(self.pending / name, self.paths.models / name, files[name])
        self.staged = []
        shutil.rmtree(self.pending, ignore_errors=True)
        fsync_dir(self.paths.models)


def _finish_rename(staged: Path, target: Path, record: Dict) -> bool:
    """Move a committed staged file into place; True when ``target`` is then the committed
    file (another process, a reader opening the experiment, may have moved it first)."""
    try:
        replace_durably(staged, target)
    except FileNotFoundError:
        pass
    return matches(target, record)


def recover(paths, state: Dict, discard_uncommitted: bool = True) -> Dict[str, str]:
    """Bring ``models/`` to what ``experiment.json`` committed: finish the renames of a
    committed checkpoint, and (``discard_uncommitted``, writers only) remove staged files of an
    epoch that never committed. Returns ``{file name: problem}`` for committed files that are
    neither in place nor recoverable; empty when everything holds or nothing was recorded (an
    experiment saved before checkpoints had records)."""
    record = (state.get("training") or {}).get("checkpoint") or {}
    pending = paths.models / PENDING
    problems: Dict[str, str] = {}
    for name, meta in sorted(record.get("files", {}).items()):
        target, staged = paths.models / name, pending / name
        if matches(target, meta) or (matches(staged, meta)
                                     and _finish_rename(staged, target, meta)):
            continue
        found = f"{target.stat().st_size} bytes with another checksum" if target.is_file() \
            else "no file"
        problems[name] = (f"{target} does not hold what experiment.json committed at epoch "
                          f"{record.get('epoch')} ({meta.get('size')} bytes, sha256 "
                          f"{str(meta.get('sha256'))[:12]}...); found {found}")
    if discard_uncommitted and not problems and pending.exists():
        shutil.rmtree(pending, ignore_errors=True)
        fsync_dir(paths.models)
    return problems


def _newer_commit(paths, state: Dict) -> bool:
    """A reader may have read the state just before a writer committed and moved the next
    epoch's files: take the newer state (in place) and check again, rather than call the
    moved files damaged."""
    try:
        fresh = read_state(paths.state_file)
    except ExperimentError:
        return False
    if (fresh.get("training") or {}).get("checkpoint") == \
            (state.get("training") or {}).get("checkpoint"):
        return False
    state.clear()
    state.update(fresh)
    return True


def check_checkpoint(paths, state: Dict, mode: str, report: Optional[Callable] = None) -> None:
    """Verify (and repair) the committed files before ``mode`` uses them: ``resume`` needs
    ``resume.*`` and ``best.*``, ``eval_infer`` needs ``best.*``; a problem with another file
    (``last.*``, ``epoch_NNN.*``) is only reported."""
    needed = ("resume", "best") if mode == "resume" else ("best",) if mode == "eval_infer" else ()
    for _ in range(3):
        problems = recover(paths, state, discard_uncommitted=mode in ("resume", "train"))
        fatal = {n: p for n, p in problems.items() if n.split(".")[0].split("-")[0] in needed}
        if not fatal or not _newer_commit(paths, state):
            break
    for name, problem in problems.items():
        if name not in fatal and report is not None:
            report(f"warning: {problem}")
    if not fatal:
        return
    how = ("start the run again with Prototype(project, experiment) and Train() (this run's "
           "files move to archive/), or restore models/ from a backup and resume_train=True"
           if mode == "resume" else
           "restore models/ from a backup, or train again with Train()")
    raise ExperimentError("; ".join(fatal.values()) + f". The file was changed or damaged after "
                          f"it was saved, so experiment {paths.experiment} cannot "
                          f"{'resume' if mode == 'resume' else 'predict'} from it; {how}.")
