"""Shared fixtures. Tests never touch the network: they use small random-weight
models, the shipped course model, and the local data cache / mirror."""
import os

import matplotlib
import pytest
import torch

matplotlib.use("Agg")

# `make test` runs the tests in two processes (pytest-xdist, `-n 2 --dist loadfile
# --no-loadscope-reorder`: each file in one process, so module fixtures such as the browser test's
# JupyterLab server are made once), with OMP_NUM_THREADS=1 so that the two never fight over the two
# cores. The two longest files start first, one in each process: the browser test (CPU-bound) and the
# exercise grading cycle (mostly waiting for sandboxes); the other grader files follow, then the rest.
FIRST = ["test_browser.py", "test_exercises.py", "test_grader_attacks.py", "test_submission_input.py"]


def pytest_collection_modifyitems(config, items):
    rank = {name: i for i, name in enumerate(FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(FIRST)))   # stable: file order kept otherwise


@pytest.fixture(scope="session")
def course_model():
    from course_lib.models import load_model

    return load_model("course")


@pytest.fixture
def tiny_net():
    """A random-weight CourseNet with narrow layers (same structure and names as the course model)."""
    from course_lib.models import CourseNet, _prepare

    torch.manual_seed(0)
    net = CourseNet(num_classes=10, blocks=((8,), (8,), (8, 8), (16, 16)))
    return _prepare(net, [f"class {i}" for i in range(10)], 64, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225), None)


@pytest.fixture(scope="session")
def val_set():
    """Imagenette val (from the cache, or the mirror the Makefile points at)."""
    from course_lib.data import imagenette

    return imagenette("val")

