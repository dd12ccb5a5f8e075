"""No test cell of an exercise passes a trivial answer (issue 27, class 4): every property test is
anchored by at least one absolute check.

A property test alone can be passed by an answer that computes nothing: ``instance_norm =
torch.zeros_like`` is "the same alone as in its batch", a Gram matrix with trace/C in every entry is
symmetric, positive semi-definite and independent of the number of positions. So every test cell also
compares one result with a value that does not come from the student's function (the course's
implementation imported under another name, an independent library, a value computed by hand).

This file checks that, in-process (no sandbox, no nbgrader: test code is trusted), for every exercise,
every function the students write and every trivial answer that makes sense for what it returns
(:data:`KINDS`): the source notebook's set-up and answer cells run as the student process would run
them (the ``reference`` cells skipped, as when grading), the function is replaced by the trivial answer
(the other functions stay the reference solution, and call the trivial one where they use it), and
every test cell that uses the function must fail (raise), hidden tests included. The same harness with
no trivial answer passes every test cell, each in a namespace of its own that holds only the student's
functions (as the grading's test process sees them): the cells are self-contained, so each trivial
answer only needs the cells that name its function.

Trivial answers (:func:`trivial`) take the shape and type of the right answer (they call the
reference solution for it), so that shape checks cannot be what fails them:

* ``zeros``, ``ones``: every entry 0, or 1 (for a loss: 0.0, 1.0);
* ``constant``: every entry :data:`CONSTANT` (for losses, where the mean is the answer itself);
* ``mean``: every entry the mean of the right answer (a constant map of the right scale);
* ``input``: the function's first tensor argument, returned unchanged (for functions that map an
  image or feature map to one of the same shape);
* ``trace/C`` (Gram matrices): every entry of each matrix the mean of its diagonal;
* ``pixel`` (receptive fields): ``(1, 1, 0)``, the receptive field of the input itself.
"""
from __future__ import annotations

import ast
import functools
import re
from pathlib import Path

import nbformat
import numpy as np
import pytest
import torch

from test_exercises import _answers, _grade_id

SOURCE = Path(__file__).resolve().parents[1] / "exercises" / "source"

MAPS = ("zeros", "ones", "mean")
SAME_SHAPE = MAPS + ("input",)
LOSSES = ("zeros", "ones", "constant")              # (the mean of one number is the right answer)
CONSTANT = 0.37
#: exercise -> {function the students write: the trivial answers tried for it}
KINDS = {
    "ex01_filters": {"minmax_per_filter": SAME_SHAPE, "rgb_filter_grid": MAPS, "nearest_neighbors": ("zeros", "ones")},
    "ex02_occlusion": {"receptive_field": ("zeros", "ones", "pixel"), "occlusion": MAPS},
    "ex03_saliency": {"vanilla_saliency": MAPS, "guided_backprop": MAPS},
    "ex04_cam": {"cam": MAPS, "grad_cam": MAPS},
    "ex05_adversarial": {"fgsm": SAME_SHAPE, "targeted_pgd": SAME_SHAPE, "blur_and_clip": SAME_SHAPE},
    "ex06_gram": {"gram_matrix": MAPS + ("trace/C",), "style_loss": MAPS},
    "ex07_style": {"content_loss": LOSSES, "tv_loss": LOSSES, "total_loss": LOSSES, "style_step": SAME_SHAPE},
    "ex08_fast_style": {"instance_norm": SAME_SHAPE, "residual_block": SAME_SHAPE, "upsample_conv": SAME_SHAPE},
}


def _meta(cell) -> dict:
    return cell.metadata.get("nbgrader", {})


def _is_test(cell) -> bool:       # as grader.rebuild.is_test_cell
    return cell.cell_type == "code" and bool(_meta(cell).get("grade")) and not _meta(cell).get("solution")


@functools.lru_cache(maxsize=None)
def notebook(exercise: str):
    """(set-up namespace, answer sources, test cells as (grade_id, source)) of an exercise's source
    notebook; the set-up cells (the student process's instructor cells, without those tagged
    ``reference``) run once per exercise."""
    nb = nbformat.read(SOURCE / exercise / f"{exercise}.ipynb", as_version=4)
    setup: dict = {"__name__": "__main__"}
    for cell in nb.cells:
        if (cell.cell_type == "code" and not _is_test(cell) and not _meta(cell).get("solution")
                and "reference" not in cell.metadata.get("tags", [])):
            exec(compile(cell.source, f"<{exercise} set-up {_grade_id(cell)}>", "exec"), setup)
    tests = [(_grade_id(c), c.source) for c in nb.cells if _is_test(c)]
    return setup, _answers(nb), tests


