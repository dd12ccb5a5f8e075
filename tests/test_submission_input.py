"""Hostile or broken submission *files* (issue 13: items 6, 7 and 9, and the 12 MB cell), graded
in one batch with an honest submission, as ``make autograde`` does it (``python -m grader
autograde``: scrub, ``nbgrader autograde``, then a grade for every submission), then
``nbgrader export`` and ``generate_feedback`` as ``make grades`` does.

* ``html``: markdown cells with ``<script>``, ``<img onerror>``, ``javascript:`` links and maths,
  a fence that tries to close the verbatim block, a forged grade cell whose ``grade_id`` has a
  backtick and markup, and planted ``metadata.grader.notes``: in the feedback the marker is text
  only, in no tag and no attribute. Reference answers: 8 / 8.
* ids already in ``submitted/``: ``[r]ef04`` and ``*`` (nbgrader globs them: they would grade
  ``ref04``'s notebook in their run, and ``ref04`` would then be skipped), ``.hidden``,
  ``bad\\xff``, ``=2+5``, ``ref01 `` (beside an honest ``ref01``), and ``ref04/ex99`` (not an
  exercise): moved to ``refused/`` with the reason; ``ref04`` scores 8 / 8 with its own notebook.
* driver crashes: ``ref01`` plants ``metadata.grader.notes = [1]``; ``gidlist`` has a list as the
  ``grade_id`` of its ``cam`` cell, ``nbstr`` a string as the nbgrader metadata of its ``grad_cam``
  cell; ``nested`` a value nested 900 deep; ``timestamp`` an unreadable ``timestamp.txt``; ``crash``
  a notebook the driver fails on (simulated by a test-only plug-in): each gets a grade and the
  reason in its feedback.
* ``big``: a 12 MB answer cell (under the 64 MiB file limit): that cell is graded as empty, and
  the feedback says so (not "crashed").
"""
from __future__ import annotations

import csv
import html
import json
import os
import re
import shutil
import subprocess
import sys
import time
from html.parser import HTMLParser
from pathlib import Path

import nbformat
import pytest

from test_exercises import (  # noqa: F401 - grader_ready is a fixture
    CAM, EXERCISES, GRADER_BIN, LIMITS, _answers, _env, _run, autograded, grader_ready, limits, nbgrader, submit)

sys.path.insert(0, str(EXERCISES))
from grader.collect import encode_name  # noqa: E402

MARK = "XSS-7f3a9c"
CRASH = "CRASH-THE-GRADING-DRIVER"
#: student -> (score of exercise 04, what its feedback must say)
EXPECTED = {
    "ref04": (8, None),
    "html": (8, "was kept as an ordinary cell (no points)"),
    "ref01": (3, "The grader's metadata in your notebook (metadata.grader) was ignored"),
    "gidlist": (5, "The grade_id of cell {cam} of your notebook is a list, not a short string; the cell was left out."),
    "nbstr": (3, "The nbgrader metadata of cell {grad_cam} of your notebook is a string, not a mapping; "
                 "the cell was left out."),
    "nested": (8, "1 value(s) in your notebook file were nested 905 levels deep, more than the 64 allowed; "
                  "they were dropped."),
    "timestamp": (8, "Your timestamp.txt could not be read (not a date! is not a date and time"),
    "big": (5, "Your answer cell cam is 12.0 MiB, more than the 1.0 MiB allowed for one cell; "
               "it was graded as empty."),
    "crash": (0, "The grading program failed on your notebook (RuntimeError: simulated failure of the grading "
                 "driver); your notebook was set aside for your instructor"),
}
REFUSED = {"[r]ef04": "wildcard", "*": "wildcard", ".hidden": "starts with a dot", "bad\udcff": "not printable ASCII",
           "=2+5": "formula", "ref01 ": "space"}

#: a test-only nbgrader configuration: the course's, plus a plug-in that fails on a marked notebook
#: (the driver failing on a submission, whatever the cause: the last line of defence is tested)
CRASH_CONFIG = f'''
import sys
sys.path.insert(0, {str(EXERCISES)!r})
load_subconfig({str(EXERCISES / "nbgrader_config.py")!r})
from nbgrader.preprocessors import NbGraderPreprocessor

class FailOnMarker(NbGraderPreprocessor):
    def preprocess(self, nb, resources):
        if any({CRASH!r} in cell.source for cell in nb.cells):
            raise RuntimeError("simulated failure of the grading driver")
        return nb, resources

c.Autograde.sanitize_preprocessors = [*c.Autograde.sanitize_preprocessors, FailOnMarker]
'''


