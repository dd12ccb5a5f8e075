"""Collecting submissions without trusting them: regular files only, never through a link.

A folder of submissions (``<student id>/<exercise>/<files>``, nbgrader's ``submitted/`` layout)
comes from students. ``cp -R`` would copy symbolic links as links (a link to the source
notebook, to a host file, to a whole other student's folder), and FIFOs or device files that
hang or exhaust the grader. :func:`collect` copies only

* folders that are real folders (not links) and whose names are safe ids
  (:data:`SAFE_NAME`: letters, digits, ``_`` and ``-``; no globbing characters, no leading dot,
  no spaces, nothing a spreadsheet would read as a formula);
* regular files (not links, FIFOs, sockets or devices) of at most :data:`MAX_FILE_BYTES`,
  opened with ``O_NOFOLLOW`` and checked again on the open descriptor (a file swapped for a
  link between the check and the copy is refused too);

and writes them so that nothing already in the destination can redirect a write: a link or a
non-folder found where a folder must go is removed first (and reported), files are written to
a new temporary name and then renamed over the target (``rename`` replaces a link, it never
writes through it). Everything refused is reported with its reason; nothing refused affects
the other students.
"""
from __future__ import annotations

import os
import re
import stat
from pathlib import Path

#: A student id or exercise name we accept: 1-64 of letters, digits, ``_`` and ``-``, starting
#: with a letter or digit.
SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}\Z")
#: The largest file collected (a submitted notebook is capped at the same size when graded).
MAX_FILE_BYTES = 32 << 20
#: The files of a submission we take: the notebook and nbgrader's timestamp.
SAFE_FILE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}\Z")


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISLNK, "a symbolic link"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket"),
                       (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
                       (stat.S_ISDIR, "a folder"), (stat.S_ISREG, "a regular file")):
        if test(mode):
            return name
    return "a special file"


def _real_folder(path: Path, report: list[str]) -> None:
    """Make ``path`` a real folder: a link or a file in its place is removed first (and reported)."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        os.mkdir(path)
        return
    if stat.S_ISDIR(st.st_mode):
        return
    report.append(f"removed {_kind(st.st_mode)} at {path} before writing there")
    os.unlink(path)
    os.mkdir(path)


def _read_regular(path: Path) -> bytes:
    """The bytes of ``path`` if it is a regular file of at most MAX_FILE_BYTES; else ValueError with the reason."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError as err:  # ELOOP: a link; ENXIO: a FIFO without writer, ...
        raise ValueError(f"{_kind(os.lstat(path).st_mode)}, not copied ({err.strerror})") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise ValueError(f"{_kind(st.st_mode)}, not copied")
        if st.st_size > MAX_FILE_BYTES:
            raise ValueError(f"{st.st_size >> 20} MiB, more than the {MAX_FILE_BYTES >> 20} MiB allowed")
        chunks, total = [], 0
        while chunk := os.read(fd, 1 << 20):
            total += len(chunk)
            if total > MAX_FILE_BYTES:
                raise ValueError(f"grew past the {MAX_FILE_BYTES >> 20} MiB allowed while being read")
            chunks.append(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


def _write(path: Path, data: bytes) -> None:
    """Write ``data`` to a fresh temporary file beside ``path``, then rename it over ``path``."""
    if os.path.isdir(path) and not os.path.islink(path):
        raise ValueError(f"{path} is a folder in the destination, not overwritten")
    tmp = path.with_name(f".collect-{os.getpid()}-{path.name}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)
    os.replace(tmp, path)


def _entries(folder: Path):
    with os.scandir(folder) as it:
        return sorted(it, key=lambda e: e.name)


def collect(src: Path, dest: Path) -> tuple[int, list[str]]:
    """Copy the submissions in ``src`` into ``dest`` (see the module docstring).

    Returns ``(files copied, report)``: one line per thing refused or repaired, with the reason.
    """
    src, dest = Path(src), Path(dest)
    if os.path.islink(src) or not src.is_dir():
        raise ValueError(f"{src} must be a folder (not a link) holding <student>/<exercise>/<files>")
    report: list[str] = []
    copied = 0
    _real_folder(dest, report)
    for student in _entries(src):
        where = f"{student.name!r}"
        if not SAFE_NAME.match(student.name):
            report.append(f"student id {where} refused: use 1-64 letters, digits, '_' or '-' (no spaces, "
                          f"dots, wildcards or formulas)")
            continue
        if not student.is_dir(follow_symlinks=False):
            report.append(f"student {where} refused: {_kind(student.stat(follow_symlinks=False).st_mode)}, not a folder")
            continue
        for exercise in _entries(Path(student.path)):
            where = f"{student.name}/{exercise.name!r}"
            if not SAFE_NAME.match(exercise.name):
                report.append(f"{where} refused: not an exercise name")
                continue
            if not exercise.is_dir(follow_symlinks=False):
                report.append(f"{where} refused: {_kind(exercise.stat(follow_symlinks=False).st_mode)}, not a folder")
                continue
            target = dest / student.name / exercise.name
            made = False
            for entry in _entries(Path(exercise.path)):
                where = f"{student.name}/{exercise.name}/{entry.name!r}"
                if not SAFE_FILE.match(entry.name):
                    report.append(f"{where} refused: not a submission file name")
                    continue
                try:
                    data = _read_regular(Path(entry.path))
                except ValueError as err:
                    report.append(f"{where} refused: {err}")
                    continue
                if not made:
                    _real_folder(dest / student.name, report)
                    _real_folder(target, report)
                    made = True
                try:
                    _write(target / entry.name, data)
                except ValueError as err:
                    report.append(f"{where} refused: {err}")
                    continue
                copied += 1
    return copied, report


def scrub(folder: Path) -> list[str]:
    """Remove every symbolic link, FIFO, socket and device file under ``folder`` (never following
    a link), so that grading what is already in ``exercises/submitted/`` reads regular files only.
    Returns one report line per thing removed."""
    folder = Path(folder)
    if os.path.islink(folder) or not folder.is_dir():
        raise ValueError(f"{folder} must be a folder (not a link)")
    report = []
    for entry in _entries(folder):
        st = entry.stat(follow_symlinks=False)
        if stat.S_ISDIR(st.st_mode):
            report += scrub(Path(entry.path))
        elif not stat.S_ISREG(st.st_mode):
            os.unlink(entry.path)
            report.append(f"removed {_kind(st.st_mode)} {entry.path}")
    return report
