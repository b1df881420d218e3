"""Make ``mxnet==1.9.1`` and ``gluoncv==0.10.5.post0`` importable beside numpy 1.26 and torch 2.

Three steps, applied once, before the first ``import mxnet`` of the process:

1. numpy 1.24 removed the alias ``np.bool``, which mxnet 1.9.1 still reads; it is set back to
   the builtin ``bool`` (only when numpy lacks it).
2. OpenMP threads: mxnet's default uses half the processors (it assumes hyper-threading), which
   halves the training speed on small machines. ``OMP_NUM_THREADS`` is set to the number of
   processors this process may use, unless the user set it.
3. gluoncv 0.10.5.post0 checks the *torch* version on import and raises RuntimeError when
   torch>=2 is installed beside it (its optional PyTorch part wants torch<2). Its check module is
   loaded first with that check replaced by one that reports "no torch for gluoncv"
   (ImportError), so gluoncv imports its MXNet part only and never imports torch.

Example:
    >>> from xrayprototype.backends.gluon._compat import import_mxnet, import_gluoncv
    >>> mx = import_mxnet(); gluoncv = import_gluoncv()
"""
import importlib.util
import os
import sys
import types
from pathlib import Path

from xrayprototype.backend import usable_cpu_count

_APPLIED = False


def _no_torch_for_gluoncv(*_args, **_kwargs):
    raise ImportError("xrayprototype's gluon backend uses gluoncv's MXNet models only; "
                      "gluoncv's PyTorch part (torch<2) is not imported.")


def _patch_gluoncv_check() -> None:
    """Load ``gluoncv.check`` without running ``gluoncv/__init__`` and neutralise the torch
    version check that ``gluoncv/__init__`` runs next."""
    check = sys.modules.get("gluoncv.check")
    if check is None:
        spec = importlib.util.find_spec("gluoncv")       # locates the package, runs nothing
        if spec is None or not spec.submodule_search_locations:
            return                                        # gluoncv not installed
        path = Path(list(spec.submodule_search_locations)[0]) / "check.py"
        check_spec = importlib.util.spec_from_file_location("gluoncv.check", path)
        check = importlib.util.module_from_spec(check_spec)
        check_spec.loader.exec_module(check)
        sys.modules["gluoncv.check"] = check
    check._require_pytorch_version = _no_torch_for_gluoncv


def apply() -> None:
    """Apply the three steps above (idempotent)."""
    global _APPLIED
    if _APPLIED:
        return
    import numpy as np

    if "bool" not in np.__dict__:
        np.bool = bool
    os.environ.setdefault("OMP_NUM_THREADS", str(usable_cpu_count()))
    _patch_gluoncv_check()
    _APPLIED = True


def import_mxnet() -> types.ModuleType:
    """Return the mxnet module, with the compat steps applied first."""
    apply()
    import mxnet
    return mxnet


def import_gluoncv() -> types.ModuleType:
    """Return the gluoncv module (its MXNet part), with the compat steps applied first.

    Importing gluoncv sets Pillow's process-wide ``ImageFile.LOAD_TRUNCATED_IMAGES = True``
    (in ``gluoncv.data.mhp``), which would make truncated X-rays decode silently as grey
    instead of being reported as corrupt; the previous value is put back.
    """
    apply()
    from PIL import ImageFile

    truncated_policy = ImageFile.LOAD_TRUNCATED_IMAGES
    import gluoncv
    ImageFile.LOAD_TRUNCATED_IMAGES = truncated_policy
    return gluoncv
