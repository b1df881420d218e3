"""Fault injection: a real SIGKILL of a training process at the file writes of a checkpoint.

Per installed backend, a tiny run (resnet18 at 32 px, 2 epochs) is first trained without
faults, recording every write point of its checkpoints (``durable.fault_point``: each staged
file, the state commit, each rename). Then, for a chosen set of those points, the same run is
started in a subprocess that SIGKILLs itself there (``XRAYPROTOTYPE_FAULT_KILL_AT``; with
``XRAYPROTOTYPE_FAULT_TEAR=1`` the file being written is cut in half first, what a kill in the
middle of the write leaves). After each kill:

* ``eval_infer=True`` finds a valid best model, or says clearly that there is none yet;
* ``resume_train=True`` + ``Train()`` reproduces the uninterrupted run's final weights exactly,
  or (no epoch committed yet) refuses clearly.

A file damaged after its commit is refused with a message naming it; any exception during
training leaves ``status: failed`` with the reason. See RELIABILITY.md.
"""
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from xrayprototype import durable, prototype
from xrayprototype.backend import get_backend_class, installed_backends
from xrayprototype.errors import ExperimentError

pytestmark = pytest.mark.slow

BACKENDS = installed_backends()
PROJECT, EXPERIMENT, EPOCHS = "Faults", "run", 2

TRAIN = """
import sys
from xrayprototype import prototype

gtf = prototype(verbose=0, workspace=sys.argv[1])
gtf.Prototype({project!r}, {experiment!r}, backend=sys.argv[2])
gtf.Default(dataset_path=sys.argv[3], model_name="resnet18", freeze_base_network=False,
            num_epochs={epochs}, use_pretrained=False)
gtf.update_input_size(32)
gtf.update_batch_size(8)
gtf.update_seed(0)
gtf.Train()
""".format(project=PROJECT, experiment=EXPERIMENT, epochs=EPOCHS)

#: each backend's weights file and optimizer state, as ``save`` names them
WEIGHTS = {"pytorch": ".safetensors", "gluon": "-0000.params", "keras": ".keras"}
OPTIMIZER = {"pytorch": ".optimizer.pt", "gluon": ".states", "keras": ".optimizer.npz"}

#: (case id, the write point: label pattern ({w}: weights, {o}: optimizer suffix) and which
#:  of its occurrences, tear the file, what must follow: "resume" (reproduces the run) or
#:  "none yet" (no epoch committed)); each epoch stages one resume.* and commits once
CASES = [
    ("resume-weights-torn", "staged resume{w}", 2, True, "resume"),
    ("optimizer-state-torn", "staged resume{o}", 2, True, "resume"),
    ("best-weights-torn", "staged best{w}", 1, True, "none yet"),
    ("best-before-rename", "rename-before best{w}", 1, False, "resume"),
    ("between-weights-and-state", "state-before", 2, False, "resume"),
    ("after-state-before-renames", "state-after", 2, False, "resume"),
    ("last-weights-before-rename", "rename-before last{w}", 1, False, "resume"),
]
#: cases run on every backend; the others on the first installed one only (time)
EVERY_BACKEND = ("resume-weights-torn", "optimizer-state-torn", "best-before-rename",
                 "between-weights-and-state")


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    from xrayprototype.data.synthetic import make_synthetic_chest_xrays

    return make_synthetic_chest_xrays(tmp_path_factory.mktemp("faults") / "data",
                                      num_train_per_class=10, num_test_per_class=1,
                                      image_size=32, seed=0) / "train"


def _weights(gtf):
    return [(name, np.array(value)) for name, value in gtf.experiment.backend.named_weights()]


@pytest.fixture(scope="module")
def reference(tmp_path_factory, tiny_data):
    """Per backend: the uninterrupted run's final weights and its write points."""
    runs = {}
    saved = {k: os.environ.get(k) for k in (durable.TRACE_ENV, durable.KILL_ENV)}
    for backend in BACKENDS:
        root = tmp_path_factory.mktemp(f"reference-{backend}")
        trace = root / "trace.txt"
        os.environ[durable.TRACE_ENV] = str(trace)
        os.environ.pop(durable.KILL_ENV, None)
        durable.reset_fault_points()
        try:
            gtf = _run_in_process(root / "ws", backend, tiny_data)
        finally:
            os.environ.pop(durable.TRACE_ENV, None)
        points = [line.split(" ", 1) for line in trace.read_text().splitlines()]
        runs[backend] = {"weights": _weights(gtf), "workspace": root / "ws",
                         "points": [(int(n), label) for n, label in points]}
    for key, value in saved.items():
        if value is not None:
            os.environ[key] = value
    return runs


