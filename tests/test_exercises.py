"""The exercises' whole grading cycle, as an instructor runs it, on fake submissions.

In a temporary course folder: release every exercise (nbgrader generate_assignment), check the
releases hold no solution and no hidden test (``test_exercise_validation.py`` runs the source and
released notebooks through nbgrader's Validator), then autograde a set of fake submissions of
exercise 04 -- the reference solution, an untouched release, a partly right one, an endless
loop, a memory bomb, one that tampers with the tests, one that tries to escape the sandbox,
and one that hangs its notebook -- and check every grade, the feedback, and that nothing
outside the sandbox changed.

Needs the grader venv (``make grader-setup``: exercises/.venv-grader with nbgrader) and
bubblewrap; ``make test`` sets both up. Without them the tests are skipped, except under CI
(``CI`` set), where that is a failure.
"""
from __future__ import annotations

import csv
import hashlib
import html
import json
import os
import re
import shutil
import socket
import subprocess
import time
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
EXERCISES = ROOT / "exercises"
GRADER_BIN = EXERCISES / ".venv-grader" / "bin"
ASSIGNMENTS = sorted(p.name for p in (EXERCISES / "source").iterdir() if (p / f"{p.name}.ipynb").exists())
CAM = "ex04_cam"
# tight limits for the fixtures: the reference solution needs a few seconds per notebook (90 s for the whole
# notebook: room for a busy machine). Every grading test uses these, so that each exercise's reference is
# checked once per run (the pre-flight: test_exercise_validation.py records it first)
LIMITS = {"timeout": 90, "cell_timeout": 10, "call_timeout": 5, "memory_mb": 2048}
HANG_LIMITS = {**LIMITS, "timeout": 16, "cell_timeout": 4}


def limits(values: dict) -> list[str]:
    return [f"--SandboxedExecute.{k}={v}" for k, v in values.items()]

# exercises 05-08: a small bug in one answer cell (the reference answers elsewhere) and the score it
# gets: partial credit per task (their reference scores full marks and the untouched release zero:
# test_source_notebooks_pass_their_own_tests and test_released_notebooks_fail_every_test)
PARTIALS = {  # exercise -> (answer cell, old, new, score, max score)
    "ex05_adversarial": ("blur_and_clip", 'b = F.pad(b, (r, r, r, r), mode="reflect")', "b = F.pad(b, (r, r, r, r))",
                         6, 8),                                                    # zero padding in the blur
    "ex06_gram": ("style_loss", "1.0 / len(targets)", "1.0", 5, 7),            # default weights not 1/L
    "ex07_style": ("style_step", "(x.detach() - lr * grad).clamp(0, 1)", "x.detach() - lr * grad", 5, 8),  # no clip
    "ex08_fast_style": ("upsample_conv", 'mode="reflect"', 'mode="replicate"', 6, 8),  # wrong padding
}

EXPECTED = {  # student -> (score, max score) of exercise 04
    "reference": 8, "untouched": 0, "partial": 3, "loop": 5, "memory": 3, "tamper": 0, "escape": 0, "hang": 0}


# --------------------------------------------------------------------------- set-up

def _missing() -> str | None:
    if not (GRADER_BIN / "nbgrader").exists():
        return "the grader venv is missing (run `make grader-setup`)"
    if shutil.which("bwrap") is None:
        return "bubblewrap is not installed (run `make grader-setup` as root, or `apt-get install bubblewrap`)"
    return None


@pytest.fixture(scope="module")
def grader_ready():
    why = _missing()
    if why:
        (pytest.fail if os.environ.get("CI") else pytest.skip)(why)


def _env():
    env = dict(os.environ, PATH=f"{GRADER_BIN}{os.pathsep}{os.environ.get('PATH', '')}", OMP_NUM_THREADS="1")
    env.pop("PYTHONPATH", None)
    return env


DRIVER_PIDS: list[int] = []   # the grading processes this module started (their cgroups carry the pid)


def _run(cmd, timeout: int) -> subprocess.CompletedProcess:
    with subprocess.Popen(cmd, cwd=EXERCISES, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True) as proc:
        DRIVER_PIDS.append(proc.pid)
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate()
        return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


