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

:func:`scrub` does the same for what is already in ``exercises/submitted/`` (put there by hand,
or by nbgrader's own ``collect``/``zip_collect``) before every grading run: it removes links and
special files, moves every folder whose name is not a safe id (or not an exercise of the course)
into a quarantine folder (``exercises/refused/``) with the reason beside it, and sets aside a
``timestamp.txt`` that nbgrader could not read, leaving a note for the student's feedback in
``exercises/.grader-notes/`` (outside ``submitted/``: a student cannot plant one).
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import stat
import time
from pathlib import Path

#: A student id or exercise name we accept: 1-64 of letters, digits, ``_`` and ``-``, starting
#: with a letter or digit.
SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}\Z")
#: The largest file collected (a submitted notebook is capped at the same size when graded).
MAX_FILE_BYTES = 32 << 20
#: The files of a submission we take: the notebook and nbgrader's timestamp.
SAFE_FILE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}\Z")
#: Where refused folders and files go (beside ``submitted/``), and where the grader's notes for a
#: student's feedback are kept (read by ``grader.rebuild.RebuildFromSource``).
QUARANTINE, NOTES = "refused", ".grader-notes"
#: A ``timestamp.txt`` nbgrader can read: a date and time, optionally a time zone (a name without
#: dots or a leading slash: nbgrader looks named zones up as files), nothing else.
TIMESTAMP = re.compile(r"\d{4}-\d{1,2}-\d{1,2}[ T]\d{1,2}:\d{2}(:\d{2}(\.\d{1,6})?)?"
                       r"( ?(Z|[+-]\d{2}:?\d{2}|[A-Za-z][A-Za-z_]{0,30}(/[A-Za-z][A-Za-z_+-]{0,30}){0,2}))?\Z")


def why_unsafe(name: str) -> str | None:
    """None for a safe id (:data:`SAFE_NAME`); otherwise what is wrong with it, in words."""
    if SAFE_NAME.match(name):
        return None
    why = []
    if name != name.strip():
        why.append("it begins or ends with a space")
    if any(ch in name for ch in "*?[]"):
        why.append("it contains wildcard characters (*, ?, [ or ]), which nbgrader would match against "
                   "other students' folders")
    if name.startswith("."):
        why.append("it starts with a dot (a hidden folder)")
    if name[:1] in ("=", "+", "-", "@"):
        why.append(f"it starts with {name[0]!r}, which a spreadsheet reads as a formula")
    if any(not ch.isascii() or not ch.isprintable() for ch in name):
        why.append("it has characters that are not printable ASCII")
    if len(name) > 64:
        why.append("it is longer than 64 characters")
    if not why:
        why.append("use 1-64 letters, digits, '_' or '-'")
    return "; ".join(why)


def quote(text: str, limit: int = 60) -> str:
    """``text`` (from a submission) for a note: in backticks -- a code span, shown as it is, never
    read as HTML or maths -- with no backtick or control character in it, at most ``limit`` characters."""
    text = str(text)
    if len(text) > limit:
        text = text[:limit] + "..."
    text = "".join("'" if ch == "`" else ch if ch.isprintable() else ch.encode("unicode_escape").decode("ascii")
                   for ch in text)
    return f"`{text}`"


def encode_name(name: str) -> str:
    """A safe file name standing for ``name`` (its bytes, ``%XX`` for all but letters, digits, ``_``,
    ``-`` and a dot that is not the first; shortened with a hash when long): distinct names give
    distinct results."""
    raw = os.fsencode(name)
    out = "".join(chr(b) if chr(b).isascii() and (chr(b).isalnum() or chr(b) in "_-" or (chr(b) == "." and i))
                  else f"%{b:02X}" for i, b in enumerate(raw))
    if len(out) > 96:
        out = out[:64] + "~" + hashlib.sha256(raw).hexdigest()[:16]
    return out


def sha256_file(path: Path) -> str | None:
    try:
        with open(path, "rb") as f:
            return hashlib.file_digest(f, "sha256").hexdigest()
    except OSError:
        return None


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


def read_regular(path, limit: int | None = None) -> bytes:
    """The bytes of ``path`` if it is a regular file of at most ``limit`` bytes (default
    :data:`MAX_FILE_BYTES`), opened without following a link and checked again on the open
    descriptor; else ValueError with the reason."""
    limit = MAX_FILE_BYTES if limit is None else limit
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError as err:  # ELOOP: a link; ENXIO: a FIFO without writer, ...
        raise ValueError(f"{_kind(os.lstat(path).st_mode)}, not a regular file ({err.strerror})") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise ValueError(f"{_kind(st.st_mode)}, not a regular file")
        if st.st_size > limit:
            raise ValueError(f"{st.st_size >> 20} MiB, more than the {limit >> 20} MiB allowed")
        chunks, total = [], 0
        while chunk := os.read(fd, 1 << 20):
            total += len(chunk)
            if total > limit:
                raise ValueError(f"grew past the {limit >> 20} MiB allowed while being read")
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
            report.append(f"student id {where} refused: {why_unsafe(student.name)} (use 1-64 letters, digits, "
                          f"'_' or '-': no spaces, dots, wildcards or formulas)")
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
                    data = read_regular(Path(entry.path))
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