def _run_in_process(workspace, backend, data):
    gtf = prototype(verbose=0, workspace=workspace)
    gtf.Prototype(PROJECT, EXPERIMENT, backend=backend)
    gtf.Default(dataset_path=str(data), model_name="resnet18", freeze_base_network=False,
                num_epochs=EPOCHS, use_pretrained=False)
    gtf.update_input_size(32)
    gtf.update_batch_size(8)
    gtf.update_seed(0)
    gtf.Train()
    return gtf


def _killed_run(workspace, backend, data, kill_at, tear):
    dropped = ("XRAYPROTOTYPE_WORKSPACE", durable.TRACE_ENV)
    env = {k: v for k, v in os.environ.items() if k not in dropped}
    env.update({durable.KILL_ENV: str(kill_at), durable.TEAR_ENV: "1" if tear else "0"})
    result = subprocess.run([sys.executable, "-c", textwrap.dedent(TRAIN), str(workspace),
                             backend, str(data)], env=env, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == -signal.SIGKILL, \
        f"the run was not killed at write {kill_at}:\n{result.stdout[-2000:]}\n" \
        f"{result.stderr[-3000:]}"


def _assert_same_weights(actual, expected):
    assert [name for name, _ in actual] == [name for name, _ in expected]
    for (name, a), (_, b) in zip(actual, expected):
        assert a.shape == b.shape and np.array_equal(a, b), f"{name} differs after resume"


RUNS = [(backend, case) for backend in BACKENDS for case in CASES
        if case[0] in EVERY_BACKEND or backend == BACKENDS[0]]


@pytest.fixture(scope="module")
def killed(tiny_data, tmp_path_factory):
    """The killed runs, two at a time in the background (each one process on one core)
    while the reference trains and the tests resume the finished ones:
    ``{(backend, case id): future of the workspace}``."""
    from concurrent.futures import ThreadPoolExecutor

    def kill(backend, case):
        workspace = tmp_path_factory.mktemp(f"killed-{backend}-{case[0]}") / "ws"
        label = case[1].format(w=WEIGHTS[backend], o=OPTIMIZER[backend])
        _killed_run(workspace, backend, tiny_data, f"{label}@{case[2]}", case[3])
        return workspace

    with ThreadPoolExecutor(max_workers=2) as pool:
        yield {(backend, case[0]): pool.submit(kill, backend, case) for backend, case in RUNS}


@pytest.mark.parametrize("backend,case", [pytest.param(*run, id=f"{run[0]}-{run[1][0]}")
                                          for run in RUNS])
def test_a_kill_at_a_checkpoint_write_resumes_exactly_or_refuses(
        backend, case, killed, reference):
    outcome, run = case[4], reference[backend]
    workspace = killed[(backend, case[0])].result()

    viewer = prototype(verbose=0, workspace=workspace)
    if outcome == "none yet":
        with pytest.raises(ExperimentError, match="no trained model yet"):
            viewer.Prototype(PROJECT, EXPERIMENT, eval_infer=True)
        with pytest.raises(ExperimentError, match="no completed epoch to resume from"):
            prototype(verbose=0, workspace=workspace).Prototype(PROJECT, EXPERIMENT,
                                                                resume_train=True)
        return
    viewer.Prototype(PROJECT, EXPERIMENT, eval_infer=True)
    viewer.experiment.ready_for_prediction()          # a valid (committed) best model loads;
    #                                                   a reader leaves .pending to the writer

    gtf = prototype(verbose=0, workspace=workspace)
    gtf.Prototype(PROJECT, EXPERIMENT, resume_train=True)
    gtf.Train()
    _assert_same_weights(_weights(gtf), run["weights"])
    folder = workspace / PROJECT / EXPERIMENT
    assert not (folder / "models" / ".pending").exists()
    records = [json.loads(line) for line in (folder / "logs" / "metrics.jsonl").read_text()
               .splitlines() if line.strip()]
    assert [r["epoch"] for r in records if r["split"] == "train"] == list(range(1, EPOCHS + 1))
    assert json.loads((folder / "experiment.json").read_text())["status"] == "trained"


@pytest.mark.parametrize("backend", BACKENDS)
def test_every_checkpoint_file_goes_through_stage_commit_rename(reference, backend):
    """Every file of every checkpoint is staged, then the state commits, then the renames;
    and the cases above name real write points of each backend."""
    labels = [label for _, label in reference[backend]["points"]]
    assert labels.count("state-before") == labels.count("state-after") == EPOCHS + 1
    staged = [label.split(" ", 1)[1] for label in labels if label.startswith("staged")]
    renamed = [label.split(" ", 1)[1] for label in labels if label.startswith("rename-after")]
    assert sorted(staged) == sorted(renamed)
    assert {name.split(".")[0].split("-")[0] for name in staged} == {"resume", "best", "last"}
    models = reference[backend]["workspace"] / PROJECT / EXPERIMENT / "models"
    assert sorted(set(staged)) == sorted(p.name for p in models.iterdir())
    for _, pattern, occurrence, _, _ in CASES:
        label = pattern.format(w=WEIGHTS[backend], o=OPTIMIZER[backend])
        assert labels.count(label) >= occurrence, (label, labels)


def _copy_of(reference, backend, root):
    target = Path(root) / "ws"
    shutil.copytree(reference[backend]["workspace"], target)
    return target, target / PROJECT / EXPERIMENT / "models"


def test_a_file_damaged_after_its_commit_is_refused_naming_it(reference, tmp_path):
    backend = BACKENDS[0]
    workspace, models = _copy_of(reference, backend, tmp_path)
    resume = sorted(models.glob("resume.*"))[0]
    resume.write_bytes(resume.read_bytes()[: resume.stat().st_size // 2])
    with pytest.raises(ExperimentError) as refused:
        prototype(verbose=0, workspace=workspace).Prototype(PROJECT, EXPERIMENT,
                                                            resume_train=True)
    assert resume.name in str(refused.value) and "archive" in str(refused.value)

    best = sorted(models.glob("best.*"))[0]
    best.unlink()
    with pytest.raises(ExperimentError) as refused:
        prototype(verbose=0, workspace=workspace).Prototype(PROJECT, EXPERIMENT,
                                                            eval_infer=True)
    assert best.name in str(refused.value) and "no file" in str(refused.value)


def test_any_exception_during_training_leaves_status_failed_with_the_reason(
        reference, tmp_path, monkeypatch):
    backend = BACKENDS[0]
    workspace, _ = _copy_of(reference, backend, tmp_path)
    gtf = prototype(verbose=0, workspace=workspace)
    gtf.Prototype(PROJECT, EXPERIMENT, resume_train=True)
    gtf.update_num_epochs(EPOCHS + 1)
    backend_class = get_backend_class(backend)

    def broken(self, images, labels):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(backend_class, "train_step", broken)
    with pytest.raises(OSError):
        gtf.Train()
    state = json.loads((workspace / PROJECT / EXPERIMENT / "experiment.json").read_text())
    assert state["status"] == "failed"
    reason = state["training"]["stopped_because"]
    assert "OSError" in reason and "No space left" in reason and "resume_train=True" in reason

    from xrayprototype import compare
    ctf = compare(verbose=0, workspace=workspace)
    ctf.Comparison("faults")
    ctf.Add_Experiment(PROJECT, EXPERIMENT)
    row = ctf.Generate_Statistics().iloc[0]
    assert row["status"] == "failed" and "OSError" in row["status_reason"]


def test_a_reader_that_read_the_state_before_a_commit_takes_the_newer_one(reference, tmp_path):
    """eval_infer opened while training: the state it read names the previous best, which the
    writer has just replaced; the check reads the newer commit instead of calling it damaged."""
    from xrayprototype.checkpoints import check_checkpoint
    from xrayprototype.workspace import ExperimentPaths

    workspace, _ = _copy_of(reference, BACKENDS[0], tmp_path)
    paths = ExperimentPaths(workspace, PROJECT, EXPERIMENT)
    current = json.loads(paths.state_file.read_text())
    older = json.loads(paths.state_file.read_text())
    for record in older["training"]["checkpoint"]["files"].values():
        record["sha256"] = "0" * 64                       # what the previous epoch held
    older["training"]["checkpoint"]["epoch"] -= 1
    check_checkpoint(paths, older, "eval_infer")
    assert older["training"]["checkpoint"] == current["training"]["checkpoint"]
