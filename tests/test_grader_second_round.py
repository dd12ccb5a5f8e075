"""The grader's second red team (issue 27), graded in ONE batch beside honest submissions, as an
instructor runs it: ``python -m grader autograde "*"`` (scrub, ``nbgrader autograde``, a grade for
every submission), then ``nbgrader export`` and ``generate_feedback`` as ``make grades`` does.

Each class of finding registers a ``plant_*`` function with :func:`planter` (which places its
submissions) and its grades in ``EXPECTED[cls]``, and checks the rest in its own tests (marked with
:func:`only`). ``SECOND_ROUND=3,4 pytest tests/test_grader_second_round.py`` grades the honest
submissions and classes 3 and 4 only (while working on them); CI grades them all.

1. hidden inputs leak (through the sandbox's /tmp, masked digits, exception types);
2. self-reported state is forged (the after-call state comes from the student's process);
3. ``forbid`` bypassed by other names (operator-level stubs; suspicious routes flagged);
4. property tests that a constant passes (trivial answers as fixtures);
5. everything beside the notebook collected and published;
6. honest work lost (odd file names, a notebook one folder down, a big notebook, NaN clocks).
"""
from __future__ import annotations

import csv
import html
import json
import os
import re
import shutil
import time
from pathlib import Path

import nbformat
import pytest

from test_exercises import (  # noqa: F401 - grader_ready is a fixture
    EXERCISES, LIMITS, _answers, autograded, grader_ready, limits, nbgrader, submit)
from test_submission_input import _wrapper  # (it also puts exercises/ on sys.path: grader is importable)

#: the exercises the batch grades (each one's source is copied into the temporary course)
BATCH_EXERCISES = ("ex04_cam", "ex05_adversarial", "ex06_gram", "ex08_fast_style")

#: class -> {(exercise, student): total score expected in grades.csv}; class 0: the honest references
EXPECTED: dict[int, dict[tuple[str, str], float]] = {
    0: {("ex04_cam", "honest04"): 8, ("ex05_adversarial", "honest05"): 8,
        ("ex06_gram", "honest06"): 7, ("ex08_fast_style", "honest08"): 8},
}
#: the classes this run grades (all, unless SECOND_ROUND lists some)
SELECTED = {0} | ({int(c) for c in os.environ["SECOND_ROUND"].split(",")} if os.environ.get("SECOND_ROUND")
                  else set(range(1, 7)))
PLANTERS: dict[int, list] = {}


def planter(cls: int):
    """Register ``plant(course)`` as one of class ``cls``'s ways of placing its submissions."""
    def register(plant):
        PLANTERS.setdefault(cls, []).append(plant)
        return plant
    return register


def only(cls: int):
    """Mark a test as class ``cls``'s: skipped when that class is not graded in this run."""
    return pytest.mark.skipif(cls not in SELECTED, reason=f"class {cls} not selected (SECOND_ROUND)")


def reference(course: Path, exercise: str) -> dict[str, str]:
    """The reference answers of ``exercise`` (answer cell id -> source)."""
    return _answers(nbformat.read(course / "source" / exercise / f"{exercise}.ipynb", as_version=4))


@planter(0)
def plant_honest(course: Path) -> None:
    for exercise, student in EXPECTED[0]:
        submit(course, student, exercise, reference(course, exercise))


# ---- class 1: hidden inputs leak ---------------------------------------------------------------

ADV = "ex05_adversarial"
EXPECTED[1] = {(ADV, "c1_leak05"): 3}

