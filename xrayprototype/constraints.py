"""Declarative value constraints: the one home of every per-setting rule.

Each configuration dataclass (``config.py``) and each optimizer / loss / schedule parameter
(``optim.py``) declares what its values may be, in the way scikit-learn's
``utils/_param_validation.py`` declares ``Interval`` and ``StrOptions`` per estimator; the
messages are generated here, in one voice, with a close-name suggestion for options.

Example:
    >>> rule = Setting(Interval(float, 0, 1, closed="neither"), label="split",
    ...                hint="e.g. 0.8 keeps 20% for validation")
    >>> rule.check("split", 0.8)
    0.8
    >>> rule.check("split", 1.5)
    Traceback (most recent call last):
    ...
    xrayprototype.errors.ConfigError: split must be a number in (0, 1), got 1.5; e.g. 0.8 keeps 20% for validation.
"""
import math
from dataclasses import dataclass
from numbers import Integral, Real
from pathlib import Path
from typing import Any, Callable, Iterable, Optional, Tuple

from .errors import ConfigError, did_you_mean


class Constraint:
    """One way a value can be acceptable; ``Setting`` accepts a value that meets any."""

    def accepts(self, value: Any) -> bool:
        raise NotImplementedError

    def describe(self) -> str:
        raise NotImplementedError

    def convert(self, value: Any) -> Any:
        """The value as it is stored (e.g. ``int`` for an integer interval)."""
        return value


class _NoneConstraint(Constraint):
    def accepts(self, value):
        return value is None

    def describe(self):
        return "None"


#: write ``NONE`` among a setting's constraints to allow ``None``
NONE = _NoneConstraint()


@dataclass(frozen=True)
class Interval(Constraint):
    """A number of ``kind`` (int or float) between ``low`` and ``high`` (None: unbounded);
    ``closed`` is "both", "left", "right" or "neither". Booleans are never numbers here."""
    kind: type
    low: Optional[float] = None
    high: Optional[float] = None
    closed: str = "both"

    def accepts(self, value):
        wanted = Integral if self.kind is int else Real
        if isinstance(value, bool) or not isinstance(value, wanted):
            return False
        if isinstance(value, float) and not math.isfinite(value):
            return False
        left = self.closed in ("both", "left")
        right = self.closed in ("both", "right")
        if self.low is not None and (value < self.low or (value == self.low and not left)):
            return False
        return not (self.high is not None and
                    (value > self.high or (value == self.high and not right)))

    def describe(self):
        noun = "an integer" if self.kind is int else "a number"
        if self.low is None and self.high is None:
            return noun
        if self.high is None:
            return f"{noun} {'>=' if self.closed in ('both', 'left') else '>'} {self.low:g}"
        if self.low is None:
            return f"{noun} {'<=' if self.closed in ('both', 'right') else '<'} {self.high:g}"
        opening = "[" if self.closed in ("both", "left") else "("
        closing = "]" if self.closed in ("both", "right") else ")"
        return f"{noun} in {opening}{self.low:g}, {self.high:g}{closing}"

    def convert(self, value):
        return int(value) if self.kind is int else float(value)


@dataclass(frozen=True)
class Options(Constraint):
    """One of a fixed set of values (names, or numbers such as channel counts)."""
    values: Tuple[Any, ...]

    def accepts(self, value):
        return not isinstance(value, bool) and any(value == v and type(value) is type(v)
                                                   or (isinstance(v, str) and value == v)
                                                   for v in self.values)

    def describe(self):
        return "one of " + ", ".join(repr(v) for v in self.values)


@dataclass(frozen=True)
class Boolean(Constraint):
    """True or False (numpy booleans included)."""

    def accepts(self, value):
        return isinstance(value, bool) or type(value).__name__ == "bool_"

    def describe(self):
        return "True or False"

    def convert(self, value):
        return bool(value)


@dataclass(frozen=True)
class Text(Constraint):
    """A non-empty string."""

    def accepts(self, value):
        return isinstance(value, str) and value != ""

    def describe(self):
        return "a non-empty string"


@dataclass(frozen=True)
class PathList(Constraint):
    """A path, or a list of paths; stored absolute (``~`` expanded), so that a later change
    of the working directory changes nothing."""

    def accepts(self, value):
        if isinstance(value, (list, tuple)):
            return bool(value) and all(isinstance(v, (str, Path)) for v in value)
        return isinstance(value, (str, Path)) and str(value) != ""

    def describe(self):
        return "a path or a list of paths"

    def convert(self, value):
        return absolute_paths(value)


@dataclass(frozen=True)
class ListOf(Constraint):
    """A list (or tuple) of items each meeting ``item``; ``length`` > 0 fixes its length."""
    item: Constraint
    length: int = 0
    min_length: int = 1

    def accepts(self, value):
        if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple)):
            return False
        if (self.length and len(value) != self.length) or len(value) < self.min_length:
            return False
        return all(self.item.accepts(v) for v in value)

    def describe(self):
        size = f"{self.length} " if self.length else ""
        return f"a list of {size}values, each {self.item.describe()}"

    def convert(self, value):
        return [self.item.convert(v) for v in value]


@dataclass(frozen=True)
class Satisfies(Constraint):
    """Any value ``test`` accepts; ``description`` says what that is."""
    test: Callable[[Any], bool]
    description: str

    def accepts(self, value):
        try:
            return bool(self.test(value))
        except Exception:  # noqa: BLE001  (a test that fails on a value refuses it)
            return False

    def describe(self):
        return self.description


def absolute_paths(value):
    """A path (or each path of a list) made absolute with ``~`` expanded.

    Example:
        >>> absolute_paths("/data/../data/x")
        '/data/x'
    """
    if isinstance(value, (list, tuple)):
        return [absolute_paths(v) for v in value]
    return str(Path(value).expanduser().resolve())


class Setting:
    """What one setting may be: any of ``constraints``; ``label`` is the name users type
    (e.g. "split" for ``trainval_split``), ``hint`` how to fix a refused value."""

    def __init__(self, *constraints: Constraint, label: str = "", hint: str = ""):
        self.constraints, self.label, self.hint = constraints, label, hint

    def check(self, name: str, value: Any) -> Any:
        """The value as stored; raises ConfigError saying what was expected."""
        for constraint in self.constraints:
            if constraint.accepts(value):
                return constraint.convert(value)
        options = [c for c in self.constraints if isinstance(c, Options)]
        suggestion = did_you_mean(str(value), [str(v) for o in options for v in o.values]) \
            if options and isinstance(value, str) else ""
        expected = " or ".join(c.describe() for c in self.constraints)
        message = f"{self.label or name} must be {expected}, got {value!r}"
        if suggestion:                                   # " did you mean 'x'?"
            message += f";{suggestion}" + (f" {self.hint[0].upper()}{self.hint[1:]}."
                                           if self.hint else "")
        else:
            message += f"; {self.hint}." if self.hint else "."
        raise ConfigError(message)


def check_settings(section: str, values: dict, table: dict,
                   known: Optional[Iterable[str]] = None) -> dict:
    """``values`` checked and converted by ``table`` (name -> Setting); a name outside
    ``known`` (default: the table's names) raises with a suggestion."""
    known = sorted(known if known is not None else table)
    checked = {}
    for name, value in values.items():
        if name not in known:
            suggestion = did_you_mean(name, known)
            raise ConfigError(f"unknown {section} option '{name}';"
                              + (suggestion if suggestion else f" known options: {known}."))
        checked[name] = table[name].check(name, value) if name in table else value
    return checked