def _remove_special(folder: Path) -> list[str]:
    report = []
    for entry in _entries(folder):
        st = entry.stat(follow_symlinks=False)
        if stat.S_ISDIR(st.st_mode):
            report += _remove_special(Path(entry.path))
        elif not stat.S_ISREG(st.st_mode):
            os.unlink(entry.path)
            report.append(f"removed {_kind(st.st_mode)} {entry.path}")
    return report


def _makedirs(path: Path, report: list[str]) -> None:
    """``path`` and its missing parents as real folders (a link in the way is replaced, and reported)."""
    path = Path(path)
    if not path.parent.is_dir():
        _makedirs(path.parent, report)
    _real_folder(path, report)


def quarantine(path: Path, dest: Path, what: str, reason: str, report: list[str]) -> Path:
    """Move ``path`` (a file or folder, never followed) into the folder ``dest`` under a safe name
    (:func:`encode_name`), write the reason beside it (``<name>.txt``) and report it.
    Returns where it went."""
    path = Path(path)
    _makedirs(dest, report)
    base = encode_name(path.name)
    target, n = dest / base, 1
    while os.path.lexists(target) or os.path.lexists(f"{target}.txt"):
        n += 1
        target = dest / f"{base}.{n}"
    try:
        os.rename(path, target)
    except OSError:  # another file system: copy, then remove
        import shutil

        shutil.move(str(path), str(target))
    _write(Path(f"{target}.txt"), (f"{what} {path.name!r} refused: {reason}\nmoved here from {path} "
                                   f"on {time.strftime('%Y-%m-%d %H:%M:%S %z')}\n").encode("utf-8", "backslashreplace"))
    report.append(f"{what} {path.name!r} refused: {reason}; moved to {target}")
    return target


# --------------------------------------------------------------------------- the grader's notes

def notes_file(root: Path, student: str, assignment: str) -> Path:
    return Path(root) / NOTES / student / f"{assignment}.json"


def _load_notes(path: Path) -> list[dict]:
    try:
        with open(path, "rb") as f:
            data = json.loads(f.read(1 << 20))
    except (OSError, ValueError, RecursionError):
        return []
    entries = data.get("notes") if isinstance(data, dict) else None
    return [e for e in entries if isinstance(e, dict)] if isinstance(entries, list) else []


def set_note(root: Path, student: str, assignment: str, kind: str, text: str | None = None,
             files: dict[str, str | None] | None = None) -> None:
    """Record the grader's note of this ``kind`` for a student's submission (``text`` None: remove it).

    The note is shown in the feedback of the notebooks named in ``files`` (file name -> sha256) while
    they are unchanged: a new submission does not inherit it. Notes live outside ``submitted/``."""
    if why_unsafe(student) or why_unsafe(assignment):
        raise ValueError(f"no notes for unsafe ids {student!r}/{assignment!r}")
    path = notes_file(root, student, assignment)
    entries = [e for e in _load_notes(path) if e.get("kind") != kind]
    if text is not None:
        entries.append({"kind": kind, "text": text, "files": dict(files or {}),
                        "time": time.strftime("%Y-%m-%d %H:%M:%S %z")})
    if not entries:
        if os.path.lexists(path):
            os.unlink(path)
        return
    _makedirs(path.parent, [])
    _write(path, json.dumps({"notes": entries}, indent=1).encode("utf-8"))


def rebind_notes(root: Path, student: str, assignment: str, notebook_file: str, old: str | None,
                 new: str | None) -> None:
    """The grader's notes about ``notebook_file`` as it was (``old`` sha256) now apply to it as it is (``new``)."""
    path = notes_file(root, student, assignment)
    entries = _load_notes(path) if old and new else []
    for e in entries:
        if isinstance(e.get("files"), dict) and e["files"].get(notebook_file) == old:
            e["files"][notebook_file] = new
    if entries:
        _write(path, json.dumps({"notes": entries}, indent=1).encode("utf-8"))


def grader_notes(root: Path, student: str, assignment: str, notebook_file: str, sha256: str | None) -> list[str]:
    """The grader's notes for this notebook of a submission, if its content is still ``sha256``."""
    if why_unsafe(student) or why_unsafe(assignment) or not sha256:
        return []
    return [e["text"] for e in _load_notes(notes_file(root, student, assignment))
            if isinstance(e.get("text"), str) and isinstance(e.get("files"), dict)
            and e["files"].get(notebook_file) == sha256]