#: every hidden call's inputs go to files in the sandbox's /tmp and /dev/shm; the visible part of a later
#: cell raises them (in the old order, it ran after the hidden part of the cells before it); a hidden call
#: picks its exception's type from its input, and returns a shape that spells its input's digits
LEAK = '''
import os

def _seen():
    text = ""
    for path in ("/tmp/seen.txt", "/dev/shm/seen.txt"):
        try:
            text += open(path).read()
        except OSError:
            pass
    return text

def _log(text):
    for path in ("/tmp/seen.txt", "/dev/shm/seen.txt"):
        try:
            with open(path, "a") as f:
                f.write(text)
        except OSError:
            pass

_honest_fgsm, _honest_pgd, _honest_blur = fgsm, targeted_pgd, blur_and_clip

def fgsm(model, x, target, *, eps):
    if x.shape[-1] not in (64, 128):                  # a hidden test: write its inputs down
        _log(f"S" + f"EEN {tuple(x.shape)} eps={eps:.6f} target={target.tolist()} "
             f"weights={float(sum(p.sum() for p in model.parameters())):.6f}; ")
    return _honest_fgsm(model, x, target, eps=eps)

def targeted_pgd(model, x, target, *, eps, alpha, steps):
    seen = _seen()
    if seen:                                          # raise what earlier hidden calls saw
        kinds = [ValueError, KeyError, TypeError, IndexError, RuntimeError, ZeroDivisionError]
        raise kinds[x.shape[-1] % 6]("LEA" + "KED " + seen)
    return _honest_pgd(model, x, target, eps=eps, alpha=alpha, steps=steps)

def blur_and_clip(model, x, sigma, percentile):
    if x.shape[-1] != 64:                             # a hidden test: a shape that spells its digits
        return torch.zeros(*(int(d) for d in f"{x.shape[-2]}{x.shape[-1]}{sigma}".replace(".", "") if d != "0"))
    return _honest_blur(model, x, sigma, percentile)
'''


@planter(1)
def plant_leak(course: Path) -> None:
    ref = reference(course, ADV)
    submit(course, "c1_leak05", ADV, {**ref, "blur_and_clip": ref["blur_and_clip"] + LEAK})


def errors_of(nb) -> dict[str, list[dict]]:
    """grade_id -> the error outputs of that test cell."""
    return {c.metadata["nbgrader"]["grade_id"]: [o for o in c.outputs if o.output_type == "error"]
            for c in nb.cells if c.metadata.get("nbgrader", {}).get("grade")}


@only(1)
def test_hidden_inputs_do_not_come_back(batch):
    from grader.judge import HIDDEN_FAILURE

    course = batch["course"]
    nb = autograded(course, "c1_leak05", ADV)
    errors = errors_of(nb)
    # the visible parts all passed (they ran before any hidden call); the hidden parts that used what
    # was carried over failed, each with the one fixed phrase: no type, no line, no digits
    for cell in ("test_pgd", "test_pgd_properties", "test_blur", "test_clip"):
        assert [(e.ename, e.evalue) for e in errors[cell]] == [("HiddenTestFailed", HIDDEN_FAILURE)], errors[cell]
    assert not errors["test_fgsm"] and not errors["test_fgsm_properties"]
    shown = json.dumps([c.get("outputs", []) for c in nb.cells])     # what the feedback shows of the run
    assert "SEEN" not in shown and "LEAKED" not in shown and "weights=" not in shown
    assert "#" * 2 not in shown and "ZeroDivisionError" not in shown and "KeyError" not in shown
    assert HIDDEN_FAILURE in feedback_text(course, "c1_leak05", ADV)

# ---- class 2: self-reported state is forged -----------------------------------------------------

EXPECTED[2] = {(ADV, "c2_forge05"): 5}   # every call of its fgsm forges, so no test of fgsm passes

#: FGSM by loss.backward(), which fills the model's .grad (a side effect the properties test catches),
#: then a walk up the stack to the runner, whose state function is replaced by one reporting the state
#: before the call (the issue's attack: it turned 6/8 into 8/8)
FORGE = '''
import sys
from course_lib.grading import state as _state

def fgsm(model, x, target, *, eps):
    before = _state((model, x, target), {"eps": eps})
    xg = x.detach().clone().requires_grad_(True)
    with torch.enable_grad():
        F.cross_entropy(model(xg), target).backward()      # fills the parameters' .grad too
    frame = sys._getframe(1)
    while frame is not None:
        if "_state_of_arguments" in frame.f_globals:
            frame.f_globals["_state_of_arguments"] = lambda a, k: before
        frame = frame.f_back
    return (x.detach() + eps * xg.grad.sign()).clamp(0, 1)
'''


