"""Durable file writes, the way databases do them, and the fault-injection hook of the tests.

A file becomes visible under its final name only complete and on disk: it is written under
another name in the same folder, flushed and fsynced, renamed over the final name
(``os.replace``, atomic on POSIX and Windows), and the folder is fsynced so that the rename
itself survives a power loss. ``checkpoints.py`` builds the experiment's commit protocol on it.

Fault injection (tests only): ``XRAYPROTOTYPE_FAULT_KILL_AT=N`` sends SIGKILL to this process
at the N-th ``fault_point`` (1-based), ``XRAYPROTOTYPE_FAULT_KILL_AT=GLOB@K`` at the K-th point
whose label matches ``GLOB`` (``staged best.safetensors@1``, ``state-before@2``);
``XRAYPROTOTYPE_FAULT_TRACE=<file>`` appends the number and label of every point to that file.
The labels: ``staged <file>`` (a checkpoint file written into ``models/.pending``),
``state-before`` / ``state-after`` (around the commit, ``experiment.json``),
``rename-before <file>`` / ``rename-after <file>`` (moving a committed file into place).

Example:
    >>> replace_durably(Path("models/.pending/best.safetensors"), Path("models/best.safetensors"))
"""
import fnmatch
import hashlib
import os
import signal
from pathlib import Path
from typing import Optional

KILL_ENV = "XRAYPROTOTYPE_FAULT_KILL_AT"
TRACE_ENV = "XRAYPROTOTYPE_FAULT_TRACE"
TEAR_ENV = "XRAYPROTOTYPE_FAULT_TEAR"     # "1": halve the point's file before the kill
_counter, _matched = [0], [0]


def reset_fault_points() -> None:
    """Start counting fault points from 1 again (a test running several trainings)."""
    _counter[0] = _matched[0] = 0


def fault_point(label: str, path: Optional[Path] = None) -> None:
    """A place where a crash may happen: counted, traced, and killed at when asked.

    With ``XRAYPROTOTYPE_FAULT_TEAR=1`` the file ``path`` is cut to half its size first,
    what a kill in the middle of writing it leaves."""
    kill_at, trace = os.environ.get(KILL_ENV), os.environ.get(TRACE_ENV)
    if not kill_at and not trace:
        return
    _counter[0] += 1
    if trace:
        with open(trace, "a", encoding="utf-8") as handle:
            handle.write(f"{_counter[0]} {label}\n")
    if kill_at and _kill_here(kill_at, label):
        if path is not None and os.environ.get(TEAR_ENV) == "1" and Path(path).is_file():
            os.truncate(path, Path(path).stat().st_size // 2)
        os.kill(os.getpid(), signal.SIGKILL)


def _kill_here(kill_at: str, label: str) -> bool:
    """``N``: the N-th point of the process; ``GLOB@K``: the K-th point whose label matches
    the shell pattern ``GLOB`` (e.g. ``staged resume.optimizer.pt@2``: epoch 2's)."""
    if "@" not in kill_at:
        return int(kill_at) == _counter[0]
    pattern, occurrence = kill_at.rsplit("@", 1)
    if not fnmatch.fnmatchcase(label, pattern):
        return False
    _matched[0] += 1
    return _matched[0] == int(occurrence)


def fsync_file(path: Path) -> None:
    """Flush a file another library wrote (and closed) to the disk."""
    fd = os.open(str(path), os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(folder: Path) -> None:
    """Make renames and new names in ``folder`` durable (a no-op where folders cannot be
    opened, as on Windows)."""
    try:
        fd = os.open(str(folder), os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def replace_durably(source: Path, target: Path) -> None:
    """Rename the complete file ``source`` over ``target`` (same folder or file system) and
    make the rename durable; ``target`` is at every moment the old or the new file."""
    fault_point(f"rename-before {Path(target).name}")
    os.replace(source, target)
    fsync_dir(Path(target).parent)
    fault_point(f"rename-after {Path(target).name}")


def sha256_of(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(chunk), b""):
            digest.update(block)
    return digest.hexdigest()


def file_record(path: Path) -> dict:
    """What a commit record stores of one file: its size and SHA-256."""
    path = Path(path)
    return {"size": path.stat().st_size, "sha256": sha256_of(path)}


def matches(path: Path, record: dict) -> bool:
    """Whether ``path`` exists and is the file ``record`` (size, then checksum) describes."""
    path = Path(path)
    if not path.is_file() or path.stat().st_size != record.get("size"):
        return False
    return sha256_of(path) == record.get("sha256")
