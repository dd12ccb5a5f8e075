"""Collecting submissions (``python -m grader collect``, used by ``make autograde SUBMISSIONS=...``):
regular files only, never through a link, unsafe ids refused with a reason, and nothing a
hostile submission contains reaches another student's folder or anything outside the
destination."""
import json
import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "exercises"))
from grader import collect as C  # noqa: E402
from grader.__main__ import main as grader_main  # noqa: E402

EX = "ex04_cam"


def _submit(root: Path, student: str, content: bytes = b'{"cells": []}', name: str = f"{EX}.ipynb") -> Path:
    folder = root / student / EX
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_bytes(content)
    return folder / name


@pytest.fixture
def hostile(tmp_path):
    src, outside = tmp_path / "collected", tmp_path / "outside"
    outside.mkdir()
    secret = outside / "secret.txt"
    secret.write_text("instructor's secret\n")
    _submit(src, "alice", b"alice's notebook")
    (src / "alice" / EX / "timestamp.txt").write_text("2026-12-01 10:00:00")
    (src / "linkfile" / EX).mkdir(parents=True)
    os.symlink(secret, src / "linkfile" / EX / f"{EX}.ipynb")  # a link to a host file
    os.symlink(src / "alice", src / "linkdir")  # a whole student folder as a link to another's
    (src / "linkex").mkdir()
    os.symlink(src / "alice" / EX, src / "linkex" / EX)  # an exercise folder as a link
    (src / "fifo" / EX).mkdir(parents=True)
    os.mkfifo(src / "fifo" / EX / f"{EX}.ipynb")  # would hang a plain copy
    (src / "devzero" / EX).mkdir(parents=True)
    os.symlink("/dev/zero", src / "devzero" / EX / f"{EX}.ipynb")
    for bad in ("[r]ef04", "*", ".hidden", "=2+5", "ref01 ", "bad\u00ff"):
        _submit(src, bad, b"x")
    _submit(src, "bob", b"bob's notebook")
    return src, outside, secret


def test_only_regular_files_of_safe_ids_are_collected(hostile, tmp_path):
    src, outside, secret = hostile
    dest = tmp_path / "submitted"
    copied, report = C.collect(src, dest)
    assert copied == 3  # alice's notebook and timestamp, bob's notebook
    assert (dest / "alice" / EX / f"{EX}.ipynb").read_bytes() == b"alice's notebook"
    assert (dest / "bob" / EX / f"{EX}.ipynb").read_bytes() == b"bob's notebook"
    assert sorted(p.name for p in dest.iterdir()) == ["alice", "bob"]
    for path in dest.rglob("*"):
        assert not path.is_symlink() and (path.is_dir() or path.is_file())
    text = "\n".join(report)
    assert "linkfile/ex04_cam/'ex04_cam.ipynb' refused: a symbolic link" in text
    assert "student 'linkdir' refused: a symbolic link, not a folder" in text
    assert "linkex/'ex04_cam' refused: a symbolic link, not a folder" in text
    assert "fifo/ex04_cam/'ex04_cam.ipynb' refused: a FIFO" in text
    assert "devzero/ex04_cam/'ex04_cam.ipynb' refused: a symbolic link" in text
    for bad in ("[r]ef04", "*", ".hidden", "=2+5", "ref01 ", "bad\u00ff"):
        assert f"student id {bad!r} refused" in text
    assert secret.read_text() == "instructor's secret\n"


def test_a_link_planted_in_the_destination_is_replaced_not_written_through(hostile, tmp_path):
    src, outside, secret = hostile
    dest = tmp_path / "submitted"
    (dest / "alice" / EX).mkdir(parents=True)
    os.symlink(secret, dest / "alice" / EX / f"{EX}.ipynb")  # an earlier round left a link to a host file
    os.symlink(outside, dest / "bob")  # and a student folder that points outside
    copied, report = C.collect(src, dest)
    assert secret.read_text() == "instructor's secret\n"
    assert sorted(p.name for p in outside.iterdir()) == ["secret.txt"]
    assert not (dest / "bob").is_symlink() and (dest / "bob" / EX / f"{EX}.ipynb").read_bytes() == b"bob's notebook"
    target = dest / "alice" / EX / f"{EX}.ipynb"
    assert not target.is_symlink() and target.read_bytes() == b"alice's notebook"
    assert any("removed a symbolic link at" in line and line.endswith("before writing there") for line in report)


