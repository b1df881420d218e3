"""Errors that tell the user what was wrong, what was expected and how to fix it."""
import difflib
from typing import Iterable, Optional


class XrayPrototypeError(Exception):
    """Base class of every error this library raises on purpose."""


class ConfigError(XrayPrototypeError, ValueError):
    """A verb received an argument it cannot use."""


class DatasetError(XrayPrototypeError, ValueError):
    """The data set on disk cannot be used as given."""


class ExperimentError(XrayPrototypeError, RuntimeError):
    """The experiment's state on disk does not allow the requested action."""


class ModelFileError(ExperimentError):
    """A saved model file of an experiment is missing, truncated or corrupt; the message
    names the file, what is wrong and how to get a usable one back."""


class BackendUnavailableError(XrayPrototypeError, ImportError):
    """The requested backend's framework is not installed."""


class PretrainedWeightsError(XrayPrototypeError, FileNotFoundError):
    """Pretrained weights were asked for but cannot be found."""


class TrainingDivergedError(XrayPrototypeError, FloatingPointError):
    """The loss became NaN or infinite."""


def did_you_mean(name: str, choices: Iterable[str]) -> str:
    """Return " did you mean 'x'?" for the closest choices, or an empty string."""
    close = difflib.get_close_matches(str(name), list(choices), n=3, cutoff=0.6)
    if not close:
        return ""
    return " did you mean " + " or ".join(f"'{c}'" for c in close) + "?"


def unknown_name(kind: str, name: str, choices: Iterable[str], owner: str = "",
                 hint: Optional[str] = None) -> ConfigError:
    """Build the error for a name that is not among ``choices``.

    Example:
        >>> str(unknown_name("model", "resnet19", ["resnet18"], "backend 'pytorch'"))
        "model 'resnet19' is not known to backend 'pytorch'; did you mean 'resnet18'? ..."
    """
    choices = sorted(choices)
    where = f" to {owner}" if owner else ""
    message = f"{kind} '{name}' is not known{where};"
    suggestion = did_you_mean(name, choices)
    message += suggestion if suggestion else f" known {kind}s: {', '.join(choices)}."
    if hint:
        message += f" {hint}"
    return ConfigError(message)