def nbgrader(course: Path, *args: str, timeout: int = 900) -> str:
    proc = _run([str(GRADER_BIN / "nbgrader"), *args, f"--CourseDirectory.root={course}"], timeout)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"nbgrader {' '.join(args)} failed:\n{log[-6000:]}"
    return log


def grader_python(*args: str, timeout: int = 900) -> subprocess.CompletedProcess:
    return _run([str(GRADER_BIN / "python"), *args], timeout)


def _grade_id(cell) -> str | None:
    return cell.metadata.get("nbgrader", {}).get("grade_id")


def _answers(source_nb) -> dict[str, str]:
    """The reference answer of each solution cell, without nbgrader's markers."""
    return {_grade_id(c): re.sub(r"\n?[ \t]*### (BEGIN|END) SOLUTION[^\n]*", "", c.source)
            for c in source_nb.cells if c.metadata.get("nbgrader", {}).get("solution")}


def submit(course: Path, student: str, assignment: str, answers: dict[str, str], edit=None) -> None:
    nb = nbformat.read(course / "release" / assignment / f"{assignment}.ipynb", as_version=4)
    for cell in nb.cells:
        if _grade_id(cell) in answers:
            cell.source = answers[_grade_id(cell)]
    if edit:
        edit(nb)
    folder = course / "submitted" / student / assignment
    folder.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, folder / f"{assignment}.ipynb")


# --------------------------------------------------------------------------- the fake submissions

PARTIAL_GRAD_CAM_BUG = ("return torch.relu(", "return (")  # forgets Grad-CAM's final ReLU

LOOP = "def cam(model, x, target=None):\n    while True:       # never returns\n        pass\n"

MEMORY = ("def grad_cam(model, x, target=None, *, layer):\n    hoard = []\n    while True:\n"
          "        hoard.append(torch.ones(64 << 20))     # 256 MiB more, every time\n")

HANG = ("import time\nwhile True:             # an endless loop that even swallows the interrupt\n"
        "    try:\n        while True:\n            pass\n    except BaseException:\n        pass\n")

TAMPER = '''
import builtins, numpy as np, torch
import course_lib.grading as G

def cam(model, x, target=None):
    return torch.zeros(8, 8)

def _pass(*args, **kwargs):
    return None

G.check_close = G.check_shape = _pass                      # the test helpers accept anything
G.check_no_side_effects = lambda fn, *a, **k: None
torch.testing.assert_close = np.testing.assert_allclose = _pass
torch.allclose = lambda *a, **k: True
builtins.AssertionError = type("NotAnError", (Exception,), {})
get_ipython().input_transformers_post.append(lambda lines: ["pass\\n"])   # every later cell does nothing
'''


def tamper_with_cells(nb) -> None:
    cells = []
    for c in nb.cells:
        gid = _grade_id(c)
        if gid == "test_cam_identity":
            continue                                          # a test cell deleted
        if gid == "test_cam_target":
            c.source = "pass"                                 # a test cell emptied
        if gid == "test_grad_cam_oracle":
            c.metadata.nbgrader["points"] = 100               # more points
        if gid == "grad_cam":
            c.metadata.nbgrader.update(grade=True, points=50)  # an answer that would grade itself
        cells.append(c)
    forged = nbformat.v4.new_code_cell("print('free points')")
    forged.metadata["nbgrader"] = {"grade": True, "solution": False, "locked": True, "grade_id": "bonus",
                                   "points": 50, "schema_version": 3}
    nb.cells = cells + [forged]