def test_files_over_the_size_cap_are_refused(tmp_path, monkeypatch):
    monkeypatch.setattr(C, "MAX_FILE_BYTES", 1000)
    src = tmp_path / "collected"
    _submit(src, "big", b"x" * 1001)
    _submit(src, "small", b"x" * 1000)
    copied, report = C.collect(src, tmp_path / "submitted")
    assert copied == 1 and any("big/ex04_cam/'ex04_cam.ipynb' refused" in line and "MiB allowed" in line
                               for line in report)


def test_the_command_reports_and_refuses_a_linked_source(hostile, tmp_path, capsys):
    src, outside, secret = hostile
    dest = tmp_path / "submitted"
    assert grader_main(["collect", str(src), str(dest)]) == 0
    out = capsys.readouterr().out
    assert "collect: 3 files copied" in out and "refused: a FIFO" in out
    os.symlink(src, tmp_path / "link-to-collected")
    assert grader_main(["collect", str(tmp_path / "link-to-collected"), str(dest)]) == 2
    assert "must be a folder (not a link)" in capsys.readouterr().err


def test_scrub_removes_links_and_special_files_already_in_the_submissions(tmp_path, capsys):
    outside = tmp_path / "outside.txt"
    outside.write_text("host file\n")
    sub = tmp_path / "submitted"
    keep = _submit(sub, "alice", b"alice's notebook")
    os.symlink(outside, sub / "alice" / EX / "extra.ipynb")
    (sub / "bob" / EX).mkdir(parents=True)
    os.symlink(keep, sub / "bob" / EX / f"{EX}.ipynb")  # another student's notebook, as a link
    os.symlink(sub / "alice", sub / "carol")  # a linked student folder: removed, not entered
    os.mkfifo(sub / "alice" / EX / "pipe")
    assert grader_main(["scrub", str(sub)]) == 0
    out = capsys.readouterr().out
    assert out.count("scrub: removed a symbolic link") == 3 and out.count("scrub: removed a FIFO") == 1
    assert sorted(str(p.relative_to(sub)) for p in sub.rglob("*")) == [
        "alice", f"alice/{EX}", f"alice/{EX}/{EX}.ipynb", "bob", f"bob/{EX}"]
    assert keep.read_bytes() == b"alice's notebook" and outside.read_text() == "host file\n"
    assert grader_main(["scrub", str(tmp_path / "nothing-there")]) == 0


# --------------------------------------------------------------------------- scrub: ids, timestamps, notes

def test_scrub_moves_unsafe_ids_aside_and_leaves_the_others(tmp_path, capsys):
    sub = tmp_path / "submitted"
    (tmp_path / "source" / EX).mkdir(parents=True)
    keep = _submit(sub, "ref04", b"ref04's notebook")
    for bad in ("[r]ef04", "*", ".hidden", "bad\udcff", "=2+5", "ref01 "):
        _submit(sub, bad, bad.encode("utf-8", "surrogateescape"))
    (sub / "ref04" / "ex99").mkdir()                               # not an exercise of the course
    (sub / "ref04" / "[e]x04_cam").mkdir()                         # a pattern
    assert grader_main(["scrub", str(sub)]) == 0
    out = capsys.readouterr().out
    assert sorted(os.listdir(sub)) == ["ref04"] and os.listdir(sub / "ref04") == [EX]
    assert keep.read_bytes() == b"ref04's notebook"
    refused = tmp_path / "refused"
    for bad, why in (("[r]ef04", "wildcard"), ("*", "wildcard"), (".hidden", "dot"), ("bad\udcff", "ASCII"),
                     ("=2+5", "formula"), ("ref01 ", "space")):
        moved = refused / C.encode_name(bad)
        assert (moved / EX / f"{EX}.ipynb").read_bytes() == bad.encode("utf-8", "surrogateescape")
        assert why in Path(f"{moved}.txt").read_text() and f"student id {bad!r} refused" in out
    assert sorted(os.listdir(refused / "ref04")) == ["%5Be%5Dx04_cam", "%5Be%5Dx04_cam.txt", "ex99", "ex99.txt"]
    assert "not an exercise of this course" in (refused / "ref04" / "ex99.txt").read_text()
    assert len({C.encode_name(n) for n in ("a b", "a%20b", "a_b", ".a", "%2Ea")}) == 5     # distinct stay distinct
    assert grader_main(["scrub", str(sub)]) == 0 and capsys.readouterr().out == ""       # nothing left to do


