"""Reading the whole PyTorch model a Monk v1 run saved (``torch.save(model, "final")``).

Such a file is a pickle of Python objects: loading it runs code from the file. It is read only
when the user opted in (``trust_pickled_model=True``); without the opt-in it is refused before
it is opened."""
from pathlib import Path

import torch
from torch import nn

from xrayprototype.errors import ConfigError
from xrayprototype.monk_workspace import model_file_error

#: the file Monk's eval_infer loads (pytorch/models/return_model.py: load_model(final=True))
FINAL = "final"


def refuse_pickle(path: Path) -> ConfigError:
    return ConfigError(
        f"{path} is a whole PyTorch model that Monk saved with torch.save(model): loading it "
        "unpickles Python objects, which RUNS CODE FROM THE FILE. It is not loaded unless you "
        "say you trust its source: Prototype(project, experiment, eval_infer=True, "
        "trust_pickled_model=True). Only do that for a file you or someone you trust made.")


def load_pickled_model(model_dir: Path, trust_pickled_model: bool) -> nn.Module:
    """The ``nn.Module`` in ``model_dir/final``, unpickled only with ``trust_pickled_model``."""
    path = Path(model_dir) / FINAL
    if not path.is_file():
        raise model_file_error(path, "does not exist")
    if not trust_pickled_model:
        raise refuse_pickle(path)
    if path.stat().st_size == 0:
        raise model_file_error(path, "is empty (0 bytes)")
    try:
        model = torch.load(str(path), map_location="cpu", weights_only=False)
    except (ImportError, AttributeError) as err:        # intact, but its class is unknown
        raise model_file_error(path, "holds a network whose Python class cannot be imported "
                                     "here (install the package that defines it)", err) from err
    except Exception as err:  # noqa: BLE001  (a damaged pickle or zip raises many types)
        raise model_file_error(path, "is truncated or corrupt", err) from err
    if not isinstance(model, nn.Module):
        raise model_file_error(path, f"holds a {type(model).__name__}, not a network "
                                     "(torch.nn.Module)")
    return without_output_activation(model).eval()


def without_output_activation(model: nn.Module) -> nn.Module:
    """``model`` with a final Softmax / Sigmoid (the last module of its last Sequential chain)
    replaced by the identity: the backend applies its own to the class scores."""
    parent = model
    while isinstance(parent, nn.Sequential) and len(parent) and \
            isinstance(parent[-1], nn.Sequential):
        parent = parent[-1]
    if isinstance(parent, nn.Sequential) and len(parent) and \
            isinstance(parent[-1], (nn.Softmax, nn.Sigmoid, nn.LogSoftmax)):
        parent[-1] = nn.Identity()
    return model