ESCAPE = r'''
import os, socket, time, torch

SOURCE, COURSE, COURSE_LIB, CANARY, PORT, GRADER_PID = {params!r}
report = []

def attempt(what, action):
    try:
        result = action()
    except BaseException as e:
        report.append(f"blocked: {{what}} ({{type(e).__name__}})")
    else:
        report.append(f"ESCAPED: {{what}} ({{str(result)[:80]}})" if result is not False else f"blocked: {{what}}")

def spawn_many():
    pids = []
    try:
        for _ in range(1000):
            pid = os.fork()
            if pid == 0:
                time.sleep(60)
                os._exit(0)
            pids.append(pid)
    except OSError:
        return False                                   # the process limit stopped it
    finally:
        for p in pids:
            os.kill(p, 9)
    return f"{{len(pids)}} processes"

def fill_tmp():
    with open("/tmp/fill", "wb") as f:
        for _ in range(2048):
            f.write(b"x" * (1 << 20))
    return "2 GiB written"

attempt("read the solutions", lambda: open(SOURCE).read())
attempt("read the gradebook", lambda: open(COURSE + "/gradebook.db", "rb").read(10))
attempt("list the course folder", lambda: os.listdir(COURSE))
attempt("read another submission", lambda: open(COURSE + "/submitted/reference/ex04_cam/ex04_cam.ipynb").read())
attempt("write into the submissions", lambda: open(COURSE + "/submitted/escape.txt", "w").write("x"))
attempt("change course_lib", lambda: open(COURSE_LIB + "/models.py", "a").write("# escaped-the-sandbox"))
attempt("delete a file outside", lambda: os.remove(CANARY))
attempt("write to the machine's /tmp", lambda: open(os.path.dirname(CANARY) + "/escaped.txt", "w").write("x"))
attempt("read /etc/shadow", lambda: open("/etc/shadow").read())
attempt("list root's ssh keys", lambda: os.listdir("/root/.ssh"))
attempt("connect to the grading machine", lambda: socket.create_connection(("127.0.0.1", PORT), timeout=2))
attempt("see the grader's process", lambda: "pytest" in open(f"/proc/{{GRADER_PID}}/cmdline").read() or False)
attempt("fill the disk", fill_tmp)
attempt("start 1000 processes", spawn_many)
print("\n".join(report))

def cam(model, x, target=None):
    return torch.zeros(8, 8)
'''
ESCAPE_ATTEMPTS = 14


