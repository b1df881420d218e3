"""One writer per experiment (issue 13, failure 3), with real processes: a training holds the
experiment's write lock for its whole run; a second writer, in another process or in this one,
is refused at once with the holder named, and archives nothing; readers (eval_infer, compare)
work meanwhile; a lock left by a SIGKILLed process is recovered with a warning; a state read
before another process trained the experiment again is never saved over that run.

The first training is held at the start of its second epoch by a gate file (a patched
``Trainer._train_epoch``), so that everything else happens while it holds the lock.
"""
import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from xrayprototype import compare, prototype
from xrayprototype.writer_lock import (ExperimentChangedError, ExperimentLockedError,
                                       SHORT_WAIT_S, StaleLockWarning, WriterLock)

pytestmark = pytest.mark.slow

PROJECT, EXPERIMENT, EPOCHS = "Locks", "shared", 3

SETUP = """
from xrayprototype import prototype
gtf = prototype(verbose=1, workspace={workspace!r})
gtf.Prototype({project!r}, {experiment!r})
gtf.Default(dataset_path={train!r}, model_name="mobilenet_v3_small",
            freeze_base_network=False, num_epochs={epochs}, use_pretrained=False)
gtf.update_input_size(32)
gtf.update_batch_size(16)
"""

GATE = """
import os, time
from xrayprototype import training
original, calls = training.Trainer._train_epoch, []

def gated(self, epoch):
    calls.append(epoch)
    if len(calls) == 2:                 # the first epoch is complete and saved
        deadline = time.time() + 120
        while not os.path.exists({gate!r}) and time.time() < deadline:
            time.sleep(0.05)
    return original(self, epoch)

training.Trainer._train_epoch = gated
"""


def _setup(workspace, data, epochs=EPOCHS):
    return SETUP.format(workspace=str(workspace), project=PROJECT, experiment=EXPERIMENT,
                        train=str(data / "train"), epochs=epochs)