def _mark(student: str) -> str:
    return f"# answer of {student!r}\n"


def _gid(cell):
    meta = cell.get("metadata", {}).get("nbgrader", {})
    return meta.get("grade_id") if isinstance(meta, dict) else None


def _html_attack(nb) -> None:
    at = [i for i, c in enumerate(nb.cells) if _gid(c) == "cam"][0] + 1
    for text in (f"<script>alert('{MARK}')</script>",
                 f"<img src=x onerror=\"alert('{MARK}')\"> and <svg onload=alert('{MARK}')>",
                 f"[click](javascript:alert('{MARK}')) <a href=\"javascript:alert('{MARK}')\">x</a>",
                 f"![x](x\" onerror=\"alert('{MARK}'))  $\\href{{javascript:alert('{MARK}')}}{{x}}$",
                 f"~~~~~~~~\n</code></pre><script>{MARK}</script>\n~~~~~~~~",
                 f"<style>body {{ background: url({MARK}) }}</style><iframe srcdoc=\"{MARK}\"></iframe>",
                 f"&lt;script&gt;{MARK} <!-- {MARK} -->"):
        nb.cells.insert(at, nbformat.v4.new_markdown_cell(text))
    forged = nbformat.v4.new_code_cell("print('free points')")
    forged.metadata["nbgrader"] = {"grade": True, "solution": False, "locked": True, "points": 5,
                                   "grade_id": f"x`<img src=x onerror=alert('{MARK}')>`<script>{MARK}</script>"}
    nb.cells.append(forged)
    nb.metadata["grader"] = {**nb.metadata.get("grader", {}),
                             "notes": [f"<script>{MARK}</script>", f"`<img src=x onerror=alert('{MARK}')>`"]}


def _set(grade_id: str, key: str, value):
    def edit(nb):
        for c in nb.cells:
            if _gid(c) == grade_id:
                if key == "nbgrader":
                    c.metadata["nbgrader"] = value
                else:
                    c.metadata["nbgrader"][key] = value
    return edit


def _plant_notes(nb) -> None:
    nb.metadata["grader"] = {**nb.metadata.get("grader", {}), "notes": [1]}


def _wrapper(course: Path, cwd: Path, *args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    env = dict(_env(), PYTHONPATH=str(EXERCISES))
    proc = subprocess.run([str(GRADER_BIN / "python"), "-m", "grader", "autograde", *args,
                           f"--CourseDirectory.root={course}"], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout)
    return proc


@pytest.fixture(scope="module")
def batch(tmp_path_factory, grader_ready):
    tmp = tmp_path_factory.mktemp("submission-input")
    course = tmp / "course"
    shutil.copytree(EXERCISES / "source" / CAM, course / "source" / CAM)
    timings = {}
    t = time.monotonic()
    nbgrader(course, "generate_assignment", CAM, "--force")
    timings["release"] = time.monotonic() - t
    ref = _answers(nbformat.read(course / "source" / CAM / f"{CAM}.ipynb", as_version=4))

    def answers(student, cam=True, grad_cam=True, extra=""):
        out = {}
        if cam:
            out["cam"] = _mark(student) + ref["cam"] + extra
        if grad_cam:
            out["grad_cam"] = _mark(student) + ref["grad_cam"]
        return out

    submit(course, "ref04", CAM, answers("ref04"))
    submit(course, "html", CAM, answers("html", extra=f"\n# </script><script>alert('{MARK}')</script>\n"),
           edit=_html_attack)
    submit(course, "ref01", CAM, answers("ref01", grad_cam=False), edit=_plant_notes)
    submit(course, "gidlist", CAM, answers("gidlist"), edit=_set("cam", "grade_id", ["cam"]))
    submit(course, "nbstr", CAM, answers("nbstr"), edit=_set("grad_cam", "nbgrader", "solution"))
    submit(course, "nested", CAM, answers("nested"), edit=_set("cam", "deep", "NESTED-HERE"))
    nested = course / "submitted" / "nested" / CAM / f"{CAM}.ipynb"
    nested.write_text(nested.read_text().replace('"NESTED-HERE"', "[" * 900 + "0" + "]" * 900))
    submit(course, "timestamp", CAM, answers("timestamp"))
    (course / "submitted" / "timestamp" / CAM / "timestamp.txt").write_text("not a date!")
    submit(course, "big", CAM, answers("big", extra="\n# " + "x" * (12 << 20) + "\n"))
    submit(course, "crash", CAM, answers("crash", extra=f"\n# {CRASH}\n"))
    for bad in REFUSED:
        submit(course, bad, CAM, answers(bad))
    (course / "submitted" / "ref04" / "ex99").mkdir()
    (course / "submitted" / "ref04" / "ex99" / "ex99.ipynb").write_text("{}")

    cwd = tmp / "config"
    cwd.mkdir()
    (cwd / "nbgrader_config.py").write_text(CRASH_CONFIG)
    t = time.monotonic()
    proc = _wrapper(course, cwd, CAM, *limits(LIMITS))
    timings["autograde"] = time.monotonic() - t
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-8000:]
    t = time.monotonic()
    nbgrader(course, "export", f"--to={course / 'grades.csv'}")
    nbgrader(course, "generate_feedback", "*", "--force")
    timings["export+feedback"] = time.monotonic() - t
    return {"course": course, "log": proc.stdout + proc.stderr, "timings": timings}


