"""Peak memory of one measured stretch of this process (one training run), on every backend.

Two figures, the same quantity whatever the framework:

``peak_rss_bytes``
    The highest resident set size (RAM pages of this process, as ``top``'s RES shows) reached
    between :meth:`PeakMemory.start` and :meth:`PeakMemory.read` (or :meth:`PeakMemory.stop`).
    It is the whole process's RSS, baseline included (Python, the framework, the data), not an
    increase over the start; but it no longer carries the peak of an earlier experiment trained
    in the same process. Child processes (data-loader workers) are not counted.
    ``cpu_memory_method`` says how it was taken:

    - ``"vmhwm"``: Linux's high-water mark ``VmHWM`` of ``/proc/self/status``, reset at
      ``start()`` by writing ``5`` to ``/proc/self/clear_refs``; exact.
    - ``"sampled"``: where that reset is not allowed (not Linux, a restricted kernel), the
      largest of the current RSS read every ``interval_s`` seconds (``/proc/self/statm``, else
      ``psutil``); a spike shorter than the interval may be missed.
    - ``"ru_maxrss"``: the last resort where the current RSS cannot be read either:
      ``getrusage``'s peak, over the process's whole life (what the figure used to be).

``peak_gpu_bytes``
    The highest GPU memory the NVIDIA driver reports as used by this process (NVML's
    per-process ``usedGpuMemory``, the figure ``nvidia-smi`` lists per process), summed over
    all GPUs, sampled every ``interval_s`` seconds between ``start()`` and ``read()``. It
    includes the framework's caching allocator and the CUDA context, so it is comparable
    between PyTorch, MXNet and TensorFlow. ``None`` when ``pynvml`` (package ``nvidia-ml-py``)
    is not installed, the driver sees no GPU, or never listed this process (a CPU-only run, or
    a container whose process ids the driver does not share); never an error.

The sampler is one daemon thread that sleeps between samples; it runs only when something
needs sampling (GPU memory, or the ``"sampled"`` method). This module imports only the
standard library; ``psutil`` and ``pynvml`` are imported when a measurement starts.

Example:
    >>> from xrayprototype.memory import PeakMemory
    >>> with PeakMemory() as meter:
    ...     block = bytearray(50 * 2 ** 20)
    >>> meter.read()["peak_rss_bytes"] > 50 * 2 ** 20
    True
"""
import os
import sys
import threading
import weakref
from typing import Dict, Optional, Union

CLEAR_REFS = "/proc/self/clear_refs"
STATUS = "/proc/self/status"
STATM = "/proc/self/statm"

# the meters on "vmhwm": a reset by one must not lose another's peak
_ACTIVE = weakref.WeakSet()
_ACTIVE_LOCK = threading.Lock()


def _status_bytes(field: str) -> Optional[int]:
    """A ``kB`` field of ``/proc/self/status`` (``VmHWM``, ``VmRSS``) in bytes."""
    try:
        with open(STATUS, encoding="ascii") as handle:
            for line in handle:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def _reset_high_water_mark() -> bool:
    """Reset ``VmHWM`` to the current RSS; whether the kernel did it."""
    try:
        with open(CLEAR_REFS, "w", encoding="ascii") as handle:
            handle.write("5")
    except OSError:
        return False
    hwm, rss = _status_bytes("VmHWM"), _status_bytes("VmRSS")
    # a kernel that accepts the write but ignores it leaves VmHWM above VmRSS
    return hwm is not None and rss is not None and hwm <= rss + 4 * 2 ** 20


def current_rss_bytes() -> Optional[int]:
    """This process's resident set size now: ``/proc/self/statm``, else psutil, else None."""
    try:
        with open(STATM, encoding="ascii") as handle:
            return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError, AttributeError):
        pass
    try:
        import psutil
        return int(psutil.Process().memory_info().rss)
    except Exception:                   # not installed, or no access on this platform
        return None


def lifetime_peak_rss_bytes() -> Optional[int]:
    """``getrusage``'s peak RSS (Linux reports KiB, macOS bytes); None where there is no
    ``resource`` module (Windows). Over the process's whole life, except that on Linux a
    ``clear_refs`` reset lowers it too (it reads the same high-water mark as ``VmHWM``)."""
    try:
        import resource
    except ImportError:
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)


class _Nvml:
    """NVML through ``pynvml``: this process's used GPU memory, summed over devices."""

    def __init__(self, pynvml, handles):
        self.pynvml, self.handles, self.pid = pynvml, handles, os.getpid()

    @classmethod
    def open(cls) -> Optional["_Nvml"]:
        try:
            import pynvml
        except ImportError:
            return None
        try:
            pynvml.nvmlInit()
        except Exception:               # pynvml.NVMLError: no driver, no library
            return None
        try:
            count = pynvml.nvmlDeviceGetCount()
            handles = [pynvml.nvmlDeviceGetHandleByIndex(i) for i in range(count)]
        except Exception:
            handles = []
        if not handles:
            cls._shutdown(pynvml)
            return None
        return cls(pynvml, handles)

    def used_bytes(self) -> Optional[int]:
        """Bytes used by this process on all devices; None when no device lists it."""
        total, seen = 0, False
        for handle in self.handles:
            try:
                processes = self.pynvml.nvmlDeviceGetComputeRunningProcesses(handle)
            except Exception:           # a device that does not report processes (MIG parent)
                continue
            for process in processes:
                used = getattr(process, "usedGpuMemory", None)
                if process.pid == self.pid and used is not None:
                    total, seen = total + int(used), True
        return total if seen else None

    def close(self) -> None:
        self._shutdown(self.pynvml)

    @staticmethod
    def _shutdown(pynvml) -> None:
        try:
            pynvml.nvmlShutdown()
        except Exception:
            pass


