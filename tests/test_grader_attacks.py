"""Hostile submissions against the grader's process boundary (issue 13), graded in one parallel batch
with honest ones, as an instructor runs it: ``python -m grader autograde "*" --workers 2``, each
notebook in its own sandboxes, two side by side (issue 28): an attack running beside an honest
submission changes nothing in the honest one's grade.

* ``sidefx`` (exercise 04): answers that leave the model in eval mode with a hook registered,
  and patch every side-effect helper of ``course_lib.grading`` in their own process. The
  judgement is made in the test process from the state shipped back as data, and since issue 27
  a call made while the grader's own functions are patched is not graded at all: 0 / 8 (4 / 8,
  the side-effect tests lost, without the patches).
* ``forge`` (exercise 04): copies every descriptor its cells can reach and, from a background
  thread, writes forged output frames carrying the hidden tests' arguments on them during
  the calls: they never reach the feedback (the protocol breaks, which costs the forger).
* ``leak`` (exercise 04): raises exceptions carrying the hidden tests' arguments: a hidden
  test shows only one fixed phrase (issue 27: not even the exception's type).
* ``snoop`` (exercise 04): prints the environment of every process it can see (the grader
  runs with a secret variable) and tries to fill ``/dev/shm``, ``/`` and ``/dev``, and SysV
  shared memory. Reference answers, so 8 / 8; nothing secret, nothing filled.
* ``sigalrm`` (exercise 04): a cell that ignores the per-cell alarm and loops: stopped after
  the cell limit (not the notebook's), with the reason on that cell and in the report.
* ``guided`` (exercise 03): guided backprop as a call to ``pytorch_grad_cam``'s
  ``GuidedBackpropReLUModel``: hidden while grading, so those tests score zero.
* ``reference04``, ``reference03``: the reference solutions, graded unaffected.
"""
from __future__ import annotations

import csv
import html
import os
import re
import sys
import time
from pathlib import Path

import nbformat
import pytest

from test_exercises import (  # noqa: F401 - grader_ready is a fixture
    CAM, EXERCISES, LIMITS, _answers, _errors, autograded, cell_scores, grader_ready, grader_python, limits, nbgrader,
    submit)

sys.path.insert(0, str(EXERCISES))
from grader.judge import HIDDEN_FAILURE  # noqa: E402

SALIENCY = "ex03_saliency"
SECRET = "instructor-secret-4f1c9e"

EXPECTED = {CAM: {"reference04": 8, "sidefx": 0, "forge": 0, "leak": 5, "snoop": 8, "sigalrm": 0},
            SALIENCY: {"reference03": 7, "guided": 3}}

# (the markers the tests look for are split in the sources, which the feedback shows)

# every side-effect helper patched in the student's own process, as the attack did
SIDE_EFFECTS = '''
import torch
import course_lib.grading as G

G.compare = lambda s, a, k: []
G.changes = lambda before, after: []
G.snapshot = lambda a, k: {}
G.state = lambda a, k: []
G.call_with_report = lambda fn, a, k: (fn(*a, **k), [])
G.check_no_side_effects = lambda fn, *a, **k: fn(*a, **k)

_honest_{name} = {name}

def {name}(model, x, *args, **kwargs):
    out = _honest_{name}(model, x, *args, **kwargs)
    model.eval()                                   # left in eval mode
    model.register_forward_hook(lambda *a: None)   # and a hook left registered
    return out
'''

FORGE = '''
import json, os, struct, threading, time

mine = []
for fd in range(3, 64):                            # every descriptor this process has
    try:
        mine.append(os.dup(fd))
    except OSError:
        pass

def forge():
    while True:
        try:
            args = open("/tmp/args.txt").read()
        except OSError:
            time.sleep(0.05)
            continue
        for kind in ("cell", "student_cell"):
            frame = json.dumps({kind: "0", "outputs": [{"output_type": "stream", "name": "stdout",
                                                      "text": "FOR" + "GED " + args}]}).encode()
            for fd in mine:
                try:
                    os.write(fd, struct.pack(">I", len(frame)) + frame)
                except OSError:
                    pass
        time.sleep(0.05)

threading.Thread(target=forge, daemon=True).start()
_honest_cam = cam

def cam(model, x, target=None):
    if x.shape[-1] != 128:                         # a hidden test: send its inputs out
        args = f"{tuple(x.shape)} target={target} wei" + f"ghts={float(sum(p.sum() for p in model.parameters())):.6f}"
        open("/tmp/args.txt", "w").write(args)
        time.sleep(2)                              # (the forged frames go out before this call's answer)
    return _honest_cam(model, x, target)
'''

