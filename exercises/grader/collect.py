"""Collecting submissions without trusting them: regular files only, never through a link.

A folder of submissions (``<student id>/<exercise>/<files>``, nbgrader's ``submitted/`` layout)
comes from students. ``cp -R`` would copy symbolic links as links (a link to the source
notebook, to a host file, to a whole other student's folder), and FIFOs or device files that
hang or exhaust the grader. :func:`collect` copies only

* folders that are real folders (not links) and whose names are safe ids
  (:data:`SAFE_NAME`: letters, digits, ``_`` and ``-``; no globbing characters, no leading dot,
  no spaces, nothing a spreadsheet would read as a formula);
* of each submission folder, only the exercise's notebook and ``timestamp.txt``: regular files
  (not links, FIFOs, sockets or devices), opened with ``O_NOFOLLOW`` and checked again on the
  open descriptor (a file swapped for a link between the check and the copy is refused too), a
  notebook of at most :data:`MAX_FILE_BYTES`. The notebook is ``<exercise>.ipynb`` or, if there
  is none, the file that obviously is it (:func:`find_notebooks`: ``<exercise> (1).ipynb``,
  ``<exercise>-Copy1.ipynb``, one folder down...); with none, an empty notebook is written,
  so that the submission still gets a grade (zero) and a feedback saying why. Web pages,
  images, other files and folders are not copied (they could reach what is published);

and writes them so that nothing already in the destination can redirect a write: a link or a
non-folder found where a folder must go is removed first (and reported), files are written to
a new temporary name and then renamed over the target (``rename`` replaces a link, it never
writes through it). Everything refused is reported with its reason, and the student's feedback
says which file was graded and what was left out (a grader's note); nothing refused affects
the other students.

:func:`scrub` does the same for what is already in ``exercises/submitted/`` (put there by hand,
or by nbgrader's own ``collect``/``zip_collect``) before every grading run: it removes links and
special files, moves every folder whose name is not a safe id (or not an exercise of the course)
into a quarantine folder (``exercises/refused/``) with the reason beside it, leaves exactly the
notebook and ``timestamp.txt`` in each submission folder (everything else is moved to
``refused/<student>/<exercise>/``, at most :data:`MAX_ASIDE_FILES` files and
:data:`MAX_ASIDE_BYTES` per submission, the rest deleted), and sets aside a ``timestamp.txt``
that nbgrader could not read, leaving notes for the student's feedback in
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
from typing import NamedTuple

#: A student id or exercise name we accept: 1-64 of letters, digits, ``_`` and ``-``, starting
#: with a letter or digit.
SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}\Z")
#: The largest notebook collected and graded (``grader.rebuild`` reads at most this much): an
#: honest notebook with big output images (40 MB) stays under it.
MAX_FILE_BYTES = 64 << 20
#: What is kept aside in ``refused/<student>/<exercise>/`` from one submission folder, at most (files --
#: a folder counts as one too -- and bytes; the grader's reason files not counted); beyond it, what is
#: found is deleted.
MAX_ASIDE_FILES, MAX_ASIDE_BYTES = 100, 128 << 20
#: What a submission that has no notebook that can be graded is graded as (zero, with the reason).
EMPTY_NOTEBOOK = json.dumps({"cells": [], "metadata": {}, "nbformat": 4, "nbformat_minor": 5}).encode() + b"\n"
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


_SURROGATE = re.compile("[\ud800-\udfff]")


def no_surrogates(text: str) -> str:
    """``text`` with every lone surrogate (a file name's byte that is not UTF-8, as ``os.listdir`` gives
    it, or a ``\\udcff`` escape in JSON) replaced by U+FFFD: text that can be written as UTF-8."""
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        return _SURROGATE.sub("\ufffd", text)


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
            copied += _collect_one(dest, student.name, exercise.name, Path(exercise.path), report)
    return copied, report


def _collect_one(dest: Path, student: str, exercise: str, folder: Path, report: list[str]) -> int:
    """Copy one submission folder into ``dest/<student>/<exercise>/``: its notebook(s) (:func:`find_notebooks`;
    an empty notebook if there is none and the destination has none either) and ``timestamp.txt``,
    nothing else; a note for the feedback says what was left out. Returns the number of files copied."""
    root, target = dest.parent, dest / student / exercise
    found = find_notebooks(folder, notebook_names(root, exercise))
    _real_folder(dest / student, report)
    _real_folder(target, report)
    copied, taken = 0, set()
    for i, f in enumerate(found):
        out = target / f"{f.name}.ipynb"
        for c in f.too_big:
            report.append(f"{student}/{exercise}/{c.rel!r} refused: {c.size >> 20} MiB, more than the "
                          f"{MAX_FILE_BYTES >> 20} MiB allowed for a notebook")
        if f.chosen is not None:
            try:
                _write(out, read_regular(f.chosen.path))
            except ValueError as err:
                report.append(f"{student}/{exercise}/{f.chosen.rel!r} refused: {err}")
                found[i] = f._replace(chosen=None)
            else:
                copied += 1
                taken.add(f.chosen.rel)
                if f.chosen.rel != out.name:
                    report.append(f"{student}/{exercise}/{f.chosen.rel!r} collected as {out.name!r}")
                continue
        if os.path.lexists(out):  # (collected before: kept, and nothing said about it)
            report.append(f"{student}/{exercise}: no notebook that could be graded; the {out.name!r} collected "
                          f"before is kept")
            found[i] = None
        else:
            _write(out, EMPTY_NOTEBOOK)
            report.append(f"{student}/{exercise}: no notebook that could be graded; an empty {out.name!r} written")
    found = [f for f in found if f is not None]
    left = []
    for entry in _entries(folder):
        st = entry.stat(follow_symlinks=False)
        if entry.name in taken and stat.S_ISREG(st.st_mode):
            continue
        if entry.name == "timestamp.txt":
            try:
                _write(target / entry.name, read_regular(Path(entry.path), 4096))
                copied += 1
                continue
            except ValueError as err:
                reason = str(err)
        elif stat.S_ISREG(st.st_mode) or stat.S_ISDIR(st.st_mode):
            reason = "not part of a submission (only the notebook and timestamp.txt are collected)"
        else:
            reason = _kind(st.st_mode)
        report.append(f"{student}/{exercise}/{entry.name!r} refused: {reason}")
        left.append(entry.name)
    said = _explain(found, left, [], "not collected (they stay where your instructor collected them from)")
    if said:
        set_note(root, student, exercise, "collect", " ".join(said),
                 {f"{f.name}.ipynb": sha256_file(target / f"{f.name}.ipynb") for f in found})
    _check_timestamp(root, student, exercise, target, root / QUARANTINE, report)
    return copied


def _remove_special(folder: Path) -> list[str]:
    """Remove every link and special file under ``folder`` (depth first, without recursion: a deeply
    nested upload does not stop the grader)."""
    report, stack = [], [Path(folder)]
    while stack:
        for entry in reversed(_entries(stack.pop())):
            st = entry.stat(follow_symlinks=False)
            if stat.S_ISDIR(st.st_mode):
                stack.append(Path(entry.path))
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


# --------------------------------------------------------------------------- which file is the notebook

#: A browser's `` (1)``, Jupyter's ``-Copy1``, a file manager's `` - Copy`` at the end of a name.
_COPY_SUFFIX = re.compile(r"(\s*\(\d+\)|[\s_.-]*copy(\s*\d+)?)\Z")


def _plain_stem(filename: str) -> str:
    """What a notebook file's name stands for: ``Ex06_Gram (1).ipynb``, ``ex06_gram-Copy1.ipynb`` and
    ``ex06 gram.ipynb`` all give ``ex06gram`` (no ``.ipynb``, copy marks, case, spaces, ``_`` or ``-``)."""
    stem = filename[: -len(".ipynb")].casefold()
    while (shorter := _COPY_SUFFIX.sub("", stem)) != stem:
        stem = shorter
    return re.sub(r"[\s_-]+", "", stem)


class Candidate(NamedTuple):
    """A notebook file in a submission folder: where, its name relative to the folder, size, mtime."""
    path: Path
    rel: str
    size: int
    mtime: float


class Found(NamedTuple):
    """Which file of a submission folder is graded as the notebook ``<name>.ipynb`` (:func:`find_notebooks`)."""
    name: str
    chosen: Candidate | None         # the file graded (None: none may be graded)
    others: list[Candidate]          # other copies: not graded
    too_big: list[Candidate]         # over MAX_FILE_BYTES: not graded


def notebook_names(root: Path, exercise: str) -> list[str]:
    """The notebooks of an exercise: those of ``source/<exercise>/`` beside ``submitted/``, else the
    exercise's own name (the course's convention)."""
    source = Path(root) / "source" / exercise
    names = sorted(p.stem for p in source.glob("*.ipynb")) if source.is_dir() and not source.is_symlink() else []
    return names or [exercise]


def find_notebooks(folder: Path, names) -> list[Found]:
    """For each notebook ``<name>.ipynb`` of an exercise, the file of the submission ``folder`` that is
    graded as it. Looked at: the regular files ending in ``.ipynb`` in the folder and one folder down
    (an unzipped upload; hidden folders and names skipped) whose names stand for that notebook
    (:func:`_plain_stem`: ``ex06_gram (1).ipynb``, ``ex06_gram-Copy1.ipynb``, ``Ex06_Gram.ipynb``,
    ``ex06_gram/ex06_gram.ipynb``, ``upload/ex06_gram.ipynb``). The rule: the correctly named file
    in the folder itself; else the newest of the others (latest modification time). A file over
    :data:`MAX_FILE_BYTES` is never chosen. Nothing is read or moved here."""
    candidates = []
    for entry in _entries(folder):
        if entry.name.startswith(".") or entry.name == "__MACOSX":
            continue
        inside = ([(e, f"{entry.name}/{e.name}") for e in _entries(Path(entry.path))]
                  if entry.is_dir(follow_symlinks=False) else [(entry, entry.name)])
        for e, rel in inside:
            if e.name.casefold().endswith(".ipynb") and not e.name.startswith(".") and e.is_file(follow_symlinks=False):
                st = e.stat(follow_symlinks=False)
                candidates.append(Candidate(Path(e.path), rel, st.st_size, st.st_mtime))
    found = []
    for name in names:
        mine = [c for c in candidates if _plain_stem(c.rel.rsplit("/", 1)[-1]) == _plain_stem(f"{name}.ipynb")]
        fits = [c for c in mine if c.size <= MAX_FILE_BYTES]
        exact = [c for c in fits if c.rel == f"{name}.ipynb"]
        chosen = exact[0] if exact else max(fits, key=lambda c: (c.mtime, c.rel), default=None)
        found.append(Found(name, chosen, [c for c in fits if c is not chosen], [c for c in mine if c not in fits]))
    return found


def _names(items, limit: int = 5) -> str:
    items = list(items)
    more = f" and {len(items) - limit} more" if len(items) > limit else ""
    return ", ".join(quote(i) for i in items[:limit]) + more


def _explain(found: list[Found], aside, deleted, verb: str) -> list[str]:
    """The sentences of a student's feedback about their submission folder: which file was graded as
    the notebook, and what else was in the folder: ``aside`` (what was ``verb``) and ``deleted``."""
    said = []
    for f in found:
        want = f"{f.name}.ipynb"
        for c in f.too_big:
            said.append(f"Your notebook {quote(c.rel)} has {c.size:,} bytes, more than the {MAX_FILE_BYTES:,} "
                        f"({MAX_FILE_BYTES >> 20} MiB) a notebook may have: it was not graded.")
        if f.chosen is None:
            said.append(("So your submission" if f.too_big else f"Your submission has no notebook {quote(want)} "
                         f"that could be graded; it") + " was graded as an empty notebook.")
        elif f.chosen.rel != want and not f.others:
            said.append(f"Your notebook was found as {quote(f.chosen.rel)}, not {quote(want)}; it was graded as "
                        f"your submission.")
        elif f.chosen.rel != want:
            said.append(f"Your submission has no {quote(want)} but {len(f.others) + 1} notebooks that look like it: "
                        f"the newest, {quote(f.chosen.rel)}, was graded; {_names(c.rel for c in f.others)} not.")
        elif f.others:
            said.append(f"Your {quote(want)} was graded; the other copies of it ({_names(c.rel for c in f.others)}) "
                        f"were not.")
    beyond = f"deleted: at most {MAX_ASIDE_FILES} files or folders and {MAX_ASIDE_BYTES >> 20} MiB are kept"
    parts = [f"{len(items)} ({_names(items)}) {'was' if len(items) == 1 else 'were'} {how}"
             for items, how in ((aside, verb), (deleted, beyond)) if items]
    if parts:
        said.append("Only the notebook and timestamp.txt of a submission are graded; of the other files and folders "
                    "in yours, " + ", and ".join(parts) + ".")
    return said


# --------------------------------------------------------------------------- one submission folder

def _tree(path: Path) -> tuple[int, int, list[str]]:
    """(files and folders, the files' bytes, the folders, deepest first) of ``path`` (a file: itself),
    never following a link, without recursion (an upload nested 1,000 deep does not stop the grader)."""
    st = os.lstat(path)
    if not stat.S_ISDIR(st.st_mode):
        return 1, st.st_size if stat.S_ISREG(st.st_mode) else 0, []
    count = size = 0
    folders, stack = [], [str(path)]
    while stack:
        folders.append(stack.pop())
        count += 1
        with os.scandir(folders[-1]) as it:
            for e in it:
                if e.is_dir(follow_symlinks=False):
                    stack.append(e.path)
                else:
                    count += 1
                    size += e.stat(follow_symlinks=False).st_size if e.is_file(follow_symlinks=False) else 0
    return count, size, folders[::-1]


def _delete(path: Path) -> None:
    """Remove a file or a whole folder (never following a link, without recursion)."""
    _, _, folders = _tree(path)
    if not folders:
        os.unlink(path)
    for folder in folders:  # deepest first
        with os.scandir(folder) as it:
            for e in it:
                if not e.is_dir(follow_symlinks=False):
                    os.unlink(e.path)
        os.rmdir(folder)


class _Aside:
    """What is kept aside in ``refused/<student>/<exercise>/`` from one submission: at most
    :data:`MAX_ASIDE_FILES` files and :data:`MAX_ASIDE_BYTES` bytes, what earlier runs kept there
    included (the grader's ``<name>.txt`` reasons not counted); what does not fit is deleted."""

    def __init__(self, dest: Path, what: str, report: list[str]):
        self.dest, self.what, self.report = Path(dest), what, report
        self.files = self.bytes = 0
        self.kept, self.deleted = [], []
        for e in _entries(dest) if os.path.isdir(dest) and not os.path.islink(dest) else ():
            if not (e.name.endswith(".txt") and os.path.lexists(os.path.join(dest, e.name[:-4]))):
                n, size, _ = _tree(Path(e.path))
                self.files, self.bytes = self.files + n, self.bytes + size

    def put(self, path: Path, reason: str, shown: str | None = None) -> None:
        """Move ``path`` (a file or folder) aside, or delete it if it does not fit. ``shown``: its name
        in the feedback (default: its file name)."""
        n, size, _ = _tree(path)
        if self.files + n <= MAX_ASIDE_FILES and self.bytes + size <= MAX_ASIDE_BYTES:
            self.files, self.bytes = self.files + n, self.bytes + size
            quarantine(path, self.dest, self.what, reason, self.report)
            self.kept.append(shown or path.name)
        else:
            _delete(path)
            self.report.append(f"{self.what} {path.name!r} deleted ({n} files or folders, {size >> 20} MiB): {reason}; "
                               f"beyond the {MAX_ASIDE_FILES} files or folders and {MAX_ASIDE_BYTES >> 20} MiB kept "
                               f"aside per submission")
            self.deleted.append(shown or path.name)


def _tidy(root: Path, student: str, exercise: str, folder: Path, refused: Path, report: list[str]) -> None:
    """Leave exactly the exercise's notebook(s) and ``timestamp.txt`` in a submission ``folder``: the
    file :func:`find_notebooks` picks is renamed to ``<name>.ipynb`` (an empty notebook is written when
    none may be graded), everything else is set aside (:class:`_Aside`), and the student's feedback
    says what was done (a grader's note, tied to the notebook graded)."""
    names = notebook_names(root, exercise)
    found = find_notebooks(folder, names)
    aside = _Aside(refused / student / exercise, f"{student}/{exercise}:", report)
    for f in found:
        for c in f.too_big:
            aside.put(c.path, f"a notebook of {c.size >> 20} MiB, more than the {MAX_FILE_BYTES >> 20} MiB graded",
                      c.rel)
        for c in f.others:
            aside.put(c.path, f"another copy of the notebook, not graded ({f.chosen.rel!r} was)", c.rel)
        target = folder / f"{f.name}.ipynb"
        if f.chosen is not None and f.chosen.path == target:
            continue
        picked = folder / f".grader-picked-{f.name}.ipynb"
        if f.chosen is not None:  # (out of the way first: it may be inside what is in its place)
            os.rename(f.chosen.path, picked)
        if os.path.lexists(target):  # (something that may not be graded, e.g. a folder of that name)
            aside.put(target, "in the place of the notebook, but not a notebook that may be graded")
        if f.chosen is not None:
            os.rename(picked, target)
            report.append(f"{student}/{exercise}: {f.chosen.rel!r} graded as {target.name!r}")
        else:
            _write(target, EMPTY_NOTEBOOK)
            report.append(f"{student}/{exercise}: no notebook that may be graded; an empty {target.name!r} written")
    keep = {f"{n}.ipynb" for n in names} | {"timestamp.txt"}
    for e in _entries(folder):
        if e.name not in keep or not e.is_file(follow_symlinks=False):
            aside.put(Path(e.path), "not part of a submission (only the notebook and timestamp.txt are graded)")
    said = _explain(found, aside.kept, aside.deleted, "set aside for your instructor")
    if said:
        set_note(root, student, exercise, "collect", " ".join(said),
                 {f"{n}.ipynb": sha256_file(folder / f"{n}.ipynb") for n in names})


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
    * leave exactly the notebook and ``timestamp.txt`` in each submission folder (:func:`_tidy`: the
      file :func:`find_notebooks` picks renamed into place, else an empty notebook; everything else
      moved to ``refused/<student>/<exercise>/`` within :data:`MAX_ASIDE_FILES` files and
      :data:`MAX_ASIDE_BYTES`, the rest deleted), with a note for the student's feedback;
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
                _tidy(root, student.name, exercise.name, Path(exercise.path), refused, report)
                _check_timestamp(root, student.name, exercise.name, Path(exercise.path), refused, report)
    return report