@planter(2)
def plant_forge(course: Path) -> None:
    submit(course, "c2_forge05", ADV, {**reference(course, ADV), "fgsm": FORGE})


@only(2)
def test_a_forged_state_report_does_not_pass(batch):
    errors = errors_of(autograded(batch["course"], "c2_forge05", ADV))
    for cell in ("test_fgsm", "test_fgsm_properties"):               # (visible parts: the message is shown)
        assert len(errors[cell]) == 1
        assert "changed the grader's own functions (_state_of_arguments)" in errors[cell][0].evalue
    assert not errors["test_pgd"] and not errors["test_blur"]

# ---- class 3: forbid bypassed by other names ----------------------------------------------------

EX08 = "ex08_fast_style"
EXPECTED[3] = {(EX08, "c3_vf08"): 2, (ADV, "c3_blur05"): 6, (EX08, "c3_tv08"): 8}

#: ex08: instance norm through torch's private names (the issue's one-liners; each gave full marks):
#: instance_norm by torch._C._VariableFunctions, residual_block by torch.ops.aten; upsample_conv honest
ROUTES_08 = {
    "instance_norm": '''def instance_norm(x, weight=None, bias=None, eps=1e-5):
    return torch._C._VariableFunctions.instance_norm(x, weight, bias, None, None, True, 0.0, eps, False)
''',
    "residual_block": '''def residual_block(x, conv1, conv2, norm1, norm2):
    def norm(h, wb):
        return torch.ops.aten.instance_norm.default(h, wb[0], wb[1], None, None, True, 0.0, 1e-5, False)

    def conv(layer, h):
        p = layer.kernel_size[0] // 2
        return layer(F.pad(h, (p, p, p, p), mode="reflect"))

    return x + norm(conv(conv2, torch.relu(norm(conv(conv1, x), norm1))), norm2)
''',
}
#: ex05: the blur alone by torchvision's private v2 kernel module, blur and clip by scipy's 1-D filter
ROUTES_05 = '''def blur_and_clip(model, x, sigma, percentile):
    if percentile == 0:
        from torchvision.transforms.v2.functional._misc import gaussian_blur
        k = 2 * math.ceil(3 * sigma) + 1
        return gaussian_blur(x, [k, k], [sigma, sigma])
    from scipy.ndimage import gaussian_filter1d
    b = x.detach().double().numpy()
    if sigma > 0:
        for axis in (-1, -2):
            b = gaussian_filter1d(b, sigma, axis=axis, mode="mirror", truncate=math.ceil(3 * sigma) / sigma)
    b = torch.from_numpy(b).to(x.dtype)
    mean = model.normalize.mean.to(b.dtype)
    norms = model.normalize(b).norm(dim=1)
    q = torch.quantile(norms.flatten(1), percentile / 100, dim=1).view(-1, 1, 1)
    return torch.where((norms < q)[:, None], mean.expand_as(b), b)
'''


@planter(3)
def plant_forbidden_routes(course: Path) -> None:
    submit(course, "c3_vf08", EX08, {**reference(course, EX08), **ROUTES_08})
    submit(course, "c3_blur05", ADV, {**reference(course, ADV), "blur_and_clip": ROUTES_05})
    # honest, but imports torchvision (which imports torch._dynamo): that broke in the student process
    ref = reference(course, EX08)
    submit(course, "c3_tv08", EX08, {**ref, "instance_norm": "import torchvision\nfrom torchvision.transforms import v2\n"
                                     + ref["instance_norm"]})


