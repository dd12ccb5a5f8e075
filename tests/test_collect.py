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
    assert sorted(p.name for p in dest.iterdir()) == ["alice", "bob", "devzero", "fifo", "linkfile"]
    for student in ("devzero", "fifo", "linkfile"):  # no notebook that may be graded: an empty one, and why
        empty = dest / student / EX / f"{EX}.ipynb"
        assert empty.read_bytes() == C.EMPTY_NOTEBOOK
        notes = C.grader_notes(tmp_path, student, EX, f"{EX}.ipynb", C.sha256_file(empty))
        assert len(notes) == 1 and "graded as an empty notebook" in notes[0] and f"`{EX}.ipynb`" in notes[0]
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
        "alice", f"alice/{EX}", f"alice/{EX}/{EX}.ipynb", "bob", f"bob/{EX}", f"bob/{EX}/{EX}.ipynb"]
    assert keep.read_bytes() == b"alice's notebook" and outside.read_text() == "host file\n"
    assert (sub / "bob" / EX / f"{EX}.ipynb").read_bytes() == C.EMPTY_NOTEBOOK   # bob's was a link: graded empty
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


# --------------------------------------------------------------------------- only the notebook: what is beside it

def _sparse(path: Path, size: int) -> None:
    with open(path, "wb") as f:
        f.truncate(size)


def _beside(folder: Path, deep: bool = True) -> None:
    """What a hostile submission puts beside its notebook: pages with scripts, many files, big files,
    a folder nested deeper than Python's recursion limit."""
    (folder / "index.html").write_text("<script>fetch('../../')</script>")
    (folder / "logo.svg").write_text('<svg onload="alert(1)"/>')
    (folder / ".htaccess").write_text("Options +Indexes")
    (folder / "many").mkdir()
    for i in range(150):
        (folder / "many" / f"{i}.txt").write_text("x")
        (folder / f"note{i:03d}.txt").write_text("x")
    for i in range(5):
        _sparse(folder / f"blob{i}.bin", 32 << 20)
    nested = folder / "deep"
    for _ in range(1100 if deep else 0):
        nested.mkdir()
        nested = nested / "d"


def _sizes(folder: Path) -> tuple[int, int]:
    """(files and folders, apparent bytes) under ``folder``, without the grader's ``<name>.txt`` reasons
    beside what it moved (counted without recursion: a folder may be nested 1100 deep)."""
    entries = [p for p in folder.iterdir() if not (p.suffix == ".txt" and (folder / p.stem).exists())]
    sizes = [C._tree(p)[:2] for p in entries]
    return sum(n for n, _ in sizes), sum(b for _, b in sizes)


@pytest.fixture
def crowded(tmp_path):
    """A submission with :func:`_beside` beside its notebook; afterwards, a folder nested too deep for
    pytest's own clean-up (shutil.rmtree recurses) is removed here, wherever it is."""
    nb = _submit(tmp_path / "submitted", "hostile", b'{"cells": [], "mine": 1}')
    (nb.parent / "timestamp.txt").write_text("2026-01-15 10:00:00 UTC")
    _beside(nb.parent)
    yield nb
    for deep in (nb.parent / "deep", tmp_path / "refused" / "hostile" / EX / "deep"):
        if deep.is_dir() and not deep.is_symlink():
            C._delete(deep)


def test_scrub_leaves_only_the_notebook_and_bounds_what_is_kept_aside(tmp_path, crowded, capsys):
    sub, nb, folder = tmp_path / "submitted", crowded, crowded.parent
    assert grader_main(["scrub", str(sub)]) == 0
    out = capsys.readouterr().out
    assert "'deep' deleted (1100 files or folders" in out                 # 1,100 deep: no RecursionError
    assert sorted(os.listdir(folder)) == [f"{EX}.ipynb", "timestamp.txt"]
    assert nb.read_bytes() == b'{"cells": [], "mine": 1}'
    aside = tmp_path / "refused" / "hostile" / EX
    files, size = _sizes(aside)
    assert 0 < files <= C.MAX_ASIDE_FILES and size <= C.MAX_ASIDE_BYTES
    assert (aside / "index.html").exists() and "not part of a submission" in (aside / "index.html.txt").read_text()
    assert "deleted" in out and "beyond the 100 files or folders and 128 MiB kept aside per submission" in out
    notes = C.grader_notes(tmp_path, "hostile", EX, f"{EX}.ipynb", C.sha256_file(nb))
    assert len(notes) == 1 and "Only the notebook and timestamp.txt of a submission are graded" in notes[0]
    assert "set aside for your instructor" in notes[0]
    assert "deleted: at most 100 files or folders and 128 MiB are kept" in notes[0]
    assert "`index.html`" in notes[0] or "`.htaccess`" in notes[0]
    assert grader_main(["scrub", str(sub)]) == 0 and capsys.readouterr().out == ""       # nothing left to do
    assert C.grader_notes(tmp_path, "hostile", EX, f"{EX}.ipynb", C.sha256_file(nb)) == notes
    _beside(folder, deep=False)                                           # again: the cap counts what is kept
    C.scrub(sub)
    assert _sizes(aside)[0] <= C.MAX_ASIDE_FILES and _sizes(aside)[1] <= C.MAX_ASIDE_BYTES


