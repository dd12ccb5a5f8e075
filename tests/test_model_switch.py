"""The one-line model switch: every notebook runs with ImageNet models too (issue 17).

Each notebook's parameters cell says ``MODEL_NAME = "course"``; a student changes that one line to
``"resnet18"`` or ``"vgg16"``. Here that edit is made on a copy of every notebook and the copy is run
headless, as ``jupyter nbconvert --execute`` would (nbclient with the course's kernel manager,
:mod:`course_lib.headless`), with torchvision's weight files in a temporary ``TORCH_HOME``: random
weights of the right shapes saved under torchvision's file names (``tools/fake_torch_home.py``), so
nothing is downloaded and the pictures are noise, but every layer name, shape and code path is the
real model's.

``make test-models`` runs these tests (CI runs it after ``make test``): with two processes
about 8 minutes on a 2-core CPU, too long to share ``make test``'s 10 minutes.

The runs use the notebooks' *smoke* setting (``COURSE_FAST=smoke``): fast mode with fewer images and
steps still (each parameters cell lists what it cuts), because a 224 px VGG16 on one CPU core takes
minutes where the course model takes seconds. What the smoke runs skip is the numbers: they check
that the code runs with each model's layers, not what it finds. ``make book`` and the browser test
run the notebooks with the course model at their real and fast settings.
"""
import os
import re
import sys
from pathlib import Path

import nbformat
import pytest

REPO = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((REPO / "notebooks").glob("[0-9][0-9]_*.ipynb"))
MODELS = ["resnet18", "vgg16"]
LINE = re.compile(r'^MODEL_NAME = "course"', re.M)
CELL_TIMEOUT_S = 300

sys.path.insert(0, str(REPO / "tools"))
from fake_torch_home import fake_torch_home  # noqa: E402

sys.path.pop(0)


@pytest.fixture(scope="module")
def torch_home(tmp_path_factory):
    folder = tmp_path_factory.mktemp("torch_home")
    fake_torch_home(folder, MODELS)
    return folder


def switched(path: Path, model: str) -> nbformat.NotebookNode:
    """The notebook with its parameters cell's MODEL_NAME line changed to ``model``, as a student would."""
    nb = nbformat.read(path, as_version=4)
    cell = next(c for c in nb.cells if "parameters" in c.metadata.get("tags", []))
    cell.source, n = LINE.subn(f'MODEL_NAME = "{model}"', cell.source)
    assert n == 1, f"{path.name}: its parameters cell has no line starting 'MODEL_NAME = \"course\"'"
    return nb


@pytest.mark.model_switch
@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name[:2])
def test_notebook_runs_with_an_imagenet_model(path, model, torch_home, monkeypatch):
    from nbclient import NotebookClient

    from course_lib.headless import KernelManager

    nb = switched(path, model)
    for key, value in {"COURSE_FAST": "smoke", "TORCH_HOME": str(torch_home), "COURSE_CACHE": "0",
                       "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}.items():
        monkeypatch.setenv(key, value)   # the kernel inherits these
    monkeypatch.delenv("MPLBACKEND", raising=False)
    client = NotebookClient(nb, timeout=CELL_TIMEOUT_S, kernel_name="python3", kernel_manager_class=KernelManager,
                            resources={"metadata": {"path": str(path.parent)}})
    client.execute()   # raises CellExecutionError, naming the cell, on any error
    text = "\n".join(o.get("text", "") + str(o.get("data", {}).get("text/plain", ""))
                     for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []))
    assert "uses the course model instead" not in text, f"{path.name} fell back to the course model:\n{text[:2000]}"
    assert not [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])
                if o.output_type == "error"]
