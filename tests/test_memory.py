"""Per-run peak memory: a run's figure does not carry an earlier run's peak, on CPU and GPU."""
import mmap
import sys
import time
import types

import pytest

from xrayprototype import memory
from xrayprototype.memory import PeakMemory

MIB = 2 ** 20


def _touch(megabytes):
    """A block whose pages are really resident and new to the process: an anonymous mapping
    with every page written, not the allocator's heap. (Late in a long test session malloc
    can serve 200 MB from pages freed earlier and still resident, so a numpy array need not
    raise the RSS at all; CI saw exactly that.) Freed, the mapping goes back to the kernel."""
    block = mmap.mmap(-1, megabytes * MIB)
    page = mmap.PAGESIZE
    for offset in range(0, megabytes * MIB, page):
        block[offset] = 1
    return block


def _two_runs(interval_s=0.02):
    """Run 1 holds 200 MB for a moment, run 2 only 20 MB: their peaks and run 2's start RSS."""
    with PeakMemory(interval_s=interval_s) as first:
        block = _touch(200)
        time.sleep(15 * interval_s)
        del block
    with PeakMemory(interval_s=interval_s) as second:
        start = memory.current_rss_bytes()
        block = _touch(20)
        time.sleep(15 * interval_s)
        del block
    return first.read(), second.read(), start


def _check_second_run_is_small(first, second, start):
    # (no lower bound on run 2: in a long-lived process malloc may serve its 20 MB from pages
    # that are resident already, so the resident set need not grow)
    assert first["peak_rss_bytes"] >= start + 190 * MIB
    assert second["peak_rss_bytes"] <= start + 80 * MIB            # not run 1's 200 MB
    assert second["peak_rss_bytes"] <= first["peak_rss_bytes"] - 120 * MIB


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="VmHWM is Linux's")
def test_second_run_does_not_carry_the_first_runs_peak():
    first, second, start = _two_runs()
    if second["cpu_memory_method"] != "vmhwm":
        pytest.skip("this kernel does not let a process reset its VmHWM")
    _check_second_run_is_small(first, second, start)


def test_sampling_when_the_high_water_mark_cannot_be_reset(monkeypatch, tmp_path):
    monkeypatch.setattr(memory, "CLEAR_REFS", str(tmp_path / "missing" / "clear_refs"))
    first, second, start = _two_runs()
    assert first["cpu_memory_method"] == second["cpu_memory_method"] == "sampled"
    _check_second_run_is_small(first, second, start)


def test_overlapping_meters_keep_their_own_peaks():
    if not sys.platform.startswith("linux"):
        pytest.skip("VmHWM is Linux's")
    outer = PeakMemory(interval_s=0.02)
    outer.start()
    block = _touch(100)
    time.sleep(0.3)                                    # seen by a sampler too
    held = memory.current_rss_bytes()
    del block
    with PeakMemory(interval_s=0.02):                  # resets the kernel's mark
        pass
    assert outer.read()["peak_rss_bytes"] >= held - 4 * MIB     # not the 100 MB less
    outer.stop()


def test_read_is_frozen_by_stop_and_refused_before_start():
    meter = PeakMemory(interval_s=0.05)
    with pytest.raises(RuntimeError, match="start"):
        meter.read()
    meter.start()
    meter.stop()
    meter.stop()                                       # idempotent
    frozen = meter.read()
    block = _touch(50)
    assert meter.read() == frozen
    del block
    assert isinstance(frozen["peak_rss_bytes"], int) and frozen["peak_rss_bytes"] > 0


# ---------------------------------------------------------------------------- GPU via NVML
def _fake_pynvml(monkeypatch, timeline, pid):
    """A ``pynvml`` with two GPUs whose process lists follow ``timeline``: one entry
    ``{device: [(pid, bytes), ...]}`` per call of nvmlDeviceGetComputeRunningProcesses on
    device 0, held for the calls after it."""
    module = types.ModuleType("pynvml")
    calls = {"n": 0, "init": 0, "shutdown": 0}

    def processes(handle):
        if handle == 0:
            calls["n"] += 1
        step = timeline[min(calls["n"], len(timeline)) - 1]
        return [types.SimpleNamespace(pid=p, usedGpuMemory=b) for p, b in step.get(handle, [])]

    module.nvmlInit = lambda: calls.__setitem__("init", calls["init"] + 1)
    module.nvmlShutdown = lambda: calls.__setitem__("shutdown", calls["shutdown"] + 1)
    module.nvmlDeviceGetCount = lambda: 2
    module.nvmlDeviceGetHandleByIndex = lambda index: index
    module.nvmlDeviceGetComputeRunningProcesses = processes
    monkeypatch.setitem(sys.modules, "pynvml", module)
    monkeypatch.setattr(memory.os, "getpid", lambda: pid)
    return calls


def test_gpu_peak_is_this_process_summed_over_devices(monkeypatch):
    me, other = 4242, 999
    timeline = [
        {0: [(me, 100 * MIB), (other, 9000 * MIB)]},
        {0: [(me, 300 * MIB)], 1: [(me, 200 * MIB), (other, 9000 * MIB)]},   # peak: 500 MiB
        {0: [(me, 350 * MIB)], 1: [(me, None)]},       # "not available": not a figure
        {0: [(me, 120 * MIB)], 1: [(other, 20000 * MIB)]},
    ]
    calls = _fake_pynvml(monkeypatch, timeline, me)
    meter = PeakMemory(interval_s=0.01)
    meter.start()
    deadline = time.monotonic() + 2.0
    while calls["n"] < len(timeline) and time.monotonic() < deadline:
        time.sleep(0.01)
    meter.stop()
    assert meter.read()["peak_gpu_bytes"] == 500 * MIB
    assert calls["init"] == calls["shutdown"] == 1


def test_gpu_is_none_when_this_process_is_not_on_a_gpu(monkeypatch):
    _fake_pynvml(monkeypatch, [{0: [(999, 9000 * MIB)]}], pid=4242)
    with PeakMemory(interval_s=0.01) as meter:
        time.sleep(0.05)
    assert meter.read()["peak_gpu_bytes"] is None


def test_gpu_is_none_without_nvml(monkeypatch):
    monkeypatch.setitem(sys.modules, "pynvml", None)              # import pynvml fails
    with PeakMemory() as meter:
        pass
    assert meter.read()["peak_gpu_bytes"] is None


def test_gpu_is_none_when_nvml_has_no_driver(monkeypatch):
    module = types.ModuleType("pynvml")

    def no_driver():
        raise RuntimeError("NVML Shared Library Not Found")
    module.nvmlInit = no_driver
    monkeypatch.setitem(sys.modules, "pynvml", module)
    with PeakMemory() as meter:
        pass
    assert meter.read()["peak_gpu_bytes"] is None


@pytest.mark.skipif(sys.version_info < (3, 10), reason="sys.stdlib_module_names is 3.10+")
def test_memory_module_imports_only_the_standard_library(run_python, tmp_path):
    code = ("import importlib.util, json, sys\n"
            "before = set(sys.modules)\n"
            f"spec = importlib.util.spec_from_file_location('memory', {memory.__file__!r})\n"
            "spec.loader.exec_module(importlib.util.module_from_spec(spec))\n"
            "print(json.dumps(sorted({m.split('.')[0] for m in set(sys.modules) - before}\n"
            "                        - set(sys.stdlib_module_names))))")
    result = run_python(code, cwd=tmp_path)
    assert __import__("json").loads(result.stdout.strip().splitlines()[-1]) == []