def _feedback(course: Path, student: str) -> str:
    return (course / "feedback" / student / CAM / f"{CAM}.html").read_text(errors="replace")


def _text(page: str) -> str:
    return html.unescape(re.sub(r"<[^>]+>", "", page))


def test_every_safe_submission_has_its_grade_and_no_other_id_is_listed(batch):
    with open(batch["course"] / "grades.csv") as f:
        rows = list(csv.DictReader(f))
    got = {r["student_id"]: float(r["score"]) for r in rows}
    assert got == {s: float(score) for s, (score, _) in EXPECTED.items()}, batch["log"][-5000:]
    assert all(r["assignment"] == CAM and float(r["max_score"]) == 8.0 for r in rows)
    print("\nphases:", batch["timings"])


def test_every_feedback_says_what_happened(batch):
    release = nbformat.read(batch["course"] / "release" / CAM / f"{CAM}.ipynb", as_version=4)
    position = {_gid(c): i for i, c in enumerate(release.cells, 1)}
    for student, (score, note) in EXPECTED.items():
        text = " ".join(_text(_feedback(batch["course"], student)).split())
        assert f"Score: {float(score)} / 8.0" in text, student
        if note:
            assert note.format(**position) in text, (student, text[:3000])
    assert "crashed" not in _text(_feedback(batch["course"], "big"))
    assert "ended early" not in _text(_feedback(batch["course"], "big"))


def test_no_submission_is_graded_with_another_students_notebook(batch):
    course = batch["course"]
    for student in EXPECTED:
        nb = autograded(course, student)
        answers = "\n".join(c.source for c in nb.cells if _gid(c) in ("cam", "grad_cam"))
        found = set(re.findall(r"# answer of ('.*?')\n", answers))
        assert found <= {repr(student)}, (student, found)
        if student != "crash":
            assert found == {repr(student)}, student
    assert not (course / "autograded" / "ref04" / "ex99").exists()


def test_unsafe_ids_are_moved_aside_with_the_reason(batch):
    course = batch["course"]
    assert sorted(os.listdir(course / "submitted")) == sorted(EXPECTED)
    assert sorted(os.listdir(course / "autograded")) == sorted(EXPECTED)
    for bad, why in REFUSED.items():
        moved = course / "refused" / encode_name(bad)
        assert (moved / CAM / f"{CAM}.ipynb").exists(), bad
        reason = Path(f"{moved}.txt").read_text()
        assert f"student id {bad!r} refused" in reason and why in reason, reason
        assert f"student id {bad!r} refused" in batch["log"]
    assert "not an exercise of this course" in (course / "refused" / "ref04" / "ex99.txt").read_text()


def test_the_driver_failing_on_a_submission_costs_that_submission_only(batch):
    course = batch["course"]
    original = course / "refused" / "crash" / CAM / f"{CAM}.ipynb"
    assert CRASH in original.read_text()                                 # kept for the instructor
    assert "nbgrader failed on it" in Path(f"{original}.txt").read_text()
    assert json.loads((course / "submitted" / "crash" / CAM / f"{CAM}.ipynb").read_text())["cells"] == []
    assert "crash/ex04_cam: graded as an empty notebook" in batch["log"]