def _plant(sub: Path, student: str, files: dict[str, bytes | int], age: dict[str, int] | None = None) -> Path:
    """A submission folder with these files (bytes, or a size: a sparse file); ``age``: seconds old."""
    folder = sub / student / EX
    for name, content in files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, int):
            _sparse(folder / name, content)
        else:
            (folder / name).write_bytes(content)
        if age and name in age:
            os.utime(folder / name, (1e9, 1e9 + (10**6 - age[name])))
    return folder


OBVIOUS = {  # student -> (files, their age in seconds, the file graded or None, words the note has)
    "download": ({f"{EX} (1).ipynb": b"1"}, None, f"{EX} (1).ipynb", ["found as `ex04_cam (1).ipynb`"]),
    "renamed": ({"Ex04_Cam.ipynb": b"2"}, None, "Ex04_Cam.ipynb", ["found as `Ex04_Cam.ipynb`"]),
    "unzipped": ({f"{EX}/{EX}.ipynb": b"3", f"{EX}/data.csv": b"x"}, None, f"{EX}/{EX}.ipynb",
                 ["found as `ex04_cam/ex04_cam.ipynb`", "`ex04_cam`"]),
    "several": ({f"{EX}-Copy1.ipynb": b"old", f"upload/{EX}.ipynb": b"new"}, {f"{EX}-Copy1.ipynb": 3600},
                f"upload/{EX}.ipynb", ["the newest, `upload/ex04_cam.ipynb`, was graded", "`ex04_cam-Copy1.ipynb`"]),
    "exact": ({f"{EX}.ipynb": b"exact", f"{EX} (1).ipynb": b"newer"}, {f"{EX}.ipynb": 3600}, f"{EX}.ipynb",
              ["`ex04_cam.ipynb` was graded; the other copies of it (`ex04_cam (1).ipynb`)"]),
    "nothing": ({"notes.txt": b"x", "ex03_saliency.ipynb": b"other"}, None, None,
                ["no notebook `ex04_cam.ipynb` that could be graded", "empty notebook", "`notes.txt`"]),
    "huge": ({f"{EX}.ipynb": C.MAX_FILE_BYTES + 1}, None, None,
             ["has 67,108,865 bytes, more than the 67,108,864 (64 MiB) a notebook may have",
              "So your submission was graded as an empty notebook"]),
    "folder": ({f"{EX}.ipynb/{EX}.ipynb": b"inside"}, None, f"{EX}.ipynb/{EX}.ipynb", ["found as"]),
}


@pytest.mark.parametrize("how", ["scrub", "collect"])
def test_obvious_names_are_found_and_the_feedback_says_which_file_was_graded(tmp_path, how):
    src = tmp_path / ("submitted" if how == "scrub" else "collected")
    contents = {}
    for student, (files, age, graded, _) in OBVIOUS.items():
        folder = _plant(src, student, files, age)
        contents[student] = (folder / graded).read_bytes() if graded else C.EMPTY_NOTEBOOK
    if how == "scrub":
        C.scrub(src)
    else:
        C.collect(src, tmp_path / "submitted")
        assert {p.name for p in (src / "several" / EX).iterdir()} == {f"{EX}-Copy1.ipynb", "upload"}  # untouched
    for student, (files, age, graded, words) in OBVIOUS.items():
        folder = tmp_path / "submitted" / student / EX
        assert os.listdir(folder) == [f"{EX}.ipynb"], student
        assert (folder / f"{EX}.ipynb").read_bytes() == contents[student], student
        notes = C.grader_notes(tmp_path, student, EX, f"{EX}.ipynb", C.sha256_file(folder / f"{EX}.ipynb"))
        assert len(notes) == 1 and all(w in notes[0] for w in words), (student, notes)
    if how == "scrub":                                                   # the others are set aside
        assert (tmp_path / "refused" / "several" / EX / f"{EX}-Copy1.ipynb").read_bytes() == b"old"
        assert (tmp_path / "refused" / "huge" / EX / f"{EX}.ipynb").stat().st_size == C.MAX_FILE_BYTES + 1
        assert (tmp_path / "refused" / "nothing" / EX / "notes.txt").exists()


