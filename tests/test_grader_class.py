"""Grading a whole class (issue 28): ``python -m grader autograde`` runs the submissions side by side,
in worker processes on this machine or on the workers of a Dask cluster, and one process alone
writes the gradebook.

One small class (exercise 04: a reference, a partial and a broken answer) is graded three ways:
inside nbgrader one at a time (``--workers 0``, the old path), by two local worker processes, and
on a real Dask cluster on 127.0.0.1 (a scheduler and two ``dask worker`` processes) after two
submissions changed, with one worker killed in the middle of a job (their answers are ones graded one
at a time before). Every grade and every feedback page must be the same. The attack fixtures of
``test_grader_attacks.py`` are graded there in one parallel batch (two workers): a hostile
submission beside an honest one changes nothing in its result. And a grading side that cannot grade (limits too tight to start Python, a reference solution
that fails its own tests, a Python the sandbox cannot run) stops before any grade is written.
"""
from __future__ import annotations

import csv
import html
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import pytest

from test_exercises import (  # noqa: F401 - grader_ready is a fixture
    CAM, EXERCISES, GRADER_BIN, LIMITS, PARTIAL_GRAD_CAM_BUG, _answers, _env, grader_ready, limits, nbgrader,
    proc_table, submit)

sys.path.insert(0, str(EXERCISES))

BROKEN = "def cam(model, x, target=None):\n    raise ValueError('not yet')\n"
SCORES = {"alice": 8, "bob": 3, "carol": 5}            # reference, Grad-CAM without its ReLU, cam raises
LATER = {"bob": 8, "dave": 3}                          # bob fixed his Grad-CAM; dave came late


def _course(tmp: Path, name: str) -> tuple[Path, dict]:
    course = tmp / name
    shutil.copytree(EXERCISES / "source" / CAM, course / "source" / CAM)
    nbgrader(course, "generate_assignment", "*", "--force")
    ref = _answers(nbformat.read(course / "source" / CAM / f"{CAM}.ipynb", as_version=4))
    answers = {"alice": ref, "bob": {**ref, "grad_cam": ref["grad_cam"].replace(*PARTIAL_GRAD_CAM_BUG)},
               "carol": {**ref, "cam": BROKEN}, "dave": {**ref, "grad_cam": ref["grad_cam"].replace(
                   *PARTIAL_GRAD_CAM_BUG)}, "bob-fixed": ref}
    return course, answers


