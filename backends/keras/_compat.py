"""Environment of the Keras backend, set up once before TensorFlow is imported.

- TensorFlow's C++ start-up chatter (absl's "All log messages before absl::InitializeLog()",
  oneDNN and CPU-feature notices) is kept out of the user's output: ``TF_CPP_MIN_LOG_LEVEL``
  defaults to 2 (warnings and errors of TF's C++ runtime hidden; a user's own value wins),
  and the lines written to stderr while TensorFlow is imported are filtered by that level,
  anything else being passed on unchanged.
- TensorFlow's Python logger is set to ERROR unless the user configured it.
- Intra-op threads = the CPU cores this process may use; inter-op threads = 1 or 2. A user's
  ``TF_NUM_INTRAOP_THREADS`` / ``TF_NUM_INTEROP_THREADS`` win, and nothing is changed when
  TensorFlow's runtime was already started by the caller.
- Keras 3 must run on TensorFlow: ``KERAS_BACKEND=torch`` (or ``jax``) gives a clear error.
"""
import logging
import os
import re
import sys
import tempfile

from xrayprototype.backend import usable_cpu_count
from xrayprototype.errors import BackendUnavailableError

_NOISE = re.compile(r"^(WARNING: All log messages before absl::InitializeLog\(\)|"
                    r"[IWE]\d{4} [\d:.]+ +\d+ \S+:\d+\])")
_LEVELS = {"I": 0, "W": 1, "E": 2}


def _check_keras_backend_variable() -> None:
    wanted = os.environ.get("KERAS_BACKEND", "tensorflow").strip().lower()
    if wanted not in ("", "tensorflow"):
        raise BackendUnavailableError(
            f"xrayprototype's 'keras' backend runs Keras 3 on TensorFlow, but KERAS_BACKEND="
            f"{os.environ['KERAS_BACKEND']} is set. Unset it or set KERAS_BACKEND=tensorflow "
            "before starting Python; to train with PyTorch use backend='pytorch'.")


def _kept(captured: str, min_level: int) -> str:
    """Captured stderr without TF's start-up lines below the TF_CPP_MIN_LOG_LEVEL shown."""
    kept = []
    for line in captured.splitlines(keepends=True):
        match = _NOISE.match(line)
        if match and (line.startswith("WARNING: All log") or _LEVELS[line[0]] < min_level):
            continue
        kept.append(line)
    return "".join(kept)


def _quiet_import_tensorflow():
    """Import TensorFlow with its start-up lines on stderr filtered (see module docstring)."""
    if "tensorflow" in sys.modules:
        return sys.modules["tensorflow"]
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    try:
        min_level = int(os.environ["TF_CPP_MIN_LOG_LEVEL"])
    except ValueError:
        min_level = 2
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile(mode="w+b") as capture:
        os.dup2(capture.fileno(), 2)
        try:
            import tensorflow as tf
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            capture.seek(0)
            rest = _kept(capture.read().decode("utf-8", "replace"), min_level)
            if rest:
                sys.stderr.write(rest)
    return tf


def _set_threads(tf) -> None:
    cores = usable_cpu_count()
    try:
        if not os.environ.get("TF_NUM_INTRAOP_THREADS"):
            tf.config.threading.set_intra_op_parallelism_threads(cores)
        if not os.environ.get("TF_NUM_INTEROP_THREADS"):
            tf.config.threading.set_inter_op_parallelism_threads(min(2, max(1, cores // 2)))
    except RuntimeError:  # the caller already ran TensorFlow ops: keep its settings
        pass


def setup_tensorflow():
    """Check KERAS_BACKEND, import TensorFlow quietly, set threads; return (tf, keras)."""
    _check_keras_backend_variable()
    fresh = "tensorflow" not in sys.modules
    tf = _quiet_import_tensorflow()
    tf_logger = logging.getLogger("tensorflow")
    if tf_logger.level == logging.NOTSET:
        tf_logger.setLevel(logging.ERROR)
    if fresh:
        _set_threads(tf)
    import keras

    if keras.backend.backend() != "tensorflow":  # e.g. "backend" in ~/.keras/keras.json
        raise BackendUnavailableError(
            f"xrayprototype's 'keras' backend runs Keras 3 on TensorFlow, but Keras is "
            f"configured for '{keras.backend.backend()}' (KERAS_BACKEND or ~/.keras/keras.json). "
            "Set KERAS_BACKEND=tensorflow before starting Python, or use backend='pytorch'.")
    return tf, keras