def _snapshot(paths) -> dict[str, str]:
    out = {}
    for base in paths:
        for p in sorted(Path(base).rglob("*")) if Path(base).is_dir() else [Path(base)]:
            if p.is_file() and "__pycache__" not in p.parts:
                out[str(p)] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def proc_table() -> dict[int, tuple[int, str]]:
    """{pid: (parent pid, command line)} of every process this user can see."""
    procs = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                cmd = open(f"/proc/{d}/cmdline", "rb").read().replace(b"\0", b" ").decode("utf-8", "replace")
                ppid = int(open(f"/proc/{d}/stat").read().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
            procs[int(d)] = (ppid, cmd)
    return procs


def _orphaned_sandbox_processes() -> list[str]:
    """Sandboxed grading processes (grader.student, grader.judge) that no grading run owns any more (a leak;
    other graders' live runs are fine)."""
    procs = proc_table()
    orphans = []
    for pid, (ppid, cmd) in procs.items():
        if "grader.student" not in cmd and "grader.judge" not in cmd:
            continue
        chain, p = [], ppid
        while p in procs and p > 1:
            chain.append(procs[p][1])
            p = procs[p][0]
        if not any("nbgrader" in c or "-m grader" in c or "dask" in c for c in chain):   # (dask: a grading worker)
            orphans.append(cmd)
    return orphans


# --------------------------------------------------------------------------- the cycle

@pytest.fixture(scope="module")
def cycle(tmp_path_factory, grader_ready):
    tmp = tmp_path_factory.mktemp("exercises")
    course = tmp / "course"
    shutil.copytree(EXERCISES / "source", course / "source")
    outside = tmp / "outside"
    outside.mkdir()
    canary = outside / "canary.txt"
    canary.write_text("must survive\n")
    # what the escaping submission aims at (course_lib/models.py is checked for its marker below:
    # the file itself may change while the course is being developed)
    watched = [EXERCISES / "source", EXERCISES / "grader", canary, course / "source"]
    before = _snapshot(watched)
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    listener.setblocking(False)
    timings = {}

    t = time.monotonic()
    nbgrader(course, "generate_assignment", "*", "--force")           # as `make release`
    timings["release"] = time.monotonic() - t

    source = nbformat.read(course / "source" / CAM / f"{CAM}.ipynb", as_version=4)
    ref = _answers(source)
    params = (str(course / "source" / CAM / f"{CAM}.ipynb"), str(course), str(ROOT / "course_lib"), str(canary),
              listener.getsockname()[1], os.getpid())
    submit(course, "reference", CAM, ref)
    submit(course, "untouched", CAM, {})
    submit(course, "partial", CAM, {"cam": ref["cam"], "grad_cam": ref["grad_cam"].replace(*PARTIAL_GRAD_CAM_BUG)})
    submit(course, "loop", CAM, {"cam": LOOP, "grad_cam": ref["grad_cam"]})
    submit(course, "memory", CAM, {"cam": ref["cam"], "grad_cam": MEMORY})
    submit(course, "tamper", CAM, {"cam": TAMPER, "grad_cam": "def grad_cam(model, x, target=None, *, layer):\n"
                                                              "    return torch.zeros(8, 8)\n"},
           edit=tamper_with_cells)
    submit(course, "escape", CAM, {"cam": ESCAPE.format(params=params)})

    t = time.monotonic()
    log = nbgrader(course, "autograde", CAM, *limits(LIMITS))
    timings["autograde"] = time.monotonic() - t
    submit(course, "hang", CAM, {"cam": HANG, "grad_cam": ref["grad_cam"]})
    t = time.monotonic()
    log += nbgrader(course, "autograde", CAM, "--student=hang", *limits(HANG_LIMITS))
    timings["autograde hang"] = time.monotonic() - t

    for assignment, (gid, bug, fix, _, _) in PARTIALS.items():
        answers = _answers(nbformat.read(course / "source" / assignment / f"{assignment}.ipynb", as_version=4))
        assert bug in answers[gid], f"{assignment}: the partial solution's bug does not apply to {gid}"
        submit(course, "partial", assignment, {**answers, gid: answers[gid].replace(bug, fix)})
    if PARTIALS:
        t = time.monotonic()
        log += nbgrader(course, "autograde", "*", "--student=partial", *limits(LIMITS))
        timings["autograde partial 05-08"] = time.monotonic() - t

    t = time.monotonic()
    nbgrader(course, "export", f"--to={course / 'grades.csv'}")
    nbgrader(course, "generate_feedback", CAM, "--force")
    timings["export+feedback"] = time.monotonic() - t
    try:
        conn, _ = listener.accept()
        conn.close()
        connected = True
    except BlockingIOError:
        connected = False
    listener.close()
    return {"course": course, "tmp": tmp, "log": log, "before": before, "after": _snapshot(watched),
            "canary": canary, "connected": connected, "timings": timings}


def autograded(course: Path, student: str, assignment: str = CAM):
    return nbformat.read(course / "autograded" / student / assignment / f"{assignment}.ipynb", as_version=4)


def cell_scores(course: Path, assignment: str = CAM) -> dict[str, dict[str, float]]:
    """{student: {grade_id: score}} from nbgrader's gradebook."""
    code = ("import json, sys\nfrom nbgrader.api import Gradebook\n"
            f"gb = Gradebook('sqlite:///{course}/gradebook.db')\nout = {{}}\n"
            f"for s in gb.assignment_submissions({assignment!r}):\n"
            "    for nb in s.notebooks:\n"
            "        out[s.student.id] = {g.name: g.score for g in nb.grades}\n"
            "gb.close()\nprint(json.dumps(out))")
    proc = grader_python("-c", code)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


# --------------------------------------------------------------------------- release and validation

def test_release_has_no_solutions_and_no_hidden_tests(cycle):
    for a in ASSIGNMENTS:
        source = nbformat.read(cycle["course"] / "source" / a / f"{a}.ipynb", as_version=4)
        release = nbformat.read(cycle["course"] / "release" / a / f"{a}.ipynb", as_version=4)
        text = json.dumps(release)
        assert "BEGIN SOLUTION" not in text and "HIDDEN TESTS" not in text
        answers = {_grade_id(c): c for c in release.cells if c.metadata.get("nbgrader", {}).get("solution")}
        assert answers, f"{a} has no answer cells"
        for cell in source.cells:
            gid = _grade_id(cell)
            if not cell.metadata.get("nbgrader", {}).get("solution"):
                continue
            assert "raise NotImplementedError()" in answers[gid].source
            solutions = re.findall(r"### BEGIN SOLUTION(.*?)### END SOLUTION", cell.source, flags=re.S)
            body = [ln for part in solutions for ln in part.splitlines()
                    if ln.strip() and not ln.lstrip().startswith("#")]
            assert not any(ln in answers[gid].source for ln in body), f"{a}/{gid}: solution code in the release"
        hidden = [c for c in source.cells if "BEGIN HIDDEN TESTS" in c.source]
        assert hidden, f"{a} has no hidden tests"
        visible = "\n".join(re.sub(r"### BEGIN HIDDEN TESTS.*?### END HIDDEN TESTS", "", c.source, flags=re.S)
                            for c in source.cells)
        for c in hidden:
            secret = c.source.split("BEGIN HIDDEN TESTS")[1].split("### END HIDDEN TESTS")[0]
            lines = [ln for ln in secret.splitlines() if len(ln.strip()) > 25 and ln not in visible]
            assert lines, f"{a}: a hidden test region without its own code"
            assert not any(ln in text for ln in lines), f"{a}: hidden test code in the release"
        assert all(not c.get("outputs") for c in release.cells)


def test_committed_release_matches_the_source(cycle):
    """exercises/release/ (what students open) is what `make release` makes from exercises/source/."""
    for a in ASSIGNMENTS:
        fresh = nbformat.read(cycle["course"] / "release" / a / f"{a}.ipynb", as_version=4)
        committed_path = EXERCISES / "release" / a / f"{a}.ipynb"
        assert committed_path.exists(), f"{committed_path} is missing: run `make release`"
        committed = nbformat.read(committed_path, as_version=4)
        assert [(c.cell_type, c.source, c.metadata.get("nbgrader")) for c in committed.cells] == \
               [(c.cell_type, c.source, c.metadata.get("nbgrader")) for c in fresh.cells], \
               f"{committed_path} is out of date: run `make release`"


# --------------------------------------------------------------------------- grades

def test_grades_of_every_fake_submission(cycle):
    with open(cycle["course"] / "grades.csv") as f:
        rows = {r["student_id"]: r for r in csv.DictReader(f) if r["assignment"] == CAM}
    got = {s: float(r["score"]) for s, r in rows.items()}
    assert got == {s: float(v) for s, v in EXPECTED.items()}
    assert all(float(r["max_score"]) == 8.0 for r in rows.values())
    seconds = {s: autograded(cycle["course"], s).metadata["grader"]["seconds"] for s in EXPECTED}
    print("\ngrades:", got, "\nseconds per submission:", seconds, "\nphases:", cycle["timings"])


def test_partial_solutions_of_exercises_05_to_08_get_partial_credit(cycle):
    with open(cycle["course"] / "grades.csv") as f:
        rows = {r["assignment"]: r for r in csv.DictReader(f) if r["student_id"] == "partial"}
    got = {a: (float(rows[a]["score"]), float(rows[a]["max_score"])) for a in PARTIALS}
    assert got == {a: (float(p[3]), float(p[4])) for a, p in PARTIALS.items()}
    assert all(0 < score < top for score, top in got.values())
    seconds = {a: autograded(cycle["course"], "partial", a).metadata["grader"]["seconds"] for a in PARTIALS}
    print("\npartial solutions of 05-08:", got, "seconds:", seconds)


def test_partial_credit_is_per_task(cycle):
    scores = cell_scores(cycle["course"])
    cam_tests = {"test_cam_identity": 2, "test_cam_target": 1}
    grad_tests = {"test_grad_cam_identity": 2, "test_grad_cam_oracle": 3}
    assert scores["reference"] == {**cam_tests, **grad_tests}
    assert scores["partial"] == {**cam_tests, **{k: 0 for k in grad_tests}}
    assert scores["memory"] == {**cam_tests, **{k: 0 for k in grad_tests}}
    assert scores["loop"] == {**{k: 0 for k in cam_tests}, **grad_tests}
    for s in ("untouched", "tamper", "escape", "hang"):
        assert set(scores[s].values()) == {0}, s


def _errors(nb) -> dict[str, str]:
    return {_grade_id(c): "\n".join(o.get("evalue", "") for o in c.outputs if o.output_type == "error")
            for c in nb.cells if c.cell_type == "code" and c.metadata.get("nbgrader", {}).get("grade")}


def test_an_endless_loop_costs_that_function_only(cycle):
    nb = autograded(cycle["course"], "loop")
    errors = _errors(nb)
    assert "did not return within 5 s" in errors["test_cam_identity"]
    assert "not called again" in errors["test_cam_target"]            # no second wait for the same loop
    assert not errors["test_grad_cam_identity"] and not errors["test_grad_cam_oracle"]
    # the loop cost one call's limit, not the notebook's (how long the rest takes depends on the machine's load)
    assert nb.metadata["grader"]["seconds"] < LIMITS["timeout"]
    assert not any("time limit of" in note for note in nb.metadata["grader"]["events"])


def test_a_notebook_that_never_finishes_is_stopped(cycle):
    nb = autograded(cycle["course"], "hang")
    assert all("did not finish running within" in e for e in _errors(nb).values())
    assert nb.metadata["grader"]["seconds"] < HANG_LIMITS["timeout"] + 10
    assert "did not finish" in nb.cells[0].source                     # the report at the top says why


def test_a_memory_bomb_hits_the_limit(cycle):
    nb = autograded(cycle["course"], "memory")
    errors = _errors(nb)
    assert "memory" in errors["test_grad_cam_identity"] and "memory" in errors["test_grad_cam_oracle"]
    assert not errors["test_cam_identity"]


def test_tampering_is_undone_and_reported(cycle):
    nb = autograded(cycle["course"], "tamper")
    test_cells = {_grade_id(c): c for c in nb.cells if c.metadata.get("nbgrader", {}).get("grade")}
    source = nbformat.read(cycle["course"] / "source" / CAM / f"{CAM}.ipynb", as_version=4)
    pristine = {_grade_id(c): c for c in source.cells if c.metadata.get("nbgrader", {}).get("grade")}
    assert set(test_cells) == set(pristine)                           # deleted test back, forged one gone
    for gid, c in pristine.items():
        assert test_cells[gid].source == c.source                     # with the hidden tests
        assert test_cells[gid].metadata.nbgrader["points"] == c.metadata.nbgrader["points"]
    notes = " ".join(nb.metadata["grader"]["notes"])
    for what in ("`test_cam_identity` was missing", "`test_cam_target` was changed",
                 "grading marks of cell `test_grad_cam_oracle`", "`bonus`"):
        assert what in notes
    assert all(_errors(nb).values())                                  # the patched helpers did not help


def test_sandbox_escapes_fail_and_nothing_outside_changed(cycle):
    nb = autograded(cycle["course"], "escape")
    printed = "".join(o.get("text", "") for c in nb.cells if _grade_id(c) == "cam" for o in c.outputs)
    lines = [ln for ln in printed.splitlines() if ln.startswith(("blocked:", "ESCAPED:"))]
    assert len(lines) == ESCAPE_ATTEMPTS, printed
    assert not [ln for ln in lines if ln.startswith("ESCAPED")], printed
    assert cycle["after"] == cycle["before"]                          # sources, grader, canary
    assert len(cycle["before"]) > 5
    assert cycle["canary"].read_text() == "must survive\n"
    assert "escaped-the-sandbox" not in (ROOT / "course_lib" / "models.py").read_text()
    assert not (cycle["canary"].parent / "escaped.txt").exists()
    assert not (cycle["course"] / "submitted" / "escape.txt").exists()
    assert not cycle["connected"]
    assert not _orphaned_sandbox_processes()                          # every sandboxed process has ended
    if os.geteuid() == 0:                                             # and their cgroups are gone
        left = [p for pid in DRIVER_PIDS for p in Path("/sys/fs/cgroup").glob(f"**/nbgrader-sandbox-{pid}-*")]
        assert not left, left


def test_feedback_for_every_student(cycle):
    for student in EXPECTED:
        page = (cycle["course"] / "feedback" / student / CAM / f"{CAM}.html").read_text(errors="replace")
        assert f"Score: {float(EXPECTED[student])} / 8.0" in page
        assert "Autograded" in page
    raw = (cycle["course"] / "feedback" / "loop" / CAM / f"{CAM}.html").read_text(errors="replace")
    loop = html.unescape(re.sub(r"<[^>]+>", "", raw))                # the text, without the highlighting
    assert "did not return within 5 s" in loop
    assert "BEGIN SOLUTION" not in loop
    assert "hidden tests ran here" in loop                           # the hidden tests' code is not shown
    assert "tiny_net(seed, input_size=w)" not in loop and "LayerGradCam(net, get_layer(net, layer))" in loop