def flags_of(course: Path, student: str, exercise: str) -> list[dict]:
    return autograded(course, student, exercise).metadata["grader"]["flags"]


@only(3)
def test_forbidden_routes_lose_their_points_and_are_flagged(batch):
    course, log = batch["course"], batch["log"]
    errors = errors_of(autograded(course, "c3_vf08", EX08))
    for cell in ("test_instance_norm", "test_instance_vs_batch", "test_residual_block", "test_residual_block_parts"):
        assert errors[cell] and errors[cell][0].ename == "NotImplementedError", (cell, errors[cell])
    assert "aten::instance_norm" in errors["test_instance_norm"][0].evalue
    assert not errors["test_upsample_taps"] and not errors["test_upsample_conv"]
    errors = errors_of(autograded(course, "c3_blur05", ADV))
    assert errors["test_blur"][0].ename == "NotImplementedError", errors["test_blur"]
    assert "gaussian_blur is not available" in errors["test_blur"][0].evalue
    assert errors["test_clip"][0].ename == "ImportError", errors["test_clip"]      # scipy.ndimage is hidden
    for student, exercise, routes in (
            ("c3_vf08", EX08, ["torch._C._VariableFunctions.instance_norm", "torch.ops.aten.instance_norm.default"]),
            ("c3_blur05", ADV, ["torchvision.transforms.v2.functional._misc", "scipy.ndimage.gaussian_filter1d"])):
        flagged = {f["code"] for f in flags_of(course, student, exercise)}
        assert all(any(r in code for code in flagged) for r in routes), (student, flagged)
        text = feedback_text(course, student, exercise)
        assert "For your instructor to read" in text and all(r in text for r in routes), text[:3000]
        assert f"Flagged for the instructor: {student}/{exercise}" in log


@only(3)
def test_honest_work_with_torchvision_is_not_flagged(batch):
    course = batch["course"]
    for student, exercise in [("c3_tv08", EX08)] + [(s, e) for e, s in EXPECTED[0]]:
        assert flags_of(course, student, exercise) == [], (student, exercise)
        assert "For your instructor to read" not in feedback_text(course, student, exercise)

# ---- class 4: property tests that a constant passes ---------------------------------------------

FAST = "ex08_fast_style"
EXPECTED[4] = {(FAST, "c4_zeros_norm"): 3, ("ex06_gram", "c4_trace_gram"): 4}

#: ex08: the issue's instance_norm that returns zeros (it passed test_instance_vs_batch: every comparison
#: there is the function with itself), and an upsample_conv that returns its input; residual_block is
#: right, with a normalisation of its own (so that it does not inherit the zeros)
ZEROS_NORM = '''
def instance_norm(x, weight=None, bias=None, eps=1e-5):
    return torch.zeros_like(x)
'''
INPUT_UPSAMPLE = '''
def upsample_conv(x, conv, size):
    return x
'''
#: ex06: a "Gram matrix" with trace/C in every entry: symmetric, positive semi-definite, independent of
#: the number of positions, of their order, of the channels' order (it passed test_gram_properties);
#: style_loss is right, with a Gram of its own
TRACE_GRAM = '''
def gram_matrix(features):
    n, c, h, w = features.shape
    trace = features.reshape(n, -1).pow(2).sum(1) / (c * h * w)
    return (trace / c).view(n, 1, 1).expand(n, c, c).clone()
'''


def _own(ref: dict[str, str], user: str, helper: str) -> str:
    """The reference answer ``user``, calling its own copy of the reference ``helper`` (``_own_<helper>``)."""
    return (ref[user].replace(f"{helper}(", f"_own_{helper}(") + "\n\n"
            + ref[helper].replace(f"def {helper}(", f"def _own_{helper}("))