def _start(code, cwd):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    return subprocess.Popen([sys.executable, "-c", textwrap.dedent(code)], cwd=str(cwd), env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _wait_for(condition, what, process=None, timeout=90.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if condition():
            return
        if process is not None and process.poll() is not None:
            raise AssertionError(f"the process ended while waiting for {what}:\n"
                                 f"{process.stdout.read()[-4000:]}")
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def _state(folder):
    try:
        return json.loads((folder / "experiment.json").read_text())
    except (OSError, ValueError):
        return {}


def _epochs_done(folder):
    return ((_state(folder).get("training") or {}).get("progress") or {}).get("epoch_completed", 0)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    from xrayprototype.data.synthetic import make_synthetic_chest_xrays

    return make_synthetic_chest_xrays(tmp_path_factory.mktemp("locks") / "data",
                                      num_train_per_class=12, num_test_per_class=4,
                                      image_size=32, seed=0)


@pytest.fixture(scope="module")
def scenario(data, tmp_path_factory):
    """Run A (1 epoch, in this process); then process B trains the experiment again and is
    held after its first epoch while C (another process), a stale object of this process,
    compare and an eval_infer reader act; then B is let go and finishes."""
    root = tmp_path_factory.mktemp("scenario")
    workspace = root / "ws"
    folder = workspace / PROJECT / EXPERIMENT
    gate = root / "gate"
    first = small(workspace, data, epochs=1)
    first.Train()                                                       # run A
    run_a = _state(folder)["training"]["run_started"]
    stale = prototype(verbose=0, workspace=workspace)
    stale.Prototype(PROJECT, EXPERIMENT)                   # opened before B's run starts

    b = _start(GATE.format(gate=str(gate)) + _setup(workspace, data) + "gtf.Train()\n", root)
    seen = SimpleNamespace(b_pid=b.pid, folder=folder, run_a=run_a, data=data,
                           workspace=workspace)
    try:
        _wait_for(lambda: _state(folder).get("training", {}).get("run_started") != run_a
                  and _epochs_done(folder) >= 1, "B's first epoch", b)
        seen.holder = json.loads((folder / "writer.json").read_text())
        seen.archives_before = sorted(p.name for p in (folder / "archive").iterdir())
        _while_b_holds_the_lock(seen, stale, root)
        seen.archives_after = sorted(p.name for p in (folder / "archive").iterdir())
    finally:
        gate.touch()
        seen.b_output, _ = b.communicate(timeout=120)
    seen.b_returncode = b.returncode
    seen.stale = stale
    return seen


def _while_b_holds_the_lock(seen, stale, root):
    started = time.perf_counter()
    c = subprocess.run([sys.executable, "-c", textwrap.dedent(_setup(seen.workspace, seen.data)
                                                              + "gtf.Train()\n")],
                       cwd=str(root), capture_output=True, text=True, timeout=120,
                       env=dict(os.environ, OMP_NUM_THREADS="1"))
    seen.c_returncode, seen.c_output = c.returncode, c.stdout + c.stderr
    seen.c_seconds = time.perf_counter() - started
    cli = ("import sys; from xrayprototype.cli import main; sys.exit(main(['train', '--resume', "
           f"'--workspace', {str(seen.workspace)!r}, '--project', {PROJECT!r}, '--experiment', "
           f"{EXPERIMENT!r}, '--dataset', 'unused', '--quiet']))")
    d = subprocess.run([sys.executable, "-c", cli], cwd=str(root), capture_output=True,
                       text=True, timeout=120, env=dict(os.environ, OMP_NUM_THREADS="1"))
    seen.cli_returncode, seen.cli_output = d.returncode, d.stdout + d.stderr
    with pytest.raises(ExperimentLockedError) as refused:
        stale.Train()
    seen.stale_train_error = str(refused.value)
    with pytest.raises(ExperimentLockedError):
        stale.experiment.archive_previous_run()
    with pytest.raises(ExperimentLockedError, match="cannot Find_Learning_Rate"):
        stale.Find_Learning_Rate(num_iterations=2)            # refused before the sweep
    seen.b_epochs_while_held = _epochs_done(seen.folder)
    table = compare(verbose=0, workspace=seen.workspace)
    table.Comparison("while-training")
    table.Add_Experiment(PROJECT, EXPERIMENT)
    seen.compare_table = table.Generate_Statistics()
    reader = prototype(verbose=0, workspace=seen.workspace)
    reader.Prototype(PROJECT, EXPERIMENT, eval_infer=True)
    reader.Dataset_Params(dataset_path=str(seen.data / "test"))
    reader.Dataset()
    seen.reader_accuracy, _ = reader.Evaluate()
    seen.state_after_reader = _state(seen.folder)
    with pytest.raises(ExperimentLockedError) as threshold:
        reader.Select_Threshold()
    seen.threshold_error = str(threshold.value)


def small(workspace, data, epochs=1):
    gtf = prototype(verbose=0, workspace=workspace)
    gtf.Prototype(PROJECT, EXPERIMENT)
    gtf.Default(dataset_path=str(data / "train"), model_name="mobilenet_v3_small",
                freeze_base_network=False, num_epochs=epochs, use_pretrained=False)
    gtf.update_input_size(32)
    gtf.update_batch_size(16)
    return gtf


# ---------------------------------------------------------------------------- two writers
def test_the_second_process_is_refused_naming_the_holder(scenario):
    assert scenario.holder["pid"] == scenario.b_pid and scenario.holder["verb"] == "Train"
    assert scenario.c_returncode != 0
    assert "ExperimentLockedError" in scenario.c_output
    assert f"process {scenario.b_pid} on host {socket.gethostname()}" in scenario.c_output
    assert "(doing: Train, since" in scenario.c_output and "copy_from" in scenario.c_output


def test_the_command_line_resume_is_refused_too(scenario):
    assert scenario.cli_returncode == 2, scenario.cli_output[-3000:]
    assert f"error: cannot Train (resume): experiment {PROJECT}/{EXPERIMENT} is being written " \
        f"by process {scenario.b_pid}" in scenario.cli_output


def test_the_first_run_finishes_and_logs_each_epoch_once(scenario):
    assert scenario.b_returncode == 0, scenario.b_output[-4000:]
    state = _state(scenario.folder)
    assert state["status"] == "trained"
    assert state["summary"]["epochs_completed"] == EPOCHS
    records = [json.loads(line) for line in
               (scenario.folder / "logs" / "metrics.jsonl").read_text().splitlines()]
    keys = [(r["epoch"], r["split"]) for r in records]
    assert sorted(keys) == sorted({(e, s) for e in range(1, EPOCHS + 1) for s in ("train", "val")})
    assert not (scenario.folder / "writer.json").exists()          # released at the end


def test_a_second_train_never_archives_the_live_run(scenario):
    assert "process" in scenario.stale_train_error and str(scenario.b_pid) in \
        scenario.stale_train_error
    assert len(scenario.archives_before) == 1                      # run A, archived by B
    assert scenario.archives_after == scenario.archives_before
    assert (scenario.folder / "models").is_dir()


def test_readers_work_while_a_training_holds_the_lock(scenario):
    assert scenario.b_epochs_while_held == 1                       # B was held throughout
    assert len(scenario.compare_table) == 1
    assert 0.0 <= scenario.reader_accuracy <= 100.0            # percent, as in Monk
    state = scenario.state_after_reader                            # Evaluate saved nothing
    assert state["status"] == "training" and not state.get("evaluation")
    assert f"process {scenario.b_pid}" in scenario.threshold_error   # a writer is refused


def test_a_state_read_before_another_run_is_not_saved_over_it(scenario):
    with pytest.raises(ExperimentChangedError, match="trained again by another process"):
        scenario.stale.update_num_epochs(5)
    assert _state(scenario.folder)["config"]["train"]["num_epochs"] == EPOCHS


# ---------------------------------------------------------------------------- stale locks
HOLD = """
import sys, time
from pathlib import Path
from xrayprototype.writer_lock import WriterLock
lock = WriterLock(Path({folder!r}))           # kept: a collected lock object unlocks
lock.acquire("Train")
print("locked", flush=True)
time.sleep(300)
"""


def test_a_lock_left_by_a_killed_process_is_recovered(data, tmp_path):
    gtf = small(tmp_path / "ws", data)
    folder = gtf.experiment.paths.dir
    holder = _start(HOLD.format(folder=str(folder)), tmp_path)
    _wait_for(lambda: (folder / "writer.json").exists(), "the holder", holder, timeout=60)
    with pytest.raises(ExperimentLockedError, match=f"process {holder.pid} "):
        gtf.update_num_epochs(2)
    holder.send_signal(signal.SIGKILL)
    holder.wait(timeout=30)
    with pytest.warns(StaleLockWarning, match=f"process {holder.pid} .*ended without releasing"):
        gtf.update_num_epochs(2)
    assert _state(folder)["config"]["train"]["num_epochs"] == 2
    assert not (folder / "writer.json").exists()


def test_two_objects_of_one_process_are_two_writers(data, tmp_path):
    gtf = small(tmp_path / "ws", data)
    lock = WriterLock(gtf.experiment.paths.dir)
    with lock.hold("Calibrate"):
        with pytest.raises(ExperimentLockedError, match="this same process"):
            gtf.update_num_epochs(2)
        with lock.hold("nested"):                       # re-entrant for its holder
            assert lock.held
    gtf.update_num_epochs(2)
    assert not Path(gtf.experiment.paths.dir / "writer.json").exists()


SHORT_HOLD = """
import time
from pathlib import Path
from xrayprototype.writer_lock import WriterLock
lock = WriterLock(Path({folder!r}))
lock.acquire("save its state", short=True)
time.sleep(1.0)
lock.release()
time.sleep(60)
"""


def test_a_short_write_of_another_process_is_waited_for(data, tmp_path):
    gtf = small(tmp_path / "ws", data)
    folder = gtf.experiment.paths.dir
    holder = _start(SHORT_HOLD.format(folder=str(folder)), tmp_path)
    try:
        _wait_for(lambda: (folder / "writer.json").exists(), "the holder", holder, timeout=60)
        started = time.perf_counter()
        gtf.update_num_epochs(2)              # waits for the other's save instead of failing
        assert time.perf_counter() - started < SHORT_WAIT_S
        assert _state(folder)["config"]["train"]["num_epochs"] == 2
    finally:
        holder.kill()
        holder.wait(timeout=30)
