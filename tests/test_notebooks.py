"""The notebooks in notebooks/: committed without outputs, and each runs top to bottom.

They run with their tiny default settings (``ACA_NOTEBOOK_FULL`` unset), in a Jupyter kernel
of this very interpreter, with notebooks/ as the working directory (as Jupyter runs them).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

NOTEBOOKS_DIR = Path(__file__).resolve().parents[1] / "notebooks"
NOTEBOOKS = sorted(NOTEBOOKS_DIR.glob("*.ipynb"))
EXPECTED = {"01_quickstart.ipynb", "02_bring_your_own_data.ipynb", "03_zoo.ipynb"}


def test_the_notebooks_are_there():
    assert EXPECTED <= {p.name for p in NOTEBOOKS}


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_committed_notebooks_have_no_outputs(path):
    notebook = json.loads(path.read_text(encoding="utf-8"))
    assert notebook["nbformat"] == 4
    for i, cell in enumerate(notebook["cells"]):
        if cell["cell_type"] != "code":
            continue
        assert cell.get("outputs") == [], f"{path.name} cell {i} has outputs: clear them"
        assert cell.get("execution_count") is None, (
            f"{path.name} cell {i} has an execution count: clear outputs before committing")
    assert "widgets" not in notebook.get("metadata", {})
    nbformat = pytest.importorskip("nbformat")
    nbformat.validate(nbformat.reads(path.read_text(encoding="utf-8"), as_version=4))


@pytest.fixture
def kernel_env(tmp_path, monkeypatch):
    """A ``python3`` kernelspec that runs this interpreter, found before any other."""
    pytest.importorskip("nbclient")
    pytest.importorskip("ipykernel")
    spec_dir = tmp_path / "jupyter" / "kernels" / "python3"
    spec_dir.mkdir(parents=True)
    (spec_dir / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "Python 3 (tests)", "language": "python"}))
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
    monkeypatch.setenv("JUPYTER_RUNTIME_DIR", str(tmp_path / "runtime"))
    monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", "3")
    monkeypatch.delenv("ACA_NOTEBOOK_FULL", raising=False)
    monkeypatch.delenv("KERAS_BACKEND", raising=False)


# What each notebook must print: evidence that its steps did what they say.
MUST_PRINT = {
    "01_quickstart.ipynb": ["normal cell, C = 4", "test accuracy after 3 epoch(s):",
                            "max |onnx - keras| =", "predicted:"],
    "02_bring_your_own_data.ipynb": ["classes: ('digit_0',", "normal cell k_e:",
                                     "digits_png"],
    "03_zoo.ipynb": ["aca-darts-cifar10-sample", "test accuracy before:",
                     "['my-finetuned-aca']", "reloaded weights give the same logits: True"],
}


# the quickstart notebook runs in the default suite; the other two (about 30 s each, their
# calls covered by test_data/test_zoo) in the slow suite
@pytest.mark.parametrize("path", [
    pytest.param(p, marks=() if p.name == "01_quickstart.ipynb" else pytest.mark.slow)
    for p in NOTEBOOKS], ids=lambda p: p.name)
def test_notebook_runs_top_to_bottom(path, kernel_env):
    import nbformat
    from nbclient import NotebookClient

    notebook = nbformat.read(path, as_version=4)
    client = NotebookClient(notebook, timeout=600, kernel_name="python3",
                            resources={"metadata": {"path": str(NOTEBOOKS_DIR)}},
                            env=dict(os.environ))
    client.execute()  # raises CellExecutionError, naming the cell, on any error
    text = "\n".join(
        output.get("text", "") if output.get("output_type") == "stream"
        else "".join(output.get("data", {}).get("text/plain", ""))
        for cell in notebook.cells if cell.cell_type == "code" for output in cell.outputs)
    for expected in MUST_PRINT.get(path.name, []):
        assert expected in text, f"{path.name} did not print {expected!r}"
    images = [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.outputs
              if "image/png" in o.get("data", {})]
    if path.name == "01_quickstart.ipynb":
        assert len(images) == 2  # the normal and the reduction cell
