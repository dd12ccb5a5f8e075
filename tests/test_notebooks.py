"""House rules every course notebook must follow (tests/test_browser.py runs them, in JupyterLab)."""
from pathlib import Path

import nbformat
import pytest

NOTEBOOKS = sorted((Path(__file__).resolve().parent.parent / "notebooks").glob("*.ipynb"))


def test_there_are_notebooks():
    assert NOTEBOOKS and NOTEBOOKS[0].name == "00_introduction.ipynb"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_house_rules(path):
    nb = nbformat.read(path, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    # committed without outputs
    assert all(not c.outputs and c.execution_count is None for c in code), "clear the outputs before committing"
    # a parameters cell first, with the fast mode for CI
    assert "parameters" in code[0].metadata.get("tags", []), "the first code cell must be tagged 'parameters'"
    assert "COURSE_FAST" in code[0].source
    source = "\n".join(c.source for c in code)
    assert "course_lib" in source and "ipywidgets" in source
    # the prose teaches: at least as many markdown cells as code cells
    assert sum(c.cell_type == "markdown" for c in nb.cells) >= len(code) // 2