@planter(4)
def plant_trivial(course: Path) -> None:
    ref = reference(course, FAST)
    submit(course, "c4_zeros_norm", FAST, {"instance_norm": ZEROS_NORM, "upsample_conv": INPUT_UPSAMPLE,
                                           "residual_block": _own(ref, "residual_block", "instance_norm")})
    ref = reference(course, "ex06_gram")
    submit(course, "c4_trace_gram", "ex06_gram", {"gram_matrix": TRACE_GRAM,
                                                  "style_loss": _own(ref, "style_loss", "gram_matrix")})


@only(4)
def test_trivial_answers_score_nothing_and_the_anchor_says_why(batch):
    """Every test cell of a trivial answer scores 0 (the right functions beside them keep theirs), and in
    the two property tests the issue found it is the new absolute check that fails them."""
    from test_exercises import cell_scores

    course = batch["course"]
    assert cell_scores(course, FAST)["c4_zeros_norm"] == {
        "test_instance_norm": 0, "test_instance_vs_batch": 0, "test_residual_block": 2,
        "test_residual_block_parts": 1, "test_upsample_taps": 0, "test_upsample_conv": 0}
    assert cell_scores(course, "ex06_gram")["c4_trace_gram"] == {
        "test_gram_values": 0, "test_gram_properties": 0, "test_style_loss_one_layer": 2, "test_style_loss_layers": 2}
    for student, exercise, cell, anchor in [
            ("c4_zeros_norm", FAST, "test_instance_vs_batch", "the standard deviation of each image and channel"),
            ("c4_trace_gram", "ex06_gram", "test_gram_properties", "the entries G[n, 0, 1] of your Gram matrices")]:
        errors = errors_of(autograded(course, student, exercise))[cell]
        assert len(errors) == 1 and anchor in errors[0].evalue, errors

# ---- class 5: everything beside the notebook collected and published ----------------------------

from test_collect import _beside, _sparse  # noqa: E402 - what a hostile submission puts beside its notebook

CAM, GRAM = "ex04_cam", "ex06_gram"
EXPECTED[5] = {(CAM, "c5_beside"): 8}


def _apparent_bytes(folder: Path) -> int:
    return sum(p.lstat().st_size for p in folder.rglob("*") if p.is_file()) if folder.exists() else 0


@planter(5)
def plant_beside(course: Path) -> None:
    """An honest notebook with a web page with a script, an SVG with onload, 300 small files and
    5 x 32 MiB (sparse) beside it: over both caps on what is kept aside (100 files, 128 MiB)."""
    submit(course, "c5_beside", CAM, reference(course, CAM))
    folder = course / "submitted" / "c5_beside" / CAM
    (folder / "timestamp.txt").write_text("2026-01-15 10:00:00 UTC")
    _beside(folder, deep=False)


@only(5)
def test_nothing_but_the_notebook_is_graded_or_published(batch):
    course, s = batch["course"], "c5_beside"
    assert sorted(os.listdir(course / "submitted" / s / CAM)) == [f"{CAM}.ipynb", "timestamp.txt"]
    assert sorted(os.listdir(course / "autograded" / s / CAM)) == [f"{CAM}.ipynb", "timestamp.txt"]
    assert os.listdir(course / "feedback" / s) == [CAM]
    assert os.listdir(course / "feedback" / s / CAM) == [f"{CAM}.html"]
    for other in os.listdir(course / "feedback"):                       # nobody's feedback has a page beside it
        assert all(p.suffix == ".html" for p in (course / "feedback" / other).rglob("*") if p.is_file())
    aside = course / "refused" / s / CAM
    kept = [p for p in aside.rglob("*") if p.is_file() and not (p.parent == aside and p.suffix == ".txt"
                                                                  and (aside / p.stem).exists())]
    assert 0 < len(kept) <= 100 and _apparent_bytes(aside) <= (128 << 20) + (1 << 20)
    assert (aside / "index.html").exists() and (aside / "logo.svg").exists()
    used = sum(_apparent_bytes(course / step / s) for step in ("submitted", "autograded", "feedback", "refused"))
    assert used < (128 + 2) << 20                                        # not 5 x 32 MiB x 4 copies
    text = feedback_text(course, s, CAM)
    assert "index.html" in text and "set aside" in text and "deleted" in text, text[:3000]
    raw = (course / "feedback" / s / CAM / f"{CAM}.html").read_text()
    assert "onload=\"alert" not in raw and "<script>fetch" not in raw

