"""Checks after decoding: does every class keep enough readable images?

Unreadable files are skipped one by one (``ImageStore``); these checks look at what is left,
so that a class whose images are all unreadable is never silently dropped (a model trained on
one class reports a perfect validation accuracy). The rule:

- training: every class keeps at least ``MIN_READABLE_PER_CLASS`` (1) readable image in the
  training split, and every class that has validation files keeps at least one readable
  validation image;
- evaluation: every class that has files keeps at least one readable image;
- a warning (not an error) when a class lost files and keeps fewer than ``FEW_READABLE`` (5)
  readable images, or fewer than half of its files.

The error gives per split and class the counts of readable and skipped files, the first
unreadable files with the reason each failed, and how to fix it.

Example:
    >>> check_readable({"train": (records, store.skipped)}, required=("train",))
"""
import logging
import warnings
from typing import Dict, List, Sequence, Tuple

import numpy as np

from ..errors import DatasetError
from .sources import ImageRecords

LOG = logging.getLogger("xrayprototype")
MIN_READABLE_PER_CLASS = 1
FEW_READABLE = 5
SHOWN_FILES = 5


class UnreadableDataError(DatasetError):
    """Too few images of a class (or of a whole split) could be decoded."""


def readable_counts(records: ImageRecords, skipped: Dict[str, str]) -> Dict[str, Dict[str, int]]:
    """``{class: {"readable": n, "skipped": m}}`` over the classes that have files."""
    unreadable = np.array([path in skipped for path in records.paths], dtype=bool)
    counts = {}
    for index, name in enumerate(records.classes):
        members = records.labels == index
        total = int(members.sum())
        if total:
            lost = int((members & unreadable).sum())
            counts[name] = {"readable": total - lost, "skipped": lost}
    return counts


def _table(counts: Dict[str, Dict[str, Dict[str, int]]]) -> str:
    parts = []
    for split, per_class in counts.items():
        cells = ", ".join(f"{name} {c['readable']} readable / {c['skipped']} skipped"
                          for name, c in per_class.items())
        parts.append(f"{split}: {cells or 'no files'}")
    return "; ".join(parts)


def _examples(splits: Dict[str, Tuple[ImageRecords, Dict[str, str]]]) -> str:
    skipped = {}
    for _, reasons in splits.values():
        skipped.update(reasons)
    shown = [f"{path} ({reason.split(': ', 1)[-1]})"
             for path, reason in sorted(skipped.items())[:SHOWN_FILES]]
    more = f" ... and {len(skipped) - SHOWN_FILES} more" if len(skipped) > SHOWN_FILES else ""
    return f"unreadable files ({len(skipped)}): " + "; ".join(shown) + more if shown else \
        "no file was skipped"


def check_readable(splits: Dict[str, Tuple[ImageRecords, Dict[str, str]]],
                   required: Sequence[str] = ("train",)) -> Dict[str, Dict]:
    """Apply the rule above to ``{split name: (records, skipped files)}``; every class of the
    records must keep a readable image in the ``required`` splits, and every class with files
    in the others. Returns the counts; raises UnreadableDataError naming what is missing."""
    counts = {split: readable_counts(records, skipped)
              for split, (records, skipped) in splits.items()}
    problems: List[str] = []
    for split, (records, _) in splits.items():
        names = records.classes if split in required else list(counts[split])
        for name in names:
            have = counts[split].get(name, {"readable": 0, "skipped": 0})
            if have["readable"] < MIN_READABLE_PER_CLASS:
                what = f"all {have['skipped']} of its files are unreadable" if have["skipped"] \
                    else "it has no files"
                problems.append(f"class '{name}' has no readable image in the {split} split "
                                f"({what})")
    if problems:
        raise UnreadableDataError(
            f"{'; '.join(problems)}. A class that is not seen cannot be learned, validated or "
            f"evaluated, so this stops here instead of dropping it. Counts after decoding: "
            f"{_table(counts)}. {_examples(splits)}. Fix: replace the unreadable files (each "
            "reason says why it failed) or remove them, or remove the class folder if the "
            "class is not wanted; then run again.")
    _warn_few(counts)
    return counts


def _warn_few(counts: Dict[str, Dict[str, Dict[str, int]]]) -> None:
    for split, per_class in counts.items():
        for name, have in per_class.items():
            total = have["readable"] + have["skipped"]
            if have["skipped"] and (have["readable"] < FEW_READABLE
                                    or have["readable"] < total / 2):
                message = (f"class '{name}' keeps only {have['readable']} readable of {total} "
                           f"files in the {split} split ({have['skipped']} unreadable); results "
                           "for it will be unreliable. Replace the unreadable files.")
                warnings.warn(message, stacklevel=3)
                LOG.warning(message)
