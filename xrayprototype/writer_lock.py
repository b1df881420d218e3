"""One writer per experiment: an exclusive lock file (``<experiment>/.lock``, taken with the
``filelock`` library, an OS-level lock the kernel releases when its process dies) and a small
``<experiment>/writer.json`` naming the holder (pid, host, verb, command, since when).

Granularity: a training run (new or resumed) holds the lock for its whole duration, archiving
included; the short writers (settings, Select_Threshold, Calibrate, Evaluate's saved results,
Audit_Shortcuts) take it for their write. Readers (``mode='read'``, ``eval_infer`` predictions,
``compare``, ``ensemble``) never take it. A second writer is refused at once with
``ExperimentLockedError`` naming the holder; a ``writer.json`` left behind by a killed process
is recovered with a warning.

Example:
    >>> lock = WriterLock(Path("workspace/Pneumonia/resnet18"))
    >>> with lock.hold("Train"):
    ...     pass          # a second process's lock.hold(...) raises ExperimentLockedError here
"""
import contextlib
import functools
import json
import os
import socket
import sys
import time
import warnings
from pathlib import Path
from typing import Callable, Dict, Iterator, Optional

from filelock import FileLock, Timeout

from .errors import ExperimentError

LOCK_FILE = ".lock"
WRITER_FILE = "writer.json"
#: how long a writer waits for a short write (one state save) of another to end
SHORT_WAIT_S = 3.0


class ExperimentLockedError(ExperimentError):
    """Another process (or another open object of this process) is writing the experiment."""


class ExperimentChangedError(ExperimentLockedError):
    """Another process trained the experiment again after this object read it."""