def test_an_unreadable_timestamp_is_set_aside_with_a_note(batch):
    course = batch["course"]
    assert not (course / "submitted" / "timestamp" / CAM / "timestamp.txt").exists()
    assert (course / "refused" / "timestamp" / CAM / "timestamp.txt").read_text() == "not a date!"
    notes = json.loads((course / ".grader-notes" / "timestamp" / f"{CAM}.json").read_text())["notes"]
    assert [n["kind"] for n in notes] == ["timestamp"]


def test_planted_notes_are_ignored(batch):
    for student in ("ref01", "html"):
        notes = autograded(batch["course"], student).metadata["grader"]["notes"]
        assert all(isinstance(n, str) for n in notes)
        assert not any(n.startswith("<script>") or n == 1 for n in notes)
        assert any("metadata.grader" in n for n in notes)


class _Tags(HTMLParser):
    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.open, self.in_markup, self.as_text = [], [], 0

    def handle_starttag(self, tag, attrs):
        self.open.append(tag)
        for name, value in attrs:
            if MARK in name or MARK in (value or "") or name in ("onerror", "srcdoc"):
                self.in_markup.append((tag, name, value))
            if name in ("href", "src") and (value or "").strip().lower().startswith("javascript:"):
                self.in_markup.append((tag, name, value))
        if MARK in tag or tag == "iframe":
            self.in_markup.append((tag,))

    def handle_endtag(self, tag):
        while self.open and self.open.pop() != tag:
            pass

    def handle_comment(self, data):
        if MARK in data:
            self.in_markup.append(("comment", data))

    def handle_data(self, data):
        if MARK in data:
            if self.open and self.open[-1] in ("script", "style", "textarea", "title"):
                self.in_markup.append((self.open[-1], data[:200]))
            else:
                self.as_text += data.count(MARK)


def test_nothing_from_a_submission_becomes_markup_in_the_feedback(batch):
    for student in EXPECTED:
        page = _feedback(batch["course"], student)
        parser = _Tags()
        parser.feed(page)
        assert not parser.in_markup, (student, parser.in_markup[:5])
        if student == "html":
            assert parser.as_text >= 12                                   # shown, as text
            text = _text(page)
            assert f"<script>alert('{MARK}')</script>" in text           # verbatim
    nb = autograded(batch["course"], "html")                                # the graded notebook too
    outside_code = re.sub(r"`[^`\n]*`", "", nb.cells[0].source)          # the report: markup only in code spans
    assert "<" not in outside_code and MARK not in outside_code
    added = [c for c in nb.cells if c.cell_type == "markdown" and c.metadata.get("grader", {}).get("submitted")]
    assert len(added) == 7 and all(c.source.startswith("~~~") for c in added)


def test_without_scrub_the_rebuild_still_refuses_unsafe_ids(batch):
    """Defence in depth, for ``nbgrader autograde`` run by hand on a folder nobody scrubbed: a
    notebook another folder's name matches as a pattern is not graded in that folder's run (the
    owner's grade stays), and a submission under an unsafe id is graded as an empty notebook, with
    the reason. (Runs last: it adds those ids to the gradebook.)"""
    course = batch["course"]
    victim = course / "autograded" / "ref04" / CAM / f"{CAM}.ipynb"
    before = victim.read_bytes()
    submit(course, "[r]ef04", CAM, {"cam": _mark("[r]ef04")})
    submit(course, "ref01 ", CAM, {"cam": _mark("ref01 ")})
    proc = _run([str(GRADER_BIN / "nbgrader"), "autograde", CAM, *limits(LIMITS),
                 f"--CourseDirectory.root={course}"], 600)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 1 and "is also matched, as a pattern, by the submission folder" in log, log[-3000:]
    assert victim.read_bytes() == before
    assert not (course / "autograded" / "[r]ef04" / CAM).exists()
    notes = autograded(course, "ref01 ").metadata["grader"]["notes"]
    assert notes[0].startswith("This submission was not graded: its student id `ref01 ` is not a safe name "
                               "(it begins or ends with a space)"), notes