def _autograde(course: Path, *args: str, wait: bool = True, timeout: int = 900):
    cmd = [str(GRADER_BIN / "python"), "-m", "grader", "autograde", "*", f"--CourseDirectory.root={course}",
           *limits(LIMITS), "--no-progress", *args]
    proc = subprocess.Popen(cmd, cwd=EXERCISES, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
    if not wait:
        return proc
    out, _ = proc.communicate(timeout=timeout)
    return subprocess.CompletedProcess(cmd, proc.returncode, out, "")


def _grades(course: Path) -> dict[str, float]:
    nbgrader(course, "export", f"--to={course / 'grades.csv'}")
    with open(course / "grades.csv") as f:
        rows = list(csv.DictReader(f))
    assert len({r["student_id"] for r in rows}) == len(rows), rows      # one row per student: none twice
    return {r["student_id"]: float(r["score"]) for r in rows}


def _feedback(course: Path) -> dict[str, str]:
    """Every student's feedback page as text (only the time of generation removed)."""
    nbgrader(course, "generate_feedback", "*", "--force")
    out = {}
    for page in sorted((course / "feedback").glob(f"*/{CAM}/{CAM}.html")):
        text = html.unescape(re.sub(r"<[^>]+>", " ", page.read_text(errors="replace")))
        out[page.parts[-3]] = " ".join(re.sub(r"Timestamp: [^\n]*", "", text).split())
    return out


def _gradebook_rows(course: Path) -> int:
    import sqlite3

    with sqlite3.connect(course / "gradebook.db") as db:
        return db.execute("select count(*) from submitted_assignment").fetchone()[0]


# --------------------------------------------------------------------------- one at a time, and two workers

@pytest.fixture(scope="module")
def graded(tmp_path_factory, grader_ready):
    tmp = tmp_path_factory.mktemp("class")
    runs = {}
    for name, workers in (("one_at_a_time", "0"), ("pool", "2")):
        course, answers = _course(tmp, name)
        for s in SCORES:
            submit(course, s, CAM, answers[s])
        t = time.monotonic()
        proc = _autograde(course, "--workers", workers)
        assert proc.returncode == 0, proc.stdout[-6000:]
        runs[name] = {"course": course, "answers": answers, "log": proc.stdout, "seconds": time.monotonic() - t}
    return runs


def test_parallel_grades_and_feedback_equal_one_at_a_time(graded):
    one, pool = graded["one_at_a_time"], graded["pool"]
    assert _grades(one["course"]) == _grades(pool["course"]) == SCORES
    assert _feedback(one["course"]) == _feedback(pool["course"])
    assert re.search(r"3 notebook\(s\) to run, [01] reference solution\(s\) to check first, on 2 worker", pool["log"])
    assert "No result from a grading worker" not in pool["log"]        # nbgrader ran none of them again
    for line in ("graded     3 of 3", "refused    0", "crashed    0", "slowest"):
        assert f"autograde: {line}" in pool["log"], pool["log"][-3000:]
    assert re.search(r"autograde: run +3 notebook\(s\) in \d+ s on 2 worker process\(es\) on this machine: "
                     r"[\d.]+ per minute", pool["log"]), pool["log"][-3000:]
    print({k: round(v["seconds"], 1) for k, v in graded.items()})


def test_a_second_run_grades_only_what_changed(graded):
    course = graded["pool"]["course"]
    proc = _autograde(course, "--workers", "2")
    assert proc.returncode == 0 and "all 3 submission(s) are graded and unchanged" in proc.stdout, proc.stdout
    assert not list((course / ".grader-results").glob("*.json"))[1:], "only graded.json stays"


# --------------------------------------------------------------------------- a Dask cluster, one worker killed

def _busy_worker(nannies: list[int]) -> int | None:
    """The pid of a Dask worker process (a child of one of these nannies) that is running a sandbox."""
    procs = proc_table()
    workers = {pid for pid, (ppid, _) in procs.items() if ppid in nannies}
    for pid, (ppid, cmd) in procs.items():
        if "grader.judge" in cmd:
            p = ppid
            while p in procs and p > 1:
                if p in workers:
                    return p
                p = procs[p][0]
    return None


@pytest.fixture(scope="module")
def cluster(tmp_path_factory, grader_ready):
    tmp = tmp_path_factory.mktemp("dask")
    env = dict(_env(), PYTHONPATH=str(EXERCISES))
    dask = str(GRADER_BIN / "dask")
    started = []
    try:
        started.append(subprocess.Popen([dask, "scheduler", "--host", "127.0.0.1", "--port", "0", "--no-dashboard",
                                         "--scheduler-file", str(tmp / "scheduler.json")], cwd=EXERCISES, env=env,
                                        stdout=open(tmp / "scheduler.log", "w"), stderr=subprocess.STDOUT))
        for _ in range(300):
            if (tmp / "scheduler.json").exists():
                break
            time.sleep(0.1)
        address = json.loads((tmp / "scheduler.json").read_text())["address"]
        for i in range(2):
            started.append(subprocess.Popen([dask, "worker", address, "--nthreads", "1", "--nworkers", "1",
                                             "--no-dashboard", "--name", f"w{i}"], cwd=EXERCISES, env=env,
                                            stdout=open(tmp / f"worker{i}.log", "w"), stderr=subprocess.STDOUT))
        yield {"address": address, "nannies": [p.pid for p in started[1:]], "logs": tmp}
    finally:
        for p in reversed(started):
            p.send_signal(signal.SIGTERM)
        for p in started:
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                p.kill()


def test_a_dask_cluster_grades_the_same_with_a_worker_killed_mid_job(graded, cluster):
    one = graded["one_at_a_time"]
    course = graded["pool"]["course"]
    answers = graded["pool"]["answers"]
    for s, key in (("bob", "bob-fixed"), ("dave", "dave")):             # a changed and a new submission
        submit(course, s, CAM, answers[key])
    proc = _autograde(course, "--scheduler", cluster["address"], wait=False)
    killed = None
    deadline = time.monotonic() + 300
    while killed is None and time.monotonic() < deadline and proc.poll() is None:
        killed = _busy_worker(cluster["nannies"])
        time.sleep(0.2)
    assert killed, "no Dask worker was seen running a sandbox"
    os.kill(killed, signal.SIGKILL)                                      # in the middle of its job
    out, _ = proc.communicate(timeout=900)
    assert proc.returncode == 0, out[-6000:]
    # (the pool run above checked this exercise's reference with these limits: normally nothing to check again)
    assert re.search(r"2 notebook\(s\) to run, [01] reference solution\(s\) to check first, on the Dask cluster",
                     out), out[-3000:]
    assert "graded     2 of 2" in out and "crashed    0" in out, out[-3000:]
    assert f":{killed}" not in out.split("autograde: slowest")[1]       # its job was run again elsewhere
    assert "No result from a grading worker" not in out
    # the same answers were graded inside nbgrader, one at a time, by the first fixture: bob's new notebook
    # holds alice's answers, dave's those of bob's first one
    assert answers["bob-fixed"] == answers["alice"] and answers["dave"] == answers["bob"]
    assert _grades(course) == {**SCORES, **LATER} and _grades(one["course"]) == SCORES
    assert _gradebook_rows(course) == 4                                   # one submission each: none twice
    cluster_pages, local = _feedback(course), _feedback(one["course"])
    assert cluster_pages == {**local, "bob": local["alice"], "dave": local["bob"]}
    restarted = "".join((cluster["logs"] / f"worker{i}.log").read_text(errors="replace") for i in range(2))
    assert re.search(r"[Rr]estarting worker|Worker process \d+ was killed", restarted), restarted[-3000:]


# --------------------------------------------------------------------------- the grading side broken

def test_a_grading_side_that_cannot_grade_stops_before_any_grade(grader_ready, tmp_path):
    course, answers = _course(tmp_path, "broken_side")
    submit(course, "alice", CAM, answers["alice"])
    # the sandboxes cannot even start Python with 1 MiB of data memory: the reference solution fails first
    proc = _autograde(course, "--workers", "2", "--SandboxedExecute.memory_mb=1")
    assert proc.returncode == 2, proc.stdout[-4000:]
    assert "the grading side cannot grade" in proc.stdout and "no grade was written" in proc.stdout
    assert "the test process could not start" in proc.stdout           # (the reference's job or alice's: first)
    assert not (course / "autograded").exists() and _gradebook_rows(course) == 0


def test_a_reference_solution_that_fails_its_own_tests_stops_before_any_grade(grader_ready, tmp_path):
    course, answers = _course(tmp_path, "bad_reference")
    submit(course, "alice", CAM, answers["alice"])
    source = course / "source" / CAM / f"{CAM}.ipynb"          # the instructor's Grad-CAM loses its ReLU
    nb = nbformat.read(source, as_version=4)
    cells = [c for c in nb.cells if c.metadata.get("nbgrader", {}).get("grade_id") == "grad_cam"]
    assert len(cells) == 1 and PARTIAL_GRAD_CAM_BUG[0] in cells[0].source
    cells[0].source = cells[0].source.replace(*PARTIAL_GRAD_CAM_BUG)
    nbformat.write(nb, source)
    proc = _autograde(course, "--workers", "1")                 # (a new source: never checked before)
    assert proc.returncode == 2, proc.stdout[-4000:]
    assert "1 reference solution(s) to check first" in proc.stdout, proc.stdout[-4000:]
    assert re.search(r"the grading side cannot grade: the reference solution of ex04_cam does not pass its own "
                     r"tests when graded: test_grad_cam_\w+: ", proc.stdout), proc.stdout[-4000:]
    assert not (course / "autograded").exists() and _gradebook_rows(course) == 0


def test_a_course_python_that_cannot_start_in_the_sandbox_stops_everything(grader_ready, tmp_path):
    course, answers = _course(tmp_path, "no_python")
    submit(course, "alice", CAM, answers["alice"])
    fake = tmp_path / "venv" / "bin"
    fake.mkdir(parents=True)
    (fake / "python").symlink_to("/nonexistent/python3")
    env = dict(_env(), COURSE_PYTHON=str(fake / "python"))
    proc = subprocess.run([str(GRADER_BIN / "python"), "-m", "grader", "autograde", "*",
                           f"--CourseDirectory.root={course}", "--no-progress"], cwd=EXERCISES, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and "the grading side cannot grade" in proc.stderr, proc.stdout + proc.stderr
    assert not (course / "autograded").exists() and _gradebook_rows(course) == 0


def test_a_course_venv_reached_through_a_symlink_runs_in_the_sandbox(grader_ready, tmp_path):
    link = tmp_path / "linked-venv"                   # (was: "bwrap: execvp .../.venv/bin/python: No such file")
    link.symlink_to(EXERCISES.parent / ".venv")
    env = dict(_env(), COURSE_PYTHON=str(link / "bin" / "python"))
    proc = subprocess.run([str(GRADER_BIN / "python"), "-m", "grader", "check"], cwd=EXERCISES, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0 and "sandbox: ok" in proc.stdout, proc.stdout + proc.stderr


# --------------------------------------------------------------------------- the driver's options

def test_pool_options_and_default_workers(grader_ready):
    from grader.__main__ import _execute_settings, _pool_args
    from grader.pool import default_workers

    assert _pool_args(["*", "--workers", "3", "--force"]) == (3, None, True, ["*", "--force"])
    assert _pool_args(["*", "--scheduler=tcp://h:8786", "--no-progress"]) == (None, "tcp://h:8786", False, ["*"])
    with pytest.raises(ValueError, match="takes a number"):
        _pool_args(["--workers", "many"])
    assert _execute_settings(["--SandboxedExecute.timeout=60", "--force"]) == {"timeout": 60}
    cores = len(os.sched_getaffinity(0))
    assert 1 <= default_workers() <= cores
    assert default_workers(memory_mb=1 << 30) == 1                   # a TiB per sandbox: one at a time