class PeakMemory:
    """Peak memory of one training run of this process: CPU resident set (``peak_rss_bytes``)
    and GPU memory used by this process (``peak_gpu_bytes``), since :meth:`start`.

    The module docstring says exactly what each figure is. One meter per run: ``start()``
    begins a new measurement (a second ``start()`` begins another), ``read()`` gives the
    peaks so far, ``stop()`` ends the sampling and freezes the figures. Meters may overlap:
    a reset of the kernel's high-water mark by one is folded into the others first.

    Args:
        interval_s: seconds between two samples of the sampler thread.

    Example:
        >>> meter = PeakMemory(interval_s=0.1)
        >>> meter.start()
        >>> # ... one training run ...
        >>> figures = meter.read()          # {"peak_rss_bytes": ..., "peak_gpu_bytes": ..., ...}
        >>> meter.stop()
        >>> sorted(figures)
        ['cpu_memory_method', 'peak_gpu_bytes', 'peak_rss_bytes']
    """

    def __init__(self, interval_s: float = 0.1):
        if not interval_s > 0:
            raise ValueError(f"interval_s must be a positive number of seconds, got "
                             f"{interval_s!r}; the default is 0.1.")
        self.interval_s = float(interval_s)
        self.cpu_method: Optional[str] = None
        self._lock = threading.Lock()
        self._stop_event = threading.Event()
        self._thread: Optional[threading.Thread] = None
        self._nvml: Optional[_Nvml] = None
        self._floor_rss = 0                  # "vmhwm": peaks before another meter's reset
        self._peak_rss: Optional[int] = None
        self._peak_gpu: Optional[int] = None
        self._frozen: Optional[Dict] = None

    def start(self) -> None:
        """Begin a new measurement: reset the high-water mark, start the sampler if needed."""
        self.stop()
        self._frozen, self._floor_rss, self._peak_rss, self._peak_gpu = None, 0, None, None
        with _ACTIVE_LOCK:
            for other in list(_ACTIVE):      # keep their peaks before the mark is reset
                other._fold_high_water_mark()
            if _reset_high_water_mark():
                self.cpu_method = "vmhwm"
                _ACTIVE.add(self)
            elif current_rss_bytes() is not None:
                self.cpu_method = "sampled"
            else:
                self.cpu_method = "ru_maxrss"
        self._nvml = _Nvml.open()
        self._sample()
        if self.cpu_method == "sampled" or self._nvml is not None:
            self._stop_event = threading.Event()
            self._thread = threading.Thread(target=self._run, name="xrayprototype-peak-memory",
                                            daemon=True)
            self._thread.start()

    def read(self) -> Dict[str, Union[int, str, None]]:
        """The peaks since :meth:`start` (frozen at :meth:`stop`).

        Returns:
            ``{"peak_rss_bytes": int or None, "peak_gpu_bytes": int or None,
            "cpu_memory_method": "vmhwm" | "sampled" | "ru_maxrss"}``.
        """
        if self._frozen is not None:
            return dict(self._frozen)
        if self.cpu_method is None:
            raise RuntimeError("PeakMemory.read() before start(): call start() when the run "
                               "begins (or use the meter as a context manager).")
        self._sample()
        with self._lock:
            if self.cpu_method == "vmhwm":
                hwm = _status_bytes("VmHWM")
                rss = max(self._floor_rss, hwm or 0) or None
            elif self.cpu_method == "sampled":
                rss = self._peak_rss
            else:
                rss = lifetime_peak_rss_bytes()
            return {"peak_rss_bytes": rss, "peak_gpu_bytes": self._peak_gpu,
                    "cpu_memory_method": self.cpu_method}

    def stop(self) -> None:
        """Stop the sampler and freeze the figures; harmless when not started or stopped."""
        if self._thread is not None:
            self._stop_event.set()
            self._thread.join()
            self._thread = None
        if self.cpu_method is not None and self._frozen is None:
            self._frozen = self.read()
        with _ACTIVE_LOCK:
            _ACTIVE.discard(self)
        if self._nvml is not None:
            self._nvml.close()
            self._nvml = None

    def __enter__(self) -> "PeakMemory":
        self.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self.stop()

    def _run(self) -> None:
        while not self._stop_event.wait(self.interval_s):
            self._sample()

    def _sample(self) -> None:
        rss = current_rss_bytes() if self.cpu_method == "sampled" else None
        gpu = self._nvml.used_bytes() if self._nvml is not None else None
        with self._lock:
            if rss is not None:
                self._peak_rss = max(self._peak_rss or 0, rss)
            if gpu is not None:
                self._peak_gpu = max(self._peak_gpu or 0, gpu)

    def _fold_high_water_mark(self) -> None:
        hwm = _status_bytes("VmHWM")
        if hwm is not None:
            with self._lock:
                self._floor_rss = max(self._floor_rss, hwm)