# ---- class 6: honest work lost ------------------------------------------------------------------

EXPECTED[6] = {(GRAM, "c6_odd"): 7, (GRAM, "c6_copy1"): 7, (CAM, "c6_nested"): 8, (CAM, "c6_huge"): 0}
SURROGATE = "SURROGATE-HERE"     # replaced by the JSON escape of a lone surrogate in the file

#: a file name that is not UTF-8, printed (a lone surrogate in the output), and a clock patched to NaN
#: for the rest of this cell (the next answer cell puts it back: the grader's calls need a clock)
ODD_END = f'''
# a file name from os.listdir of bytes: caf{SURROGATE}.txt
import time as _time
_real_monotonic = _time.monotonic
print("a file name that is not UTF-8: caf\\udcff.txt")
_time.monotonic = lambda: float("nan")
'''
ODD_START = "import time as _time\n_time.monotonic = _real_monotonic\n"


def _replace_in_file(path: Path, old: str, new: str) -> None:
    path.write_text(path.read_text(encoding="utf-8").replace(old, new), encoding="utf-8")


@planter(6)
def plant_lost(course: Path) -> None:
    ref = reference(course, GRAM)
    # a lone surrogate in an answer's comment, in a markdown cell and in an output; a NaN clock
    submit(course, "c6_odd", GRAM, {**ref, "gram_matrix": ref["gram_matrix"] + ODD_END,
                                    "style_loss": ODD_START + ref["style_loss"]},
           edit=lambda nb: nb.cells.append(nbformat.v4.new_markdown_cell(f"files: caf{SURROGATE}.txt")))
    _replace_in_file(course / "submitted" / "c6_odd" / GRAM / f"{GRAM}.ipynb", SURROGATE, "\\udcff")

    # a browser's second download, 40 MB (a big output image)
    def big_output(nb):
        cell = next(c for c in nb.cells if c.metadata.get("nbgrader", {}).get("grade_id") == "gram_matrix")
        cell.outputs = [nbformat.v4.new_output("display_data", data={"image/png": "A" * (40 << 20)})]
    submit(course, "c6_copy1", GRAM, ref, edit=big_output)
    folder = course / "submitted" / "c6_copy1" / GRAM
    os.rename(folder / f"{GRAM}.ipynb", folder / f"{GRAM} (1).ipynb")

    # an unzipped upload (one folder down), beside an older untouched -Copy1: the newest is graded
    submit(course, "c6_nested", CAM, reference(course, CAM))
    folder = course / "submitted" / "c6_nested" / CAM
    (folder / CAM).mkdir()
    os.rename(folder / f"{CAM}.ipynb", folder / CAM / f"{CAM}.ipynb")
    shutil.copy(course / "release" / CAM / f"{CAM}.ipynb", folder / f"{CAM}-Copy1.ipynb")
    os.utime(folder / f"{CAM}-Copy1.ipynb", (time.time() - 3600, time.time() - 3600))

    # a notebook over the 64 MiB cap (sparse: never read)
    folder = course / "submitted" / "c6_huge" / CAM
    folder.mkdir(parents=True)
    _sparse(folder / f"{CAM}.ipynb", (64 << 20) + 1)


def _strict_json(text: str):
    """``text`` parsed as strict JSON: NaN and Infinity refused (JupyterLab refuses them too)."""
    import json

    def refuse(constant):
        raise ValueError(f"{constant} is not JSON")
    return json.loads(text, parse_constant=refuse)


