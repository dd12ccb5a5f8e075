"""Shared fixtures. Tests never touch the network: they use small random-weight
models, the shipped course model, and the local data cache / mirror."""
import matplotlib
import numpy as np
import pytest
import torch

matplotlib.use("Agg")

# `make test` runs the tests in two processes (pytest-xdist, `-n 2 --dist loadfile
# --no-loadscope-reorder`: each file in one process, so module fixtures such as the browser test's
# JupyterLab server are made once), with OMP_NUM_THREADS=1 so that the two never fight over the two
# cores. The two longest files start first, one in each process: the browser test (CPU-bound) and the
# exercise grading cycle (mostly waiting for sandboxes); the other grader files follow, then the rest.
FIRST = ["test_browser.py", "test_exercises.py", "test_grader_attacks.py", "test_submission_input.py"]


def close(actual, expected, rtol=1e-5, floor=1e-6, scale=None, msg=None):
    """``course_lib.grading.check_close`` (the exercises' comparison) with tolerances that scale with the
    values compared, so that no test depends on which CPU runs it (other SIMD kernels, oneDNN or not,
    bf16 paths: other rounding, other summation orders): elementwise ``|actual - expected| <= rtol *
    |expected| + floor * scale``, where ``scale`` is the largest ``|expected|`` unless given. Give it
    where ``expected`` is a small difference of large numbers (its rounding is that of the large
    numbers: a class score's, a sum's terms')."""
    from course_lib.grading import check_close

    actual, expected = _tensor(actual), _tensor(expected)
    assert torch.isfinite(expected).all(), f"{msg or 'the expected value'} contains NaN or infinite values"
    if scale is None:
        scale = float(expected.abs().max()) if expected.numel() else 0.0
    check_close(actual, expected, msg or "the result", rtol=rtol, atol=floor * float(scale))


def _tensor(x):
    if isinstance(x, (int, float)):
        return torch.tensor(float(x), dtype=torch.float64)
    return torch.as_tensor(np.asarray(x) if not isinstance(x, torch.Tensor) else x).detach().cpu()


def pytest_collection_modifyitems(config, items):
    rank = {name: i for i, name in enumerate(FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(FIRST)))   # stable: file order kept otherwise


@pytest.fixture(scope="session")
def course_model():
    from course_lib.models import load_model

    return load_model("course")


@pytest.fixture
def tiny_net():
    """``course_lib.grading.tiny_net(0)``: a random-weight CourseNet with narrow layers, 64 px input (same
    structure and names as the course model). Seeds torch's global generator too: tests that draw
    random images without a generator draw the same ones whatever ran before."""
    from course_lib.grading import tiny_net as make_tiny_net

    torch.manual_seed(0)
    return make_tiny_net(0)


@pytest.fixture(scope="session")
def val_set():
    """Imagenette val (from the cache, or the mirror the Makefile points at)."""
    from course_lib.data import imagenette

    return imagenette("val")