def test_scrub_sets_an_unreadable_timestamp_aside_with_a_note(tmp_path):
    sub = tmp_path / "submitted"
    nb = _submit(sub, "late", b'{"cells": []}')
    for student, stamp in (("good", "2025-12-01 10:00:00.123456 UTC"), ("empty", "  \n"),
                           ("offset", "2025-12-01 10:00:00 +0100")):
        _submit(sub, student)
        (sub / student / EX / "timestamp.txt").write_text(stamp)
    bad = {"late": "not a date", "zone": "2025-12-01 10:00:00 ../../etc/passwd", "bytes": b"\xff\xfe",
           "huge": "2025-12-01 10:00:00" + " " * 300, "overflow": "9999-12-31 23:59:59 -1400"}
    for student, stamp in bad.items():
        _submit(sub, student)
        path = sub / student / EX / "timestamp.txt"
        path.write_bytes(stamp if isinstance(stamp, bytes) else stamp.encode())
    report = C.scrub(sub)
    for student in ("good", "empty", "offset"):
        assert (sub / student / EX / "timestamp.txt").exists()
        assert not C.notes_file(tmp_path, student, EX).exists()
    for student in bad:
        assert not (sub / student / EX / "timestamp.txt").exists(), student
        assert (tmp_path / "refused" / student / EX / "timestamp.txt").exists()
        assert any(line.startswith(f"{student}/{EX}: 'timestamp.txt' refused") for line in report)
    sha = C.sha256_file(nb)
    notes = C.grader_notes(tmp_path, "late", EX, f"{EX}.ipynb", sha)
    assert len(notes) == 1 and notes[0].startswith("Your timestamp.txt could not be read (`not a date` is not")
    assert C.grader_notes(tmp_path, "late", EX, f"{EX}.ipynb", "another notebook") == []   # a new submission
    assert C.grader_notes(tmp_path, "../late", EX, f"{EX}.ipynb", sha) == []
    (sub / "late" / EX / "timestamp.txt").write_text("2025-12-01 10:00:00")               # fixed: note gone
    C.scrub(sub)
    assert C.grader_notes(tmp_path, "late", EX, f"{EX}.ipynb", sha) == []


# --------------------------------------------------------------------------- autograde: a grade for everyone

FAKE_NBGRADER = r'''
import json, os, sys
from fnmatch import fnmatchcase
from pathlib import Path
args = sys.argv[1:]
opts = dict(a[2:].split("=", 1) for a in args if a.startswith("--") and "=" in a)
root = Path(opts["CourseDirectory.root"])
pattern = [a for a in args[1:] if not a.startswith("-")][0]
student = opts.get("CourseDirectory.student_id", "*")
exclude = set(opts.get("CourseDirectory.student_id_exclude", "").split(","))
mode = os.environ["FAKE_NBGRADER"]
status = 0
for folder in sorted((root / "submitted").glob(f"{student}/{pattern}")):
    s, a = folder.parts[-2:]
    if s in exclude:
        continue
    nb = folder / f"{a}.ipynb"
    if not nb.exists():
        continue
    out = root / "autograded" / s / a / f"{a}.ipynb"
    if out.exists() and "--force" not in args:
        continue
    if mode == "fail-all" or "CRASH" in nb.read_text():
        print(f"[AutogradeApp | ERROR] There was an error processing assignment: {folder}")
        print("[AutogradeApp | ERROR] Traceback (most recent call last):\n    RuntimeError: it crashed\n")
        status = 1
        continue
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(nb.read_text())
sys.exit(status)
'''


