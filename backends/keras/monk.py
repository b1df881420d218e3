"""Reading the whole Keras model a Monk v1 run saved (``model.save("final.h5")``, HDF5) with
``safe_mode``: a Lambda layer (Python code in the file) is refused, never run."""
from pathlib import Path

from xrayprototype.errors import ConfigError
from xrayprototype.monk_workspace import model_file_error

from ._compat import setup_tensorflow

#: the file Monk's eval_infer loads (tf_keras_1/models/return_model.py: load_model(final=True))
FINAL = "final.h5"


def _refuse_lambda(path: Path, model) -> None:
    """Refuse a model holding a Lambda layer, whatever the loader allowed."""
    lambdas = [layer.name for layer in _all_layers(model)
               if type(layer).__name__ == "Lambda"]
    if lambdas:
        raise ConfigError(f"{path} holds Lambda layers {lambdas}: Python code stored in the "
                          "file, which this library never runs. Rebuild the model without "
                          "Lambda layers.")


def _all_layers(model):
    for layer in model.layers:
        yield layer
        if hasattr(layer, "layers"):
            yield from _all_layers(layer)


#: final activations left out: the backend applies its own (softmax, or sigmoid multi-label)
OUTPUT_ACTIVATIONS = ("softmax", "sigmoid")


def logits_model(model):
    """``model`` giving class scores: a final Softmax layer (Monk's ``krl.Softmax()``) or
    softmax / sigmoid Activation layer is left out, a final layer's softmax / sigmoid
    activation replaced by the identity."""
    _, keras = setup_tensorflow()
    last = model.layers[-1]
    activation = last.get_config().get("activation")
    if type(last).__name__ == "Softmax" or (type(last).__name__ == "Activation"
                                            and activation in OUTPUT_ACTIVATIONS):
        return keras.Model(model.inputs, last.input, name=model.name)
    if activation in OUTPUT_ACTIVATIONS:
        last.activation = keras.activations.linear
    return model


def _h5_problem(path: Path, version: str) -> str:
    """Why an .h5 model did not load: a damaged file, or an intact one Keras cannot rebuild."""
    import h5py

    try:
        with h5py.File(path, "r") as handle:
            saved_by = handle.attrs.get("keras_version", "an unknown version")
    except OSError:
        return "is truncated or corrupt (not a readable HDF5 file)"
    saved_by = saved_by.decode() if isinstance(saved_by, bytes) else saved_by
    return (f"is an intact HDF5 model saved by Keras {saved_by} that Keras {version} cannot "
            "rebuild")


def load_saved_model(model_dir: Path):
    """The model of Monk's ``final.h5`` (class scores out); a missing or damaged file raises
    ModelFileError naming it, a Lambda layer ConfigError."""
    _, keras = setup_tensorflow()
    path = Path(model_dir) / FINAL
    if not path.is_file():
        raise model_file_error(path, "does not exist")
    try:
        model = keras.saving.load_model(path, safe_mode=True, compile=False)
    except Exception as err:  # noqa: BLE001  (h5py OSError, ValueError, ...)
        if "lambda" in str(err).lower() or "safe_mode" in str(err):
            raise ConfigError(f"{path} holds a Lambda layer (Python code in the file), which "
                              f"this library never runs ({err}).") from err
        raise model_file_error(path, _h5_problem(path, keras.__version__), err) from err
    _refuse_lambda(path, model)
    return logits_model(model)
