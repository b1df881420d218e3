"""Run many experiments (one after another, or as tasks on a Ray cluster) and the Monk-style
``Analyse_*`` hyper-parameter finders built on them.

An :class:`ExperimentSpec` is plain data (JSON-able), so a Ray task receives it, creates the
experiment (``Experiment.create``), applies its configuration and overrides as checked
changes (``Experiment.update``), trains it in its own process and writes into the shared
workspace; only a small result dict travels back. A failed experiment is reported with its
error and the others complete.
"""
import os
import re
import shutil
import time
import traceback
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import numpy as np

from .errors import ConfigError
from .workspace import scratch_dir

EXECUTORS = ("sequential", "ray")


@dataclass
class ExperimentSpec:
    """Everything needed to train one experiment from scratch in any process.

    ``config`` is an ``ExperimentConfig.to_dict()`` (or part of one); ``overrides`` are changes
    applied after it, ``{section: {field: value}}``, e.g. ``{"optim": {"learning_rate":
    0.01}}``. Both are checked as any setting is (``Experiment.update``).
    """
    project: str
    experiment: str
    backend: str
    config: Dict[str, Any]
    overrides: Dict[str, Dict[str, Any]] = field(default_factory=dict)
    workspace: str = ""
    threads: Optional[int] = None


def run_spec(spec: Dict[str, Any]) -> Dict[str, Any]:
    """Train one experiment described by ``asdict(ExperimentSpec)``; never raises."""
    spec = ExperimentSpec(**spec)
    started = time.perf_counter()
    result = {"project": spec.project, "experiment": spec.experiment, "error": None,
              "pid": os.getpid()}
    try:
        if spec.threads:
            _limit_threads(spec.threads)
        from .experiment import Experiment
        from .workspace import ExperimentPaths, resolve_root

        paths = ExperimentPaths(resolve_root(spec.workspace or None), spec.project,
                                spec.experiment)
        experiment = Experiment.create(paths, spec.backend, report=lambda text: None)
        experiment.show_progress = False
        experiment.update(spec.config)
        experiment.update(spec.overrides)
        experiment.load_data()
        result["summary"] = experiment.train()
    except Exception as err:  # reported in the table, the other experiments go on
        result["error"] = f"{type(err).__name__}: {err}"
        result["traceback"] = traceback.format_exc(limit=5)
    result["wall_s"] = time.perf_counter() - started
    return result


def _limit_threads(threads: int) -> None:
    """Give a worker process its share of the cores (torch reads this when it is imported)."""
    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[name] = str(threads)
    try:
        import torch
        torch.set_num_threads(threads)
    except ImportError:
        pass


def run_specs(specs: Sequence[ExperimentSpec], executor: str = "sequential",
              address: Optional[str] = None, num_cpus: Optional[int] = None,
              cpus_per_task: int = 1) -> List[Dict[str, Any]]:
    """Run experiments; the results come back in the order of ``specs``.

    Args:
        executor: "sequential" (this process, default) or "ray" (one task per experiment).
        address: a Ray cluster address ("ray://host:10001" or "auto"); None starts a local
            Ray with ``num_cpus`` CPUs. The workspace must be on a filesystem every node shares.
        cpus_per_task: CPUs (and framework threads) each experiment gets on Ray.
    """
    if executor not in EXECUTORS:
        raise ConfigError(f"executor must be one of {EXECUTORS}, got {executor!r}.")
    payloads = [asdict(spec) for spec in specs]
    if executor == "sequential":
        return [run_spec(p) for p in payloads]
    return _run_on_ray(payloads, address, num_cpus, cpus_per_task)


# The local Ray this process started, and with how many CPUs: kept running between calls, so a
# notebook pays Ray's start-up and each worker's framework import once (the workers stay warm).
_local_ray: Dict[str, Any] = {}


def _run_on_ray(payloads, address, num_cpus, cpus_per_task) -> List[Dict[str, Any]]:
    try:
        import ray
    except ImportError:
        raise ConfigError("executor='ray' needs Ray: pip install -c constraints.txt "
                          "'xrayprototype[ray]'") from None
    _connect_ray(ray, address, num_cpus)
    task = ray.remote(num_cpus=cpus_per_task)(run_spec)
    for payload in payloads:
        payload["threads"] = cpus_per_task
    return ray.get([task.remote(p) for p in payloads])


def _connect_ray(ray, address: Optional[str], num_cpus: Optional[int]) -> None:
    """Start (or reuse) a local Ray when ``address`` is None, else connect to that cluster.

    A Ray the caller initialised is used as it is. A local Ray started here stays up for the
    next call with the same ``num_cpus`` (it ends with the process, or with ``shutdown_ray()``)."""
    wanted = {"address": address} if address else {"num_cpus": num_cpus}
    if ray.is_initialized():
        if not _local_ray or _local_ray == wanted:
            return
        ray.shutdown()                      # ours, but started for another request
    ray.init(include_dashboard=False, log_to_driver=False, **wanted)
    _local_ray.clear()
    _local_ray.update(wanted)


def shutdown_ray() -> None:
    """Stop the Ray that ``executor="ray"`` started in this process (no-op otherwise)."""
    if _local_ray:
        import ray
        ray.shutdown()
        _local_ray.clear()


def stratified_subset(records, percent: float, seed: int, name: str, workspace: Path) -> Path:
    """Link (or copy) a seeded, stratified ``percent`` of ``records`` into a class-folder tree
    inside the workspace (in-memory records are written as PNG files); returns its root."""
    from PIL import Image

    if not 0 < percent <= 100:
        raise ConfigError(f"percent_data must be in (0, 100], got {percent}.")
    root = scratch_dir(workspace, f"{name}-subset")
    shutil.rmtree(root)
    rng = np.random.default_rng(seed)
    for label, class_name in enumerate(records.classes):
        members = np.flatnonzero(records.labels == label)
        count = max(2, int(round(len(members) * percent / 100.0)))
        folder = root / class_name
        folder.mkdir(parents=True)
        for index in sorted(rng.choice(members, size=min(count, len(members)), replace=False)):
            if records.pixels is not None:          # in-memory rows (npz) become PNG files
                file_name = re.sub(r"[^\w.-]+", "_", records.paths[index]) + ".png"
                Image.fromarray(records.pixels[index].squeeze()).save(folder / file_name)
                continue
            source = Path(records.paths[index])
            target = folder / source.name
            try:
                target.symlink_to(source)
            except OSError:
                shutil.copy2(source, target)
    return root