# --------------------------------------------------------------------------- timestamps

def _parse_utc(text: str):
    try:
        from nbgrader.utils import parse_utc
    except ImportError:  # outside the grader venv: what nbgrader.utils.parse_utc (0.9) does
        import dateutil.parser
        import dateutil.tz

        parts = text.split(" ")
        if len(parts) == 3:
            try:
                tz = int(parts[2])
            except ValueError:
                tz = dateutil.tz.gettz(parts[2])
            ts = dateutil.parser.parse(" ".join(parts[:2] + ["TZ"]), tzinfos={"TZ": tz})
        else:
            ts = dateutil.parser.parse(text)
        return (ts - ts.utcoffset()).replace(tzinfo=None) if ts.tzinfo is not None else ts
    return parse_utc(text)


def timestamp_problem(path: Path) -> str | None:
    """None if nbgrader can read ``path`` as a submission's ``timestamp.txt``; else why not."""
    st = os.lstat(path)
    if not stat.S_ISREG(st.st_mode):
        return f"it is {_kind(st.st_mode)}, not a file"
    if st.st_size > 200:
        return f"it has {st.st_size} bytes; a timestamp has at most 200"
    try:
        text = read_regular(Path(path)).decode("utf-8").strip()
    except UnicodeDecodeError:
        return "it is not UTF-8 text"
    except ValueError as err:
        return str(err)
    if not text:
        return None  # nbgrader ignores an empty timestamp
    if not TIMESTAMP.match(text):
        return f"{quote(text)} is not a date and time like 2025-12-01 14:05:00 UTC"
    try:
        _parse_utc(text)
    except Exception as err:  # noqa: BLE001 - whatever the parser does with it, nbgrader would do too
        return f"{quote(text)} could not be read as a date and time ({type(err).__name__})"
    return None


def _check_timestamp(root: Path, student: str, exercise: str, folder: Path, refused: Path, report: list[str]) -> None:
    ts = folder / "timestamp.txt"
    if not os.path.lexists(ts):
        return  # (a timestamp set aside earlier keeps its note while the notebooks are unchanged)
    problem = timestamp_problem(ts)
    if problem is None:
        set_note(root, student, exercise, "timestamp", None)
        return
    files = {p.name: sha256_file(p) for p in sorted(folder.glob("*.ipynb")) if p.is_file() and not p.is_symlink()}
    quarantine(ts, refused / student / exercise, f"{student}/{exercise}:", f"unreadable timestamp ({problem})", report)
    set_note(root, student, exercise, "timestamp",
             f"Your timestamp.txt could not be read ({problem}); it was set aside for your instructor, so your "
             f"submission was graded without a submission time.", files)


# --------------------------------------------------------------------------- scrub

def scrub(folder: Path, refused: Path | None = None) -> list[str]:
    """Make ``folder`` (``exercises/submitted``) safe to hand to ``nbgrader autograde "*"``:

    * remove every symbolic link, FIFO, socket and device file under it (never following a link);
    * move every student folder whose name is not a safe id (:func:`why_unsafe`: wildcards that
      nbgrader would match against other students' folders, a leading dot, a formula, spaces,
      bytes that are not ASCII) into ``refused`` (default: ``refused/`` beside ``folder``), and
      likewise every exercise folder that is not a safe name or, when ``source/`` is beside
      ``folder``, not an exercise of the course;
    * set aside a ``timestamp.txt`` nbgrader cannot read (it would abort the run), with a note for
      the student's feedback (:func:`set_note`).

    Nothing is done to the other students. Returns one report line per thing removed or moved."""
    folder = Path(folder)
    if os.path.islink(folder) or not folder.is_dir():
        raise ValueError(f"{folder} must be a folder (not a link)")
    report = _remove_special(folder)
    root = folder.parent
    refused = Path(refused) if refused else root / QUARANTINE
    source = root / "source"
    exercises = ({e.name for e in _entries(source) if e.is_dir(follow_symlinks=False)}
                 if source.is_dir() and not source.is_symlink() else None)
    for student in _entries(folder):
        why = why_unsafe(student.name)
        if why:
            quarantine(Path(student.path), refused, "student id", f"not a safe id: {why}", report)
            continue
        if not student.is_dir(follow_symlinks=False):
            continue
        for exercise in _entries(Path(student.path)):
            why = why_unsafe(exercise.name)
            if why is None and exercises is not None and exercise.name not in exercises:
                why = "not an exercise of this course"
            if why:
                quarantine(Path(exercise.path), refused / student.name, f"{student.name}: exercise folder",
                           why, report)
            elif exercise.is_dir(follow_symlinks=False):
                _check_timestamp(root, student.name, exercise.name, Path(exercise.path), refused, report)
    return report
