"""House rules every course notebook must follow (tests/test_browser.py runs them, in JupyterLab)."""
from pathlib import Path

import nbformat
import pytest
import torch

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


def _switch_model():
    import importlib.util
    spec = importlib.util.spec_from_file_location("switch_model", NOTEBOOKS[0].parents[1] / "tools" / "switch_model.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_the_model_switch_is_one_line(path, tiny_net):
    """make test-models runs copies with MODEL_NAME edited (tools/switch_model.py, under nbval): each notebook
    has that one line, and where a notebook falls back to the course model, the copy's last cell catches it."""
    sw = _switch_model()
    nb = sw.switched(path, "resnet18")
    params = next(c for c in nb.cells if "parameters" in c.metadata.get("tags", []))
    assert 'MODEL_NAME = "resnet18"' in params.source and 'MODEL_NAME = "course"' not in params.source
    if any(sw.FALLBACK in c.source for c in nb.cells[:-1]):
        check = nb.cells[-1].source
        exec(check, {"model": type("ResNet", (torch.nn.Module,), {})()})  # passes with the model asked for
        with pytest.raises(AssertionError, match="fell back to CourseNet"):
            exec(check, {"model": tiny_net})  # noqa: S102
    else:
        assert nb.cells[-1].source == nbformat.read(path, as_version=4).cells[-1].source
    # an ImageNet model runs smaller in the smoke setting, right after it is loaded; the course model as it is
    loading = [c.source for c in nb.cells if "switch_model.py: smaller images" in c.source]
    assert len(loading) == 1 and loading[0].count("model.input_size = min(model.input_size, 112)") == 1
    compile(loading[0].replace("%matplotlib inline", ""), path.name, "exec")
    lines = loading[0].splitlines()
    at = next(i for i, ln in enumerate(lines) if "model = load_model(MODEL_NAME)" in ln)
    indent = lines[at][: len(lines[at]) - len(lines[at].lstrip())]
    assert "switch_model.py" in lines[at + 1] and lines[at + 1].startswith(indent + "if ")
    assert not any("switch_model.py: smaller" in c.source for c in sw.switched(path, "course").cells)