def test_collect_copies_nothing_beside_the_notebook_and_keeps_one_collected_before(tmp_path):
    src, dest = tmp_path / "collected", tmp_path / "submitted"
    folder = _plant(src, "alice", {f"{EX}.ipynb": b"first", "index.html": b"<script>", "data/x.csv": b"1"})
    copied, report = C.collect(src, dest)
    assert copied == 1 and sorted(os.listdir(dest / "alice" / EX)) == [f"{EX}.ipynb"]
    assert "alice/ex04_cam/'index.html' refused: not part of a submission" in "\n".join(report)
    notes = C.grader_notes(tmp_path, "alice", EX, f"{EX}.ipynb", C.sha256_file(dest / "alice" / EX / f"{EX}.ipynb"))
    assert len(notes) == 1 and "2 (`data`, `index.html`) were not collected" in notes[0]
    (folder / f"{EX}.ipynb").unlink()                                    # a later round without the notebook
    C.collect(src, dest)
    assert (dest / "alice" / EX / f"{EX}.ipynb").read_bytes() == b"first"


def test_the_grader_writes_what_sandboxes_send_as_strict_json():
    """A lone surrogate (a file name that is not UTF-8) or a NaN clock from a sandbox cannot make the
    graded notebook unwritable or not JSON (grader.execute), nor a surrogate in the submission (grader.rebuild)."""
    python = Path(__file__).resolve().parent.parent / "exercises" / ".venv-grader" / "bin" / "python"
    if not python.exists():
        pytest.skip("no grader venv (make grader-setup)")
    code = r'''
import json, math, tempfile, nbformat
from grader.execute import _duration, _strict_json
from grader.rebuild import read_submission
assert [_duration(v) for v in (1.23456, 0, float("nan"), float("inf"), -1.0, True, "3", 10**400, None)] == [
    1.235, 0.0, None, None, None, None, None, None, None]
nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("x", outputs=[
    nbformat.v4.new_output("stream", name="stdout", text="caf\udcff.txt\n")])])
nb.metadata["grader"] = {"cell_seconds": {"student": {"1": float("nan"), "caf\udcff": float("-inf")}}}
_strict_json(nb)
def refuse(c):
    raise ValueError(c)
back = json.loads(nbformat.writes(nb), parse_constant=refuse)
assert "".join(back["cells"][0]["outputs"][0]["text"]) == "caf\ufffd.txt\n"
assert back["metadata"]["grader"]["cell_seconds"]["student"] == {"1": None, "caf\ufffd": None}
with tempfile.NamedTemporaryFile("wb", suffix=".ipynb", delete=False) as f:
    f.write(b'{"cells": [{"cell_type": "code", "source": "# caf\\udcff\\n", "metadata": {"nbgrader": '
            b'{"grade_id": "a\\udcff", "solution": true}}}, {"cell_type": "markdown", "source": "caf\xff"}], '
            b'"metadata": {}, "nbformat": 4, "nbformat_minor": 5}')
clean, notes, digest, keys = read_submission(f.name)
assert [c.source for c in clean.cells] == ["# caf\ufffd\n", "caf\ufffd"], clean.cells
assert clean.cells[0].metadata["nbgrader"]["grade_id"] == "a\ufffd"
nbformat.writes(clean)
print("ok")
'''
    import subprocess

    proc = subprocess.run([str(python), "-c", code], cwd=python.parents[2], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stdout + proc.stderr


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
        # (--workers 0: the notebooks run inside the (fake) nbgrader; the pool is tests/test_grader_class.py's)
        return autograde([EX, f"--CourseDirectory.root={root}", "--workers", "0", *args],
                         nbgrader=[sys.executable, str(fake)])
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
