"""Shared fixtures: generated data, one trained experiment reused by several tests, real data
(skipped when absent) and a helper that runs Python in a fresh process.

Everything is written under pytest's temporary folders; nothing lands in the repository.
"""
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

# Tiny models gain nothing from several intra-op threads, and on a small shared machine
# OpenMP threads that wait for each other make a training step 10-40x slower. Set before any
# framework is imported; subprocesses and notebook kernels inherit it. An explicit setting wins.
for _variable in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ.setdefault(_variable, "1")

REPO = Path(__file__).resolve().parents[1]
SHARED_ENV = "XRAYPROTOTYPE_SHARED"

#: the experiment trained once per session by ``trained_experiment``
TRAINED_PROJECT, TRAINED_EXPERIMENT = "Pneumonia", "resnet18"
TRAINED_EPOCHS = 6


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: trains a model or starts a kernel (seconds)")


# ---------------------------------------------------------------------------- subprocesses
def _run_python(code, cwd, env=None, timeout=600, check=True):
    """Run ``code`` with this interpreter (the venv's) in a new process whose working
    directory is ``cwd``; with ``check`` a non-zero exit fails the test showing the output."""
    cwd = Path(cwd)
    cwd.mkdir(parents=True, exist_ok=True)
    full_env = {k: v for k, v in os.environ.items() if k != "XRAYPROTOTYPE_WORKSPACE"}
    full_env.update(env or {})
    result = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=str(cwd),
                            env=full_env, capture_output=True, text=True, timeout=timeout)
    if check and result.returncode != 0:
        raise AssertionError(f"subprocess failed with exit code {result.returncode}\n"
                             f"--- stdout ---\n{result.stdout[-4000:]}\n"
                             f"--- stderr ---\n{result.stderr[-4000:]}")
    return result


@pytest.fixture(scope="session")
def run_python():
    """``run_python(code, cwd, env=None, timeout=600, check=True) -> CompletedProcess``."""
    return _run_python


# ---------------------------------------------------------------------------- data
@pytest.fixture(scope="session")
def synthetic_data(tmp_path_factory):
    """40 train + 15 test images per class (NORMAL, PNEUMONIA) at 64 px; pneumonia file names
    carry patient ids (``synthetic-personN_bacteria_K.jpeg``). Treat it as read-only."""
    from xrayprototype.data.synthetic import make_synthetic_chest_xrays

    return make_synthetic_chest_xrays(tmp_path_factory.mktemp("synthetic") / "data",
                                      num_train_per_class=40, num_test_per_class=15,
                                      image_size=64, seed=0)


@pytest.fixture(scope="session")
def shared_dir():
    """The real-data folder: ``$XRAYPROTOTYPE_SHARED`` (relative paths are taken from the
    repository root), default ``../shared``."""
    folder = Path(os.environ.get(SHARED_ENV) or "../shared").expanduser()
    if not folder.is_absolute():
        folder = REPO / folder                       # relative to the repository root
    if not (folder / "data").is_dir():
        pytest.skip(f"../shared not present: no real data at {folder}/data (set "
                    f"{SHARED_ENV} to the folder holding data/kermany-224 to run this test)")
    return folder.resolve()


# ---------------------------------------------------------------------------- trained model
TRAIN_CODE = """
import json
from xrayprototype import prototype

gtf = prototype(verbose=1, workspace="ws")                 # relative: resolved against cwd
gtf.Prototype({project!r}, {experiment!r}, backend="pytorch")
gtf.Default(dataset_path="data/train", model_name="resnet18", freeze_base_network=False,
            num_epochs={epochs}, use_pretrained=False)
gtf.update_input_size(64)
gtf.update_batch_size(16)
gtf.optimizer_adam(1e-3)
gtf.update_seed(0)
summary = gtf.Train()
with open("train_summary.json", "w") as handle:
    json.dump(summary, handle)
"""


@pytest.fixture(scope="session")
def trained_experiment(tmp_path_factory):
    """Pneumonia/resnet18 trained ONCE, in its own process, from a working directory that
    holds ``data/`` and ``ws/`` (both given as relative paths there).

    resnet18 from scratch, input 64, batch 16, adam 1e-3, seed 0, unfrozen, no pretrained
    weights, on 80 train images per class: a 2-epoch run of 40 images per class stays at
    chance level (BatchNorm statistics of a from-scratch net need more steps), which is why
    this uses more data and ``TRAINED_EPOCHS`` epochs; measured over seeds 0-5 the test
    accuracy was 80-100 %.

    Returns a dict: workspace (absolute), data (root with train/ and test/), project,
    experiment, dir (the experiment folder), summary (Train()'s return value), cwd.
    Tests must not change it (copy what they modify).
    """
    from xrayprototype.data.synthetic import make_synthetic_chest_xrays

    root = tmp_path_factory.mktemp("trained")
    data = make_synthetic_chest_xrays(root / "data", num_train_per_class=80,
                                      num_test_per_class=15, image_size=64, seed=0)
    _run_python(TRAIN_CODE.format(project=TRAINED_PROJECT, experiment=TRAINED_EXPERIMENT,
                                  epochs=TRAINED_EPOCHS), cwd=root)
    workspace = root / "ws"
    return {"workspace": workspace.resolve(), "data": data.resolve(), "project": TRAINED_PROJECT,
            "experiment": TRAINED_EXPERIMENT,
            "dir": (workspace / TRAINED_PROJECT / TRAINED_EXPERIMENT).resolve(),
            "summary": json.loads((root / "train_summary.json").read_text()), "cwd": root}