@pytest.fixture
def fake_course(tmp_path, monkeypatch):
    root = tmp_path / "course"
    (root / "source" / EX).mkdir(parents=True)
    (root / "source" / EX / f"{EX}.ipynb").write_text("{}")
    _submit(root / "submitted", "honest", b'{"cells": [], "answer": "honest"}')
    _submit(root / "submitted", "crash", b'{"cells": [], "answer": "CRASH"}')
    (root / "submitted" / "crash" / EX / "timestamp.txt").write_text("yesterday")
    fake = tmp_path / "fake_nbgrader.py"
    fake.write_text(FAKE_NBGRADER)
    monkeypatch.setitem(sys.modules, "nbgrader.api", None)                  # the files are the record here
    from grader.__main__ import autograde

    def run(mode, *args):
        monkeypatch.setenv("FAKE_NBGRADER", mode)
        return autograde([EX, f"--CourseDirectory.root={root}", *args], nbgrader=[sys.executable, str(fake)])
    return root, run


def test_a_submission_the_grader_fails_on_is_graded_as_empty_with_the_reason(fake_course, capsys):
    root, run = fake_course
    assert run("crash-marked") == 0
    out = capsys.readouterr().out
    assert (root / "autograded" / "honest" / EX / f"{EX}.ipynb").read_text() == '{"cells": [], "answer": "honest"}'
    graded = json.loads((root / "autograded" / "crash" / EX / f"{EX}.ipynb").read_text())
    assert graded["cells"] == [] and "answer" not in graded                 # the empty notebook
    original = root / "refused" / "crash" / EX / f"{EX}.ipynb"
    assert "CRASH" in original.read_text() and "RuntimeError: it crashed" in Path(f"{original}.txt").read_text()
    sha = C.sha256_file(root / "submitted" / "crash" / EX / f"{EX}.ipynb")
    notes = C.grader_notes(root, "crash", EX, f"{EX}.ipynb", sha)
    assert len(notes) == 2                                                   # the timestamp and the failure
    assert any(n.startswith("The grading program failed on your notebook (`RuntimeError: it crashed`)")
               for n in notes)
    assert "crash/ex04_cam: graded as an empty notebook" in out and "2 of 2 submissions have a grade" in out
    assert run("crash-marked") == 0                                          # a second run: nothing to do
    assert "running nbgrader autograde ex04_cam" in capsys.readouterr().out


def test_a_failure_on_the_grading_side_puts_every_submission_back(fake_course, capsys):
    root, run = fake_course
    assert run("fail-all") == 1                                              # nothing graded: nothing moved
    assert "none of the 2 submissions could be graded" in capsys.readouterr().err
    assert "CRASH" in (root / "submitted" / "crash" / EX / f"{EX}.ipynb").read_text()
    assert run("fail-all", "--student=crash") == 1                           # one student: tried empty, put back
    assert "could not be graded even as an empty notebook" in capsys.readouterr().err
    assert "CRASH" in (root / "submitted" / "crash" / EX / f"{EX}.ipynb").read_text()
    assert not list((root / "refused" / "crash" / EX).glob(f"{EX}*"))
    sha = C.sha256_file(root / "submitted" / "crash" / EX / f"{EX}.ipynb")
    notes = C.grader_notes(root, "crash", EX, f"{EX}.ipynb", sha)            # only the timestamp's, as before
    assert len(notes) == 1 and notes[0].startswith("Your timestamp.txt could not be read")