LEAK = '''
_honest_cam = cam

def cam(model, x, target=None):
    if x.shape[-1] != 128:                         # a hidden test: try to read its inputs back
        weights = float(sum(p.sum() for p in model.parameters()))
        raise ValueError("LE" + f"AK {tuple(x.shape)} target={target} wei" + f"ghts={weights:.6f}")
    return _honest_cam(model, x, target)
'''

SNOOP = '''
import glob, os, ctypes

seen = []
for path in glob.glob("/proc/*/environ"):
    try:
        seen.append(path + " " + open(path, "rb").read().replace(b"\\0", b" ").decode())
    except OSError as e:
        seen.append(path + " unreadable " + type(e).__name__)
print("ENVIRON", " | ".join(seen), dict(os.environ))

def fill(path, mib=300):
    written = 0
    try:
        with open(path, "wb") as f:
            for _ in range(mib):
                f.write(b"x" * (1 << 20))
                written += 1
    except BaseException as e:
        return f"stopped after {written} MiB ({type(e).__name__})"
    finally:
        try:
            os.remove(path)
        except OSError:
            pass
    return f"FILLED {written} MiB"

for path in ("/dev/shm/fill", "/fill", "/dev/fill", "/etc/fill"):
    print("DISK", path, fill(path))
libc = ctypes.CDLL(None, use_errno=True)
shmid = libc.shmget(0, ctypes.c_size_t(1 << 30), 0o1600)   # IPC_PRIVATE, IPC_CREAT | 0600
print("SHM", "blocked" if shmid < 0 else "GOT 1 GiB of SysV shared memory")
'''

IGNORE_ALARM = '''
import signal
signal.signal(signal.SIGALRM, signal.SIG_IGN)      # the per-cell alarm is ignored
while True:
    pass
'''

GUIDED = '''
def guided_backprop(model, x, target=None):
    from pytorch_grad_cam import GuidedBackpropReLUModel
    return torch.from_numpy(GuidedBackpropReLUModel(model, device="cpu")(x, target_category=target)).permute(2, 0, 1)
'''


@pytest.fixture(scope="module")
def attacked(tmp_path_factory, grader_ready):
    import shutil

    course = tmp_path_factory.mktemp("attacks") / "course"
    for assignment in (CAM, SALIENCY):
        shutil.copytree(EXERCISES / "source" / assignment, course / "source" / assignment)
    nbgrader(course, "generate_assignment", "*", "--force")
    cam_ref = _answers(nbformat.read(course / "source" / CAM / f"{CAM}.ipynb", as_version=4))
    sal_ref = _answers(nbformat.read(course / "source" / SALIENCY / f"{SALIENCY}.ipynb", as_version=4))
    submit(course, "reference04", CAM, cam_ref)
    submit(course, "sidefx", CAM, {"cam": cam_ref["cam"] + SIDE_EFFECTS.replace("{name}", "cam"),
                                   "grad_cam": cam_ref["grad_cam"] + SIDE_EFFECTS.replace("{name}", "grad_cam")})
    submit(course, "forge", CAM, {"cam": cam_ref["cam"] + FORGE, "grad_cam": cam_ref["grad_cam"]})
    submit(course, "leak", CAM, {"cam": cam_ref["cam"] + LEAK, "grad_cam": cam_ref["grad_cam"]})
    submit(course, "snoop", CAM, {"cam": cam_ref["cam"] + SNOOP, "grad_cam": cam_ref["grad_cam"]})
    submit(course, "sigalrm", CAM, {"cam": IGNORE_ALARM, "grad_cam": cam_ref["grad_cam"]})
    submit(course, "reference03", SALIENCY, sal_ref)
    submit(course, "guided", SALIENCY, {**sal_ref, "guided_backprop": GUIDED})
    os.environ["INSTRUCTOR_SECRET"] = SECRET           # in the driver's environment while it grades
    try:   # one parallel batch (issue 28): each attack runs beside honest submissions, two at a time
        t = time.monotonic()
        proc = grader_python("-m", "grader", "autograde", "*", f"--CourseDirectory.root={course}", "--workers", "2",
                             "--no-progress", *limits(LIMITS))
        seconds = {"batch": time.monotonic() - t}
        assert proc.returncode == 0, (proc.stdout + proc.stderr)[-6000:]
        assert "8 notebook(s) to run" in proc.stdout and "on 2 worker process(es)" in proc.stdout, proc.stdout[-3000:]
    finally:
        del os.environ["INSTRUCTOR_SECRET"]
    nbgrader(course, "export", f"--to={course / 'grades.csv'}")
    nbgrader(course, "generate_feedback", "*", "--force")
    return {"course": course, "seconds": seconds}