def functions(exercise: str) -> dict:
    """The reference solution's functions, defined in a copy of the set-up namespace (so that they call
    one another through it, as the student's do)."""
    setup, answers, _ = notebook(exercise)
    ns = dict(setup)
    for gid, source in answers.items():
        exec(compile(source, f"<{exercise} answer {gid}>", "exec"), ns)
    return ns


def _fill(out, kind: str):
    """The right answer ``out`` with its entries replaced as ``kind`` says."""
    if isinstance(out, tuple):
        return tuple(_fill(v, kind) for v in out)
    if isinstance(out, (int, float)):
        return type(out)({"zeros": 0, "ones": 1}.get(kind, out))
    lib = np if isinstance(out, np.ndarray) else torch
    out = out.detach() if isinstance(out, torch.Tensor) else out
    if kind == "zeros":
        return lib.zeros_like(out)
    if kind == "ones":
        return lib.ones_like(out)
    if kind == "constant":
        return lib.full_like(out, CONSTANT)
    if kind == "mean":
        return lib.full_like(out, float(out.astype(float).mean() if lib is np else out.double().mean()))
    if kind == "trace/C":
        diag = out.diagonal(dim1=-2, dim2=-1).mean(-1)
        return diag[..., None, None].expand_as(out).clone()
    raise ValueError(kind)


def trivial(right, kind: str):
    """A trivial answer of ``kind`` with the call signature of the function ``right``."""
    @functools.wraps(right)
    def answer(*args, **kwargs):
        if kind == "input":
            return next(a for a in [*args, *kwargs.values()] if isinstance(a, torch.Tensor))
        if kind == "pixel":
            return (1, 1, 0)
        return _fill(right(*args, **kwargs), kind)
    return answer


def run_cell(exercise: str, gid: str, source: str, ns: dict) -> BaseException | None:
    """Run one test cell in a namespace of its own holding the student's functions (as the grading's
    test process does); the exception it raised, or None."""
    cell_ns = {"__name__": "__main__", **{name: ns[name] for name in KINDS[exercise]}}
    try:
        exec(compile(source, f"<{exercise} {gid}>", "exec"), cell_ns)
    except Exception as e:  # noqa: BLE001 - a failing test cell is the result
        return e
    return None


def uses(source: str, function: str) -> bool:
    """Whether the test cell ``source`` uses the student's ``function`` (a name, not an attribute such as
    ``F.instance_norm`` or a module such as ``course_lib.cam``)."""
    return any(isinstance(node, ast.Name) and node.id == function for node in ast.walk(ast.parse(source)))


CASES = [pytest.param(ex, fn, kind, id=f"{ex}-{fn}-{kind}") for ex, fns in KINDS.items()
         for fn, kinds in fns.items() for kind in kinds]


def test_the_table_covers_every_function():
    for exercise in sorted(p.name for p in SOURCE.iterdir() if (p / f"{p.name}.ipynb").exists()):
        _, answers, _ = notebook(exercise)
        defined = set()
        for source in answers.values():
            defined |= set(re.findall(r"^def (\w+)\(", source, flags=re.M))
        assert set(KINDS.get(exercise, {})) == defined, f"{exercise}: KINDS lists {set(KINDS.get(exercise, {}))}"


@pytest.mark.parametrize("exercise", list(KINDS))
def test_the_reference_solution_passes_every_test_cell(exercise):
    ns = functions(exercise)
    _, _, tests = notebook(exercise)
    failed = {gid: f"{type(e).__name__}: {e}"[:500] for gid, source in tests
              if (e := run_cell(exercise, gid, source, ns)) is not None}
    assert not failed


@pytest.mark.parametrize("exercise, function, kind", CASES)
def test_a_trivial_answer_fails_every_test_cell_that_calls_it(exercise, function, kind):
    ns = functions(exercise)
    ns[function] = trivial(ns[function], kind)
    _, _, tests = notebook(exercise)
    cells = [(gid, source) for gid, source in tests if uses(source, function)]
    assert cells, f"no test cell calls {function}"
    passed = [gid for gid, source in cells if run_cell(exercise, gid, source, ns) is None]
    assert not passed, f"{function} = {kind}: these test cells pass it"
