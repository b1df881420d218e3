"""Every notebook under notebooks/ runs top to bottom, in this venv's interpreter, from an empty
working directory, writing only into a temporary workspace."""
import json
import os
import sys
from pathlib import Path

import pytest

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("*.ipynb"))
KERNEL = "xrayprototype-tests"


@pytest.fixture(scope="module")
def kernel_spec(tmp_path_factory):
    """A kernel spec named KERNEL that starts THIS interpreter (the venv's), found first via
    JUPYTER_PATH whatever kernels the machine has registered as "python3"."""
    root = tmp_path_factory.mktemp("jupyter")
    folder = root / "kernels" / KERNEL
    folder.mkdir(parents=True)
    (folder / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "xrayprototype tests", "language": "python"}))
    return root


@pytest.mark.slow
@pytest.mark.skipif(not NOTEBOOKS, reason="notebooks/ holds no .ipynb yet")
@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebook_runs(notebook, kernel_spec, tmp_path, monkeypatch):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")

    cwd, workspace = tmp_path / "cwd", tmp_path / "workspace"
    cwd.mkdir()
    monkeypatch.setenv("JUPYTER_PATH", os.pathsep.join(
        [str(kernel_spec)] + ([os.environ["JUPYTER_PATH"]] if os.environ.get("JUPYTER_PATH")
                              else [])))
    monkeypatch.setenv("XRAYPROTOTYPE_WORKSPACE", str(workspace))
    monkeypatch.setenv("MPLBACKEND", "Agg")

    nb = nbformat.read(str(notebook), as_version=4)
    probe = nbformat.v4.new_code_cell("import sys, os\nprint(sys.executable)\nprint(os.getcwd())")
    nb.cells.insert(0, probe)
    client = nbclient.NotebookClient(nb, kernel_name=KERNEL, timeout=600,
                                     resources={"metadata": {"path": str(cwd)}})
    client.execute()        # raises CellExecutionError naming the cell on any error

    printed = "".join(o.get("text", "") for o in nb.cells[0].outputs).split()
    assert Path(printed[0]).resolve() == Path(sys.executable).resolve()
    assert Path(printed[1]).resolve() == cwd.resolve()
    errors = [o for cell in nb.cells if cell.cell_type == "code" for o in cell.outputs
              if o.output_type == "error"]
    assert not errors
    assert workspace.is_dir() and any(workspace.iterdir()), "the notebook wrote no experiment"
    assert not any(cwd.iterdir()), f"written outside the workspace: {list(cwd.iterdir())}"
