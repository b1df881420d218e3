"""``import xrayprototype`` must stay light: no deep-learning framework (a user who installed
one backend never touches the others) and no heavy scientific stack at import time."""
import json

import pytest

FRAMEWORKS = ("torch", "torchvision", "timm", "tensorflow", "keras", "mxnet", "gluoncv", "jax")
HEAVY = ("matplotlib", "pandas", "sklearn", "scipy")

PROBE = """
import json, sys
{statements}
print(json.dumps(sorted(m.split(".")[0] for m in sys.modules)))
"""


def _imported(run_python, tmp_path, statements):
    result = run_python(PROBE.format(statements=statements), cwd=tmp_path)
    return set(json.loads(result.stdout.strip().splitlines()[-1]))


@pytest.mark.parametrize("statements", [
    "import xrayprototype\nfrom xrayprototype import prototype",
    "from xrayprototype import prototype, compare\n"
    "gtf = prototype(verbose=0, workspace='ws')        # a facade with no experiment yet",
    "import xrayprototype.cli\nxrayprototype.cli.build_parser()",
], ids=["import", "facade-object", "cli-parser"])
def test_import_pulls_in_no_framework_and_no_heavy_library(run_python, tmp_path, statements):
    modules = _imported(run_python, tmp_path, statements)
    assert "xrayprototype" in modules
    assert not modules & set(FRAMEWORKS), f"frameworks imported: {modules & set(FRAMEWORKS)}"
    assert not modules & set(HEAVY), f"heavy libraries imported: {modules & set(HEAVY)}"


def test_the_probe_detects_a_framework_import(run_python, tmp_path):
    """The check above can fail: importing the pytorch backend does load torch."""
    modules = _imported(run_python, tmp_path,
                        "from xrayprototype.backend import get_backend_class\n"
                        "get_backend_class('pytorch')")
    assert "torch" in modules
