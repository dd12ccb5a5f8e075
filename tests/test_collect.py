"""Collecting submissions (``python -m grader collect``, used by ``make autograde SUBMISSIONS=...``):
regular files only, never through a link, unsafe ids refused with a reason, and nothing a
hostile submission contains reaches another student's folder or anything outside the
destination."""
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