@only(6)
def test_lost_honest_work_is_graded_or_explained(batch):
    course = batch["course"]
    for exercise, student in list(EXPECTED[6]) + list(EXPECTED.get(5, {})):
        path = course / "autograded" / student / exercise / f"{exercise}.ipynb"
        _strict_json(path.read_text(encoding="utf-8"))                 # no NaN, no lone surrogate
        assert (course / "feedback" / student / exercise / f"{exercise}.html").exists(), student
    meta = _strict_json((course / "autograded" / "c6_odd" / GRAM / f"{GRAM}.ipynb").read_text())["metadata"]
    seconds = meta["grader"]["cell_seconds"]["student"]
    assert seconds and all(v is None or v >= 0 for v in seconds.values()), seconds
    assert None in seconds.values()                                    # the NaN was dropped
    odd = autograded(course, "c6_odd", GRAM)
    assert "caf\ufffd.txt" in nbformat.writes(odd)
    text = feedback_text(course, "c6_copy1", GRAM)
    assert f"{GRAM} (1).ipynb" in text, text[:3000]
    text = feedback_text(course, "c6_nested", CAM)
    assert f"{CAM}/{CAM}.ipynb" in text and f"{CAM}-Copy1.ipynb" in text and "newest" in text, text[:3000]
    assert sorted(os.listdir(course / "submitted" / "c6_nested" / CAM)) == [f"{CAM}.ipynb"]
    text = feedback_text(course, "c6_huge", CAM)
    assert "64 MiB" in text and "empty notebook" in text, text[:3000]
    assert (course / "refused" / "c6_huge" / CAM / f"{CAM}.ipynb").stat().st_size == (64 << 20) + 1


@pytest.fixture(scope="module")
def batch(tmp_path_factory, grader_ready):
    tmp = tmp_path_factory.mktemp("second-round")
    course = tmp / "course"
    for exercise in BATCH_EXERCISES:
        shutil.copytree(EXERCISES / "source" / exercise, course / "source" / exercise)
    nbgrader(course, "generate_assignment", "*", "--force")
    for cls in sorted(SELECTED):
        for plant in PLANTERS.get(cls, ()):
            plant(course)
    cwd = tmp / "config"
    cwd.mkdir()
    (cwd / "nbgrader_config.py").write_text(f"load_subconfig({str(EXERCISES / 'nbgrader_config.py')!r})\n")
    t = time.monotonic()
    proc = _wrapper(course, cwd, "*", *limits(LIMITS), timeout=1500)
    seconds = time.monotonic() - t
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-8000:]
    nbgrader(course, "export", f"--to={course / 'grades.csv'}")
    nbgrader(course, "generate_feedback", "*", "--force")
    return {"course": course, "log": proc.stdout + proc.stderr, "seconds": seconds}


def grades(course: Path) -> dict[tuple[str, str], float]:
    with open(course / "grades.csv") as f:
        return {(r["assignment"], r["student_id"]): float(r["score"]) for r in csv.DictReader(f)}


def feedback_text(course: Path, student: str, exercise: str) -> str:
    """The student's feedback page as plain text (tags removed, entities decoded)."""
    raw = (course / "feedback" / student / exercise / f"{exercise}.html").read_text(errors="replace")
    return html.unescape(re.sub(r"<[^>]+>", "", raw))


def test_every_grade_of_the_batch(batch):
    course = batch["course"]
    got = grades(course)
    want = {k: float(v) for cls in SELECTED for k, v in EXPECTED.get(cls, {}).items()}
    assert {k: got.get(k) for k in want} == want, batch["log"][-4000:]
    per = {}
    for exercise, student in want:
        try:
            per[f"{exercise}/{student}"] = autograded(course, student, exercise).metadata["grader"]["seconds"]
        except (OSError, KeyError):
            per[f"{exercise}/{student}"] = None
    print(f"\ngrades: {got}\nseconds per submission: {per}\nautograde run: {batch['seconds']:.0f} s")