def _feedback(course: Path, student: str, assignment: str = CAM) -> str:
    raw = (course / "feedback" / student / assignment / f"{assignment}.html").read_text(errors="replace")
    return html.unescape(re.sub(r"<[^>]+>", "", raw))


def _printed(nb, grade_id: str) -> str:
    return "".join(o.get("text", "") for c in nb.cells if c.metadata.get("nbgrader", {}).get("grade_id") == grade_id
                   for o in c.outputs)


def test_grades_of_the_batch(attacked):
    course = attacked["course"]
    with open(course / "grades.csv") as f:
        rows = {(r["assignment"], r["student_id"]): float(r["score"]) for r in csv.DictReader(f)}
    want = {(a, s): float(v) for a, students in EXPECTED.items() for s, v in students.items()}
    got = {k: v for k, v in rows.items() if k in want}
    assert got == want
    per = {s: autograded(course, s, a).metadata["grader"]["seconds"] for a, st in EXPECTED.items() for s in st}
    print("\ngrades:", got, "\nseconds per submission:", per, "\nautograde runs:", attacked["seconds"])


def test_a_patched_grading_helper_is_noticed(attacked):
    scores = cell_scores(attacked["course"])["sidefx"]
    assert scores == {"test_cam_identity": 0, "test_cam_target": 0, "test_grad_cam_identity": 0,
                      "test_grad_cam_oracle": 0}
    errors = _errors(autograded(attacked["course"], "sidefx"))
    for cell in scores:                # (visible parts: the message is shown)
        assert "changed the grader's own functions (state)" in errors[cell], errors[cell]


def test_nothing_the_students_process_writes_reaches_the_feedback_after_its_cells(attacked):
    course = attacked["course"]
    for student in ("forge", "leak"):
        page, nb = _feedback(course, student), nbformat.writes(autograded(course, student))
        for text in (page, nb):
            assert "FORGED" not in text and "LEAK" not in text and "weights=" not in text
    errors = _errors(autograded(course, "leak"))
    assert errors["test_cam_identity"] == HIDDEN_FAILURE                 # all a hidden test says of it
    assert not errors["test_grad_cam_identity"]


def test_the_sandbox_has_no_secret_and_no_unbounded_disk(attacked):
    course = attacked["course"]
    nb = autograded(course, "snoop")
    printed = _printed(nb, "cam")
    assert "ENVIRON" in printed and "/proc/1/environ" in printed, printed[:2000]
    for text in (printed, nbformat.writes(nb), _feedback(course, "snoop")):
        assert SECRET not in text and "INSTRUCTOR_SECRET" not in text
    disks = [ln for ln in printed.splitlines() if ln.startswith("DISK")]
    assert len(disks) == 4 and not [ln for ln in disks if "FILLED" in ln], disks
    assert "SHM blocked" in printed, printed[-500:]


def test_a_cell_that_ignores_the_alarm_is_stopped_at_the_cell_limit(attacked):
    nb = autograded(attacked["course"], "sigalrm")
    # stopped by the cell's limit (the message below comes only from there), not the notebook's
    # (how long the sandboxes take to start on top depends on the machine's load)
    assert nb.metadata["grader"]["seconds"] < LIMITS["timeout"]
    stuck = [o for c in nb.cells if c.metadata.get("nbgrader", {}).get("grade_id") == "cam" for o in c.outputs
             if o.output_type == "error"]
    assert stuck and "did not stop when interrupted" in stuck[-1].evalue
    assert "did not stop when interrupted" in nb.cells[0].source                # the report says why
    assert all("did not finish running within" in e for e in _errors(nb).values())


def test_an_installed_library_implementing_the_exercise_is_hidden(attacked):
    scores = cell_scores(attacked["course"], SALIENCY)
    assert scores["guided"]["test_guided_backprop"] == 0 and scores["guided"]["test_guided_by_hand"] == 0
    errors = _errors(autograded(attacked["course"], "guided", SALIENCY))
    assert "ImportError" in errors["test_guided_by_hand"] or "not available" in errors["test_guided_by_hand"]
    assert scores["reference03"] == {k: v for k, v in scores["reference03"].items()} and \
        sum(scores["reference03"].values()) == 7