class StaleLockWarning(UserWarning):
    """The previous writer of an experiment ended without releasing it (killed?)."""


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` exists on this host."""
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, ValueError):
        return True
    return True


def _utc(seconds: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(seconds))


def describe_holder(holder: Optional[Dict]) -> str:
    """'process 123 on host h (doing: Train, since ... UTC, 4.0 min; command: x.py)'."""
    if not holder:
        return "a process that has not written writer.json yet (it is just starting)"
    who = "this same process (another open object of this experiment)" \
        if holder.get("pid") == os.getpid() and holder.get("host") == socket.gethostname() \
        else f"process {holder.get('pid')} on host {holder.get('host')}"
    since = holder.get("started", 0)
    minutes = max(0.0, (time.time() - since) / 60)
    return (f"{who} (doing: {holder.get('verb')}, since {_utc(since)}, {minutes:.1f} min; "
            f"command: {holder.get('command')})")


def _file_lock(path: Path) -> FileLock:
    """A non-blocking lock on ``path`` shared by threads; the file itself stays (removing it on
    release would let two processes lock two different files of the same name)."""
    try:
        return FileLock(str(path), timeout=0, thread_local=False, preserve_lock_file=True)
    except TypeError:                           # filelock 3.x: never removes a Unix lock file
        return FileLock(str(path), timeout=0, thread_local=False)


class WriterLock:
    """The write lock of one experiment folder; re-entrant within one holder object."""

    def __init__(self, folder: Path, report: Callable[[str], None] = print):
        self.folder, self.report = Path(folder), report
        self.depth = 0
        self._lock: Optional[FileLock] = None

    @property
    def held(self) -> bool:
        return self.depth > 0

    @property
    def writer_file(self) -> Path:
        return self.folder / WRITER_FILE

    def holder(self) -> Optional[Dict]:
        """The content of writer.json, or None (absent, torn or not a writer record)."""
        try:
            record = json.loads(self.writer_file.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        if not isinstance(record, dict) or not isinstance(record.get("started", 0), (int, float)):
            return None
        return record

    def acquire(self, verb: str, short: bool = False) -> None:
        """Take the lock, or raise ExperimentLockedError naming the holder; ``short``: only
        for one quick write (others then wait for it instead of being refused)."""
        if self.depth:
            self.depth += 1
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        lock = _file_lock(self.folder / LOCK_FILE)
        self._take(lock, verb)
        self._recover(self.holder())
        self._write_holder(verb, short)
        self._lock, self.depth = lock, 1

    def release(self) -> None:
        if not self.depth:
            return
        self.depth -= 1
        if self.depth == 0:
            with contextlib.suppress(OSError):
                self.writer_file.unlink()
            lock, self._lock = self._lock, None
            lock.release()

    @contextlib.contextmanager
    def hold(self, verb: str, short: bool = False) -> Iterator["WriterLock"]:
        self.acquire(verb, short)
        try:
            yield self
        finally:
            self.release()

    # ------------------------------------------------------------------ helpers
    def _take(self, lock: FileLock, verb: str) -> None:
        """Lock now, or refuse naming the holder. Two cases only delay it: a short write (one
        ``experiment.json`` save, or a holder that has not written ``writer.json`` yet) is
        waited for up to ``SHORT_WAIT_S``; a dead holder (same host) releases its OS lock with
        its process, and a soft lock file it left (no OS locks here) is removed."""
        deadline, dead_seen = time.time() + SHORT_WAIT_S, 0
        while True:
            try:
                lock.acquire(timeout=0)
                return
            except Timeout:
                holder = self.holder()
            brief = holder is None or bool(holder.get("short"))
            if self._dead(holder):
                dead_seen += 1
                if dead_seen > 10:
                    self._clear_soft_lock()
                    try:
                        lock.acquire(timeout=0)
                        return
                    except Timeout:
                        raise self._refusal(verb, self.holder()) from None
            elif not brief or time.time() > deadline:
                raise self._refusal(verb, holder) from None
            time.sleep(0.05)

    @staticmethod
    def _dead(holder: Optional[Dict]) -> bool:
        return bool(holder) and holder.get("host") == socket.gethostname() \
            and not pid_alive(holder.get("pid", -1))

    def _clear_soft_lock(self) -> None:
        """Where the file system has no OS locks, filelock falls back to a lock file that a
        killed process leaves behind: remove it when its writer is dead (same host)."""
        with contextlib.suppress(OSError):
            (self.folder / LOCK_FILE).unlink()

    def _recover(self, previous: Optional[Dict]) -> None:
        """writer.json of a holder that is gone: it died holding the lock (SIGKILL, power)."""
        if not previous:
            return
        text = (f"recovered the write lock of {self.folder}: its previous writer, "
                f"{describe_holder(previous)}, ended without releasing it (killed or crashed). "
                "If it was training, its state says so; continue with resume_train=True.")
        warnings.warn(text, StaleLockWarning, stacklevel=4)
        with contextlib.suppress(Exception):
            self.report(f"warning: {text}")

    def _write_holder(self, verb: str, short: bool) -> None:
        record = {"pid": os.getpid(), "host": socket.gethostname(), "verb": verb, "short": short,
                  "command": " ".join(sys.argv)[:300] or sys.executable,
                  "started": time.time(), "started_utc": _utc(time.time())}
        temporary = self.writer_file.with_name(f".{WRITER_FILE}.{os.getpid()}.tmp")
        temporary.write_text(json.dumps(record, indent=1), encoding="utf-8")
        os.replace(temporary, self.writer_file)

    def _refusal(self, verb: str, holder: Optional[Dict]) -> ExperimentLockedError:
        return ExperimentLockedError(
            f"cannot {verb}: experiment {self.folder.parent.name}/{self.folder.name} is being "
            f"written by {describe_holder(holder)}. One writer at a time: wait until it "
            "finishes (reading it meanwhile works: Prototype(..., eval_infer=True), compare, "
            "ensemble), or start a variant with Prototype(project, 'new-name', "
            f"copy_from=['{self.folder.parent.name}', '{self.folder.name}']). If that process "
            f"is gone (another host), delete {self.writer_file} and {self.folder / LOCK_FILE}.")


def check_not_superseded(paths, run_seen: Optional[str]) -> None:
    """Refuse to save a state read before another process started a new run of the experiment
    (``training.run_started`` on disk differs from ``run_seen``): saving would overwrite it."""
    try:
        on_disk = json.loads(paths.state_file.read_text(encoding="utf-8"))
        run = (on_disk.get("training") or {}).get("run_started")
    except (OSError, ValueError, AttributeError):
        return          # absent (new experiment) or unreadable: the state module reports it
    if run != run_seen:
        raise ExperimentChangedError(
            f"experiment {paths.project}/{paths.experiment} was trained again by another "
            f"process (run started {run}) after it was opened here (run {run_seen}); saving "
            "would overwrite that run's state. Open it again, e.g. Prototype("
            f"'{paths.project}', '{paths.experiment}', eval_infer=True), and repeat the call.")


def writes_experiment(verb: str):
    """Decorator of an ``Experiment`` method that writes it: the method runs under the write
    lock (``Experiment.writing``), so a second writer is refused before any work."""
    def decorate(method):
        @functools.wraps(method)
        def locked(self, *args, **kwargs):
            with self.writing(verb):
                return method(self, *args, **kwargs)
        return locked
    return decorate
