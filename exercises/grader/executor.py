"""nbgrader plug-ins that grade untrusted submissions safely (the *driver*; runs in the grader venv).

``exercises/nbgrader_config.py`` puts them into ``nbgrader autograde``:

* :class:`TolerantNotebookExporter` -- a submission that is not a readable notebook (broken
  JSON, far too large) becomes an empty one instead of aborting the run: it gets zero, with
  the reason in its feedback.
* :class:`RebuildFromSource` (first sanitizing step) -- the notebook that is graded is rebuilt
  from the instructor's *source* notebook: every instructor cell (instructions, set-up, test
  cells with their hidden tests) is taken from there, and only the student's answer cells
  (nbgrader solution cells, matched by ``grade_id``) and the cells the student added come
  from the submission. A deleted, edited or re-typed test cell, changed points, a forged
  grade cell: none of it survives. What was found is listed in the feedback.
* :class:`SandboxedExecute` (replaces nbgrader's ``Execute``) -- runs the notebook in two
  sandboxes (:mod:`grader.sandbox`): the student's cells in one, the test cells in another
  that never runs student code, the tests calling the student's functions across the
  boundary (:mod:`grader.student_runner`, :mod:`grader.test_runner`). Wall-clock, per-cell,
  per-call, CPU and memory limits; a notebook that breaks them gets zero for what could not
  be tested, and the reason is in the feedback.

Only the outputs of the test process decide grades (nbgrader's rule: a test cell with an
error output scores zero, otherwise its points). The student process's outputs are only
shown (they are checked for shape and size first).
"""
from __future__ import annotations

import ast
import copy
import hashlib
import json
import math
import os
import re
import signal
import subprocess
import threading
import time
from pathlib import Path

import nbformat
from nbconvert.exporters import NotebookExporter
from nbformat.v4 import new_markdown_cell, new_output
from traitlets import Bool, Integer, List, Unicode

from nbgrader.coursedir import CourseDirectory
from nbgrader.preprocessors import NbGraderPreprocessor

from . import hide, protocol, sandbox
from .collect import grader_notes, quote, read_regular, why_unsafe

REPO = Path(__file__).resolve().parents[2]
MAX_NOTEBOOK_BYTES = 32 << 20
HIDDEN_BEGIN, HIDDEN_END = "BEGIN HIDDEN TESTS", "END HIDDEN TESTS"


def _meta(cell) -> dict:
    return cell.get("metadata", {}).get("nbgrader", {}) or {}


def is_test_cell(cell) -> bool:
    m = _meta(cell)
    return cell.get("cell_type") == "code" and bool(m.get("grade")) and not m.get("solution")


def is_answer_cell(cell) -> bool:
    return bool(_meta(cell).get("solution"))


def without_hidden_tests(source: str) -> str:
    out, hidden = [], False
    for line in source.split("\n"):
        if HIDDEN_BEGIN in line:
            hidden = True
        elif HIDDEN_END in line:
            hidden = False
        elif not hidden:
            out.append(line)
    return "\n".join(out)


def function_names(cells) -> list[str]:
    """Names of the functions (and classes) defined at the top level of the answer cells."""
    names = []
    for cell in cells:
        if cell.get("cell_type") != "code" or not is_answer_cell(cell):
            continue
        try:
            tree = ast.parse(cell.source)
        except SyntaxError:
            continue
        names += [n.name for n in tree.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))]
    return list(dict.fromkeys(names))


def grader_meta(nb) -> dict:
    return nb.metadata.setdefault("grader", {})


# --------------------------------------------------------------------------- reading submissions

#: What is taken from a submission, at most (JSON-encoded sizes: the student's cells travel to the
#: student process in one job frame, which must stay well under ``protocol.MAX_JSON``).
MAX_CELL_SOURCE = 1 << 20          # one cell's source
MAX_SUBMITTED_SOURCE = 4 << 20     # all the student's cells together
MAX_ADDED_CELLS = 200              # cells the student added
MAX_JSON_DEPTH = 64                # nesting of JSON values in the notebook file
_JSON_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"', re.S)
_JSON_TOKEN = re.compile(_JSON_STRING.pattern + r'|[\[\]{}]', re.S)


def _a(value) -> str:
    """What ``value`` is, in words ("a list"), never its (untrusted, maybe deeply nested) content."""
    name = {"str": "a string", "list": "a list", "dict": "a mapping", "int": "a number", "float": "a number",
            "bool": "true or false", "NoneType": "null"}
    return name.get(type(value).__name__, "something else")


def _mib(size: int) -> str:
    return f"{size / (1 << 20):.1f} MiB"


def _json_depth(text: str) -> int:
    """The deepest nesting of arrays and objects in the JSON ``text`` (strings skipped), without recursion."""
    from itertools import accumulate

    brackets = re.sub(r"[^\[\]{}]+", "", _JSON_STRING.sub("", text))
    return max(accumulate(1 if c in "[{" else -1 for c in brackets), default=0)


def _prune_deep(text: str, limit: int) -> tuple[str, int]:
    """``text`` with every array or object nested deeper than ``limit`` replaced by ``null``."""
    out, last, depth, cut, pruned = [], 0, 0, None, 0
    for m in _JSON_TOKEN.finditer(text):
        tok = m.group()
        if tok[0] == '"':
            continue
        if tok in "[{":
            depth += 1
            if depth == limit + 1:
                cut = m.start()
        else:
            if depth == limit + 1 and cut is not None:
                out += [text[last:cut], "null"]
                last, cut, pruned = m.end(), None, pruned + 1
            depth -= 1
    out.append(text[last:])
    return "".join(out), pruned


def _md_text(text: str) -> str:
    """Markdown that shows ``text`` as plain text (no HTML, links, emphasis or lists)."""
    table = {"&": "&amp;", "<": "&lt;", ">": "&gt;", **{c: "\\" + c for c in "\\!\"#$%'()*+,-./:;=?@[]^_`{|}~"}}
    return "".join(table.get(ch, ch) if ch.isprintable() else " " for ch in text)


def _md_note(note) -> str:
    """A note as Markdown: the parts in backticks become code spans (shown as they are, never read as
    HTML or maths), everything else is plain text. A backtick from a submission cannot open or close
    a code span: values from submissions are put in notes with :func:`grader.collect.quote`."""
    parts = " ".join(str(note).splitlines()).split("`")
    out = []
    for i, part in enumerate(parts):
        if i % 2 == 0:
            out.append(_md_text(part))
        elif i < len(parts) - 1 and part.strip():
            out.append(f"`{part}`")
        else:
            out.append(_md_text("`" + part + ("`" if i < len(parts) - 1 else "")))
    return "".join(out)


def _fenced(text: str) -> str:
    """Markdown that shows ``text`` verbatim: a fenced block (no HTML, no links, no maths), with a
    fence longer than any run of ``~`` in the text, so that nothing in it can close the block."""
    longest = max((len(run) for run in re.findall(r"~+", text)), default=0)
    fence = "~" * max(3, longest + 1)
    return f"{fence}\n{text}\n{fence}"


def clean_submission(data) -> tuple[nbformat.NotebookNode, list[str], list[str] | None]:
    """A fresh notebook with only what grading takes from a submission, every value type-checked:
    each cell's type, source (text) and nbgrader marks (``grade_id`` a short string, ``grade``,
    ``solution`` and ``locked`` true or false, ``points`` a number). A cell that is not one, or
    whose source or marks cannot be read, is left out; marks of the wrong type are ignored; the
    notebook's own metadata (``metadata.grader`` included) is not taken. Returns it, the notes, and
    the keys of the submission's ``metadata.grader`` (None: it has none; ``["?"]``: not a mapping)."""
    if not isinstance(data, dict) or not isinstance(data.get("cells"), list):
        raise ValueError("it has no list of cells")
    notes = []
    meta = data.get("metadata")
    grader = meta.get("grader") if isinstance(meta, dict) else None
    grader_keys = None if grader is None else sorted(map(str, grader)) if isinstance(grader, dict) else ["?"]
    cells = []
    for i, cell in enumerate(data["cells"], 1):
        where = f"Cell {i} of your notebook"
        if not isinstance(cell, dict):
            notes.append(f"{where} is {_a(cell)}, not a cell; it was left out.")
            continue
        md = cell.get("metadata", {})
        nbg = md.get("nbgrader") if isinstance(md, dict) else None
        gid = nbg.get("grade_id") if isinstance(nbg, dict) else None
        if isinstance(gid, str) and 0 < len(gid) <= 200:
            where += f" ({quote(gid)})"
        ctype, src = cell.get("cell_type"), cell.get("source", "")
        if ctype not in ("code", "markdown", "raw"):
            notes.append(f"{where} has no valid cell type; it was left out.")
            continue
        if isinstance(src, list) and all(isinstance(line, str) for line in src):
            src = "".join(src)
        if not isinstance(src, str):
            notes.append(f"{where} has {_a(src)} as its source, not text; it was left out.")
            continue
        if not isinstance(md, dict):
            notes.append(f"The metadata of {where[0].lower()}{where[1:]} is {_a(md)}, not a mapping; it was ignored.")
            md, nbg = {}, None
        clean_md = {}
        if nbg is not None:
            if not isinstance(nbg, dict):
                notes.append(f"The nbgrader metadata of {where[0].lower()}{where[1:]} is {_a(nbg)}, not a mapping; "
                             f"the cell was left out.")
                continue
            if "grade_id" in nbg and not (isinstance(gid, str) and 0 < len(gid) <= 200):
                notes.append(f"The grade_id of {where[0].lower()}{where[1:]} is {_a(gid)}, not a short string; "
                             f"the cell was left out.")
                continue
            marks, bad = ({"grade_id": gid} if gid else {}), []
            for key in ("grade", "solution", "locked"):
                if key in nbg:
                    if isinstance(nbg[key], bool):
                        marks[key] = nbg[key]
                    else:
                        bad.append(key)
            if "points" in nbg:
                p = nbg["points"]
                if isinstance(p, (int, float)) and not isinstance(p, bool) and math.isfinite(p):
                    marks["points"] = p
                else:
                    bad.append("points")
            if bad:
                notes.append(f"The grading marks {', '.join(bad)} of {where[0].lower()}{where[1:]} were not valid "
                             f"and were ignored.")
            clean_md["nbgrader"] = marks
        make = {"code": nbformat.v4.new_code_cell, "markdown": nbformat.v4.new_markdown_cell,
                "raw": nbformat.v4.new_raw_cell}[ctype]
        cells.append(make(source=src, metadata=clean_md))
    return nbformat.v4.new_notebook(cells=cells), notes, grader_keys


def read_submission(filename: str) -> tuple[nbformat.NotebookNode, list[str], str, list[str] | None]:
    """Read a submitted notebook without trusting it: ``(clean notebook, notes, sha256 of the file,
    keys of its metadata.grader)`` (see :func:`clean_submission`).
    Values nested deeper than :data:`MAX_JSON_DEPTH` are dropped before parsing (no recursion on
    the file's structure); raises ValueError (or another exception) if it cannot be read at all."""
    data = read_regular(filename, MAX_NOTEBOOK_BYTES)
    digest = hashlib.sha256(data).hexdigest()
    text = data.decode("utf-8")
    notes = []
    depth = _json_depth(text)
    if depth > MAX_JSON_DEPTH:
        text, pruned = _prune_deep(text, MAX_JSON_DEPTH)
        notes.append(f"{pruned} value(s) in your notebook file were nested {depth} levels deep, more than the "
                     f"{MAX_JSON_DEPTH} allowed; they were dropped.")
    raw = json.loads(text)
    if isinstance(raw, dict) and raw.get("nbformat") != 4:
        raw = nbformat.convert(nbformat.from_dict(raw), 4)
    nb, more, grader_keys = clean_submission(raw)
    return nb, notes + more, digest, grader_keys


class TolerantNotebookExporter(NotebookExporter):
    """Reads what it can; an unreadable submission becomes an empty notebook with the reason attached.

    A submission (the sanitizing pass of ``nbgrader autograde``) is read with :func:`read_submission`:
    only type-checked cells, nothing nested deeper than :data:`MAX_JSON_DEPTH`. What the reader
    noticed goes to ``resources["grader"]`` (``notes``, the file's ``sha256``, its ``path``), never
    into the notebook, whose ``metadata.grader`` a student could write. The autograding pass re-reads
    the grader's own output, as it is."""

    def from_filename(self, filename, resources=None, **kw):
        sanitizing = getattr(self.parent, "_sanitizing", None)  # nbgrader's Autograde: which pass this is
        if sanitizing is None:  # (not known: only the autograded folder holds the grader's own output)
            cd = getattr(self.parent, "coursedir", None)
            own_output = cd is not None and os.path.realpath(filename).startswith(
                os.path.realpath(os.path.join(cd.root, cd.autograded_directory)) + os.sep)
        else:
            own_output = sanitizing is False
        info = {"path": filename, "file": os.path.abspath(filename), "notes": [], "sha256": None,
                "cleaned": not own_output}
        try:
            if own_output:
                with open(filename, encoding="utf-8") as f:
                    nb = nbformat.read(f, as_version=4)
            else:
                nb, info["notes"], info["sha256"], info["grader_keys"] = read_submission(filename)
        except Exception as e:  # noqa: BLE001 - whatever is wrong with the file, the student gets a record
            self.log.warning("Unreadable submission %s: %s", filename, type(e).__name__)
            nb = nbformat.v4.new_notebook()
            note = (f"Your notebook file could not be read ({quote(f'{type(e).__name__}: {e}', 300)}); "
                    f"it was graded as an empty notebook.")
            info["notes"] = [note]
            if own_output:
                grader_meta(nb)["notes"] = [note]
        resources = self._init_resources(resources)
        if "metadata" not in resources or resources["metadata"] == "":
            resources["metadata"] = {}
        path = os.path.dirname(filename)
        resources["metadata"]["path"] = path
        resources["metadata"]["name"] = os.path.splitext(os.path.basename(filename))[0]
        resources["grader"] = info
        return self.from_notebook_node(nb, resources=resources, **kw)


# --------------------------------------------------------------------------- sanitizing

class RebuildFromSource(NbGraderPreprocessor):
    """Rebuild the submission from the instructor's source notebook; keep only the student's answers.

    Only the student's answer cells (matched by ``grade_id``) and the cells they added are taken,
    each at most :data:`MAX_CELL_SOURCE` (and :data:`MAX_SUBMITTED_SOURCE` in all, at most
    :data:`MAX_ADDED_CELLS` added cells); markdown from the student is shown verbatim (a fenced
    block: no HTML, links or maths reach the feedback). The notes for the feedback come from the
    reader (``resources["grader"]``) and from the grader's own notes beside ``submitted/``
    (:func:`grader.collect.grader_notes`), never from the submission's metadata. A submission whose
    student id or exercise is not a safe name, or that was not read from literally
    ``submitted/<student>/<exercise>/``, is graded as an empty notebook, with the reason; one that
    another folder's name matches as a pattern is refused (an error, nothing written). Whatever
    goes wrong with a submission (a RecursionError included), it is graded as an empty notebook
    with the reason."""

    def source_path(self, resources) -> Path:
        cd = CourseDirectory(parent=self)
        nbg = resources["nbgrader"]
        folder = cd.format_path(cd.source_directory, ".", nbg["assignment"])
        return Path(folder) / f"{nbg['notebook']}.ipynb"

    def preprocess(self, nb, resources):
        info = resources.get("grader") if isinstance(resources.get("grader"), dict) else {}
        notes = [n for n in info.get("notes", []) if isinstance(n, str)]
        refused = self._refusal(resources, info)
        if refused:
            self.log.error("Refused %s: %s", info.get("path"), refused)
            nb, notes = nbformat.v4.new_notebook(), [refused]
        else:
            notes += self._grader_notes(resources, info)
        try:
            if not info.get("cleaned"):
                nb, more, info["grader_keys"] = clean_submission(nb)
                notes += more
            return self._rebuild(nb, resources, notes, info.get("grader_keys"))
        except Exception as e:  # noqa: BLE001 - RecursionError included: the student still gets a record
            self.log.exception("Could not rebuild %s", info.get("path"))
            note = (f"Your notebook could not be processed ({quote(f'{type(e).__name__}: {e}', 200)}); it was "
                    f"graded as an empty notebook.")
            return self._rebuild(nbformat.v4.new_notebook(), resources, notes + [note])

    def _refusal(self, resources, info) -> str | None:
        """Why this notebook must not be graded under its student id (None: it may)."""
        nbg = resources.get("nbgrader", {})
        names = [(what, nbg.get(key)) for what, key in (("student id", "student"), ("exercise name", "assignment"),
                                                         ("notebook name", "notebook"))]
        for what, value in names:
            why = why_unsafe(value) if isinstance(value, str) and value else "it is missing"
            if why:
                return (f"This submission was not graded: its {what} {quote(value or '')} is not a safe name ({why}). "
                        f"It was graded as an empty notebook; tell your instructor.")
        (_, student), (_, assignment), (_, notebook) = names
        path = info.get("path") or os.path.join(resources.get("metadata", {}).get("path", ""), f"{notebook}.ipynb")
        converter = getattr(self.parent, "parent", None)
        folders = getattr(converter, "assignments", None)
        if isinstance(folders, dict):  # nbgrader globs folder names: "[r]ef04" or "*" match "ref04"
            others = [k for k, files in folders.items()
                      if path in files and os.path.normpath(k) != os.path.normpath(os.path.dirname(path))]
            if others:
                raise RuntimeError(f"{path} is also matched, as a pattern, by the submission folder(s) {others}; "
                                   f"refusing to grade it (run `python -m grader scrub` first)")
        cd = CourseDirectory(parent=self)
        folder = cd.format_path(cd.submitted_directory, student, assignment)
        expected = os.path.join(os.path.realpath(cd.root), os.path.relpath(folder, cd.root), f"{notebook}.ipynb")
        if os.path.realpath(path) != expected:
            return (f"This submission was not graded: the notebook was not read from its own folder "
                    f"{quote(os.path.relpath(folder, cd.root), 200)} (it came from {quote(str(path), 200)}). "
                    f"It was graded as an empty notebook; tell your instructor.")
        return None

    def _grader_notes(self, resources, info) -> list[str]:
        """The grader's notes on this submission (``<course>/.grader-notes``, written by ``grader scrub``
        and ``grader autograde``), if they are about the notebook being graded."""
        nbg = resources.get("nbgrader", {})
        try:
            root = CourseDirectory(parent=self).root
            return grader_notes(root, nbg["student"], nbg["assignment"], f"{nbg['notebook']}.ipynb",
                                info.get("sha256"))
        except Exception:  # noqa: BLE001 - no notes is better than no grade
            self.log.exception("Could not read the grader's notes")
            return []

    def _rebuild(self, nb, resources, notes, grader_keys=None):
        source = nbformat.read(self.source_path(resources), as_version=4)
        ours = source.metadata.get("grader", {})
        if grader_keys and set(grader_keys) - set(ours if isinstance(ours, dict) else ()):
            notes.append("The grader's metadata in your notebook (`metadata.grader`) was ignored: it is the grader's "
                         "to write.")
        known = {}
        for cell in source.cells:
            gid = _meta(cell).get("grade_id")
            if gid:
                known[gid] = cell
        answers, extras, anchor, seen = {}, {None: []}, None, set()
        budget, added = MAX_SUBMITTED_SOURCE, 0

        def take(text: str, what: str, instead: str) -> str | None:
            """``text`` if it fits the limits, else None (and a note saying what happened)."""
            nonlocal budget
            size = len(json.dumps(text))
            if size > MAX_CELL_SOURCE:
                notes.append(f"{what} is {_mib(size)}, more than the {_mib(MAX_CELL_SOURCE)} allowed for one cell; "
                             f"{instead}.")
                return None
            if size > budget:
                notes.append(f"{what} ({_mib(size)}) would take your cells past the {_mib(MAX_SUBMITTED_SOURCE)} "
                             f"allowed in all; {instead}.")
                return None
            budget -= size
            return text

        for cell in nb.cells:
            gid = _meta(cell).get("grade_id")
            if gid in known and gid not in seen:
                seen.add(gid)
                anchor = gid
                extras.setdefault(gid, [])
                src_cell = known[gid]
                marks = ("grade", "solution", "locked", "points")
                if any(_meta(cell).get(k) != _meta(src_cell).get(k) for k in marks):
                    notes.append(f"The grading marks of cell {quote(gid)} (points, type of cell) were changed in "
                                 f"your notebook; the originals were used.")
                if is_answer_cell(src_cell):
                    if cell.get("cell_type") != src_cell.cell_type:
                        notes.append(f"Your answer cell {quote(gid)} had its type changed; it was read as "
                                     f"{src_cell.cell_type} again.")
                    text = take(cell.source, f"Your answer cell {quote(gid)}", "it was graded as empty")
                    if text is not None:
                        answers[gid] = text
                elif self._release_source(src_cell).strip() != cell.source.strip():
                    what = "test" if is_test_cell(src_cell) else "read-only"
                    notes.append(f"The {what} cell {quote(gid)} was changed in your notebook; the original was used.")
                elif cell.get("cell_type") != src_cell.cell_type:
                    notes.append(f"The cell {quote(gid)} had its type changed; the original was used.")
                continue
            if cell.get("cell_type") not in ("code", "markdown"):
                continue
            if gid or _meta(cell):
                notes.append("A cell carrying grading marks that are not in the original "
                             f"({quote(gid) if gid else 'no grade_id'}) was kept as an ordinary cell (no points).")
            after = f"after {quote(anchor)}" if anchor else "at the top"
            if added >= MAX_ADDED_CELLS:
                if added == MAX_ADDED_CELLS:
                    notes.append(f"You added more than {MAX_ADDED_CELLS} cells; the cells from {after} on were "
                                 f"left out.")
                added += 1
                continue
            text = take(cell.source, f"A {cell.cell_type} cell you added ({after})", "it was left out")
            if text is None:
                continue
            added += 1
            if cell.cell_type == "code":
                new = nbformat.v4.new_code_cell(text)
            else:  # shown as written: no HTML, links or maths from a submission reach a page
                new = nbformat.v4.new_markdown_cell(_fenced(text))
            new.metadata["grader"] = {"submitted": True}
            extras[anchor].append(new)
        if seen:  # (a notebook with none of the cells is unreadable or empty: one note says so)
            for gid in known:
                if gid not in seen and (is_answer_cell(known[gid]) or is_test_cell(known[gid])):
                    kind = "answer" if is_answer_cell(known[gid]) else "test"
                    notes.append(f"The {kind} cell {quote(gid)} was missing from your notebook"
                                 + ("; it was graded as empty." if kind == "answer" else "; the original was used."))
        elif not notes:
            notes.append("Your notebook has none of the exercise's cells; it was graded as an empty notebook.")
        cells = list(extras[None])
        for scell in source.cells:
            gid = _meta(scell).get("grade_id")
            cell = copy.deepcopy(scell)
            if gid and is_answer_cell(scell):
                text = answers.get(gid, "")
                cell.source = _fenced(text) if cell.cell_type == "markdown" and text else text
            if cell.cell_type == "code":
                cell.outputs, cell.execution_count = [], None
            cells.append(cell)
            if gid:
                cells += extras.get(gid, [])
        nb.cells = cells
        kernelspec = source.metadata.get("kernelspec")
        nb.metadata = copy.deepcopy(source.metadata)
        if kernelspec:
            nb.metadata["kernelspec"] = kernelspec
        meta = grader_meta(nb)
        meta["notes"] = notes
        meta["functions"] = function_names(source.cells)
        return nb, resources

    @staticmethod
    def _release_source(cell) -> str:
        return without_hidden_tests(cell.source) if is_test_cell(cell) else cell.source


class HideHiddenTests(NbGraderPreprocessor):
    """For feedback: a test cell shows its visible tests and every error message, not the hidden tests' code.

    A markdown cell from the student (one without the instructor's nbgrader marks) is shown verbatim
    (a fenced block), also in notebooks graded before ``RebuildFromSource`` did that itself."""

    placeholder = Unicode("# ... hidden tests ran here (their code is not shown) ...").tag(config=True)

    def preprocess_cell(self, cell, resources, index):
        if cell.cell_type == "code" and HIDDEN_BEGIN in cell.source:
            out, hidden = [], False
            for line in cell.source.split("\n"):
                if HIDDEN_BEGIN in line:
                    hidden = True
                    out.append(line[: len(line) - len(line.lstrip())] + self.placeholder)
                elif HIDDEN_END in line:
                    hidden = False
                elif not hidden:
                    out.append(line)
            cell.source = "\n".join(out)
        elif cell.cell_type == "markdown" and not _meta(cell):
            grader = cell.metadata.get("grader")
            grader = grader if isinstance(grader, dict) else {}
            if not grader.get("report") and not grader.get("submitted"):
                cell.source = _fenced(cell.source)
        return cell, resources


# --------------------------------------------------------------------------- running

class _Reader(threading.Thread):
    """Collect frames (or raw bytes, for logs) from one pipe, up to a size cap."""

    def __init__(self, fd: int, frames: bool, cap: int):
        super().__init__(daemon=True)
        self.fd, self.frames, self.cap = fd, frames, cap
        self.items: list = []
        self.raw = bytearray()
        self.error: str | None = None

    def run(self):
        total = 0
        try:
            while True:
                if self.frames:
                    try:
                        frame = protocol.read_frame(self.fd, min(protocol.MAX_JSON, self.cap - total))
                    except EOFError:
                        return
                    total += len(frame) + 4
                    self.items.append(json.loads(frame.decode("utf-8")))
                else:
                    chunk = os.read(self.fd, 65536)
                    if not chunk:
                        return
                    self.raw += chunk
                    if len(self.raw) > self.cap:
                        del self.raw[: len(self.raw) - self.cap]
        except (protocol.ProtocolError, OSError, UnicodeDecodeError, ValueError, RecursionError) as e:
            self.error = f"{type(e).__name__}: {str(e)[:200]}"
        finally:
            os.close(self.fd)


def _clean_outputs(outputs) -> list:
    """Untrusted outputs (from the student process) reduced to plain, bounded nbformat outputs."""
    clean = []
    if not isinstance(outputs, list):
        return clean
    for o in outputs[:30]:
        if not isinstance(o, dict):
            continue
        t = o.get("output_type")
        try:
            if t == "stream" and o.get("name") in ("stdout", "stderr") and isinstance(o.get("text"), str):
                clean.append(new_output("stream", name=o["name"], text=o["text"][:20000]))
            elif t == "error":
                tb = o.get("traceback") if isinstance(o.get("traceback"), list) else []
                clean.append(new_output("error", ename=str(o.get("ename", ""))[:200],
                                        evalue=str(o.get("evalue", ""))[:5000],
                                        traceback=[str(s)[:20000] for s in tb[:30]]))
            elif t == "display_data" and isinstance(o.get("data"), dict):
                data = {}
                if isinstance(o["data"].get("text/plain"), str):
                    data["text/plain"] = o["data"]["text/plain"][:20000]
                png = o["data"].get("image/png")
                if isinstance(png, str) and len(png) < (3 << 20) and re.fullmatch(r"[A-Za-z0-9+/=\s]*", png):
                    data["image/png"] = png
                if data:
                    clean.append(new_output("display_data", data=data))
        except Exception:  # noqa: BLE001 - a malformed output is dropped
            continue
    return clean


def _trusted_outputs(outputs) -> list:
    return [nbformat.from_dict(o) for o in outputs]


def _kill(proc: subprocess.Popen | None) -> None:
    if proc is None or proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    try:
        proc.wait(5)
    except subprocess.TimeoutExpired:
        pass


class SandboxedExecute(NbGraderPreprocessor):
    """Execute a notebook for grading: the student's cells and the tests in separate sandboxes."""

    python = Unicode(str(REPO / ".venv" / "bin" / "python"),
                     help="The course's Python (with torch and course_lib) that runs the notebooks.").tag(config=True)
    timeout = Integer(120, help="Wall-clock seconds for the whole notebook (student cells and tests).").tag(config=True)
    cell_timeout = Integer(30, help="Seconds each of the student's cells may run.").tag(config=True)
    call_timeout = Integer(20, help="Seconds each call of a student's function by a test may run.").tag(config=True)
    cpu_seconds = Integer(0, help="CPU seconds per process (0: the wall-clock timeout).").tag(config=True)
    memory_mb = Integer(3072, help="Data memory per process in MiB (RLIMIT_DATA).").tag(config=True)
    tmp_mb = Integer(256, help="Size of the private writable /tmp of each sandbox, in MiB.").tag(config=True)
    hidden_modules = List(Unicode(), [], help="Modules the student's code may not import (added to the "
                          "notebook's own metadata.grader.hide_modules).").tag(config=True)
    report = Bool(True, help="Add a short grading report (limits, what happened) at the top.").tag(config=True)

    def limits(self) -> sandbox.Limits:
        return sandbox.Limits(cpu_seconds=self.cpu_seconds or self.timeout, memory=self.memory_mb << 20,
                              tmp_size=self.tmp_mb << 20)

    def preprocess(self, nb, resources):
        start = time.monotonic()
        meta = grader_meta(nb)
        notes = list(meta.get("notes", []))
        functions = meta.get("functions") or function_names(nb.cells)
        hidden = tuple(dict.fromkeys(list(meta.get("hide_modules", [])) + list(self.hidden_modules)
                                     + hide.implementations(self.python, meta.get("methods", []))))
        code = [(i, c) for i, c in enumerate(nb.cells) if c.cell_type == "code"]
        tests = [(i, c) for i, c in code if is_test_cell(c)]
        student = [(i, c) for i, c in code if not is_test_cell(c) and "reference" not in c.metadata.get("tags", [])]
        for _, c in code:
            c.outputs, c.execution_count = [], None

        a_job = {"cells": [{"id": str(i), "source": c.source} for i, c in student], "cwd": "/tmp",
                 "preload": ["numpy", "torch", "matplotlib.pyplot", "course_lib.models", "course_lib.imaging"],
                 "forbid": [str(f) for f in meta.get("forbid", [])],
                 "cell_timeout": self.cell_timeout, "call_timeout": self.call_timeout}
        b_job = {"cells": [{"id": str(i), "source": c.source} for i, c in tests], "functions": functions,
                 "student_cells": [str(i) for i, _ in student], "cell_timeout": self.cell_timeout,
                 "setup_timeout": max(1, self.timeout - 5), "call_timeout": self.call_timeout}
        a_res, b_res, events = self._run(a_job, b_job, hidden)

        for i, c in student:
            c.outputs = _clean_outputs(a_res.get(str(i), []))
            if str(i) == events.get("stuck_cell"):
                c.outputs.append(new_output("error", ename="CellTimeout", evalue=events["stuck_note"],
                                            traceback=[f"CellTimeout: {events['stuck_note']}"]))
        for i, c in tests:
            if str(i) in b_res:
                c.outputs = _trusted_outputs(b_res[str(i)])
            else:
                c.outputs = [new_output("error", ename="GradingError", evalue=events["unfinished"],
                                        traceback=[f"GradingError: {events['unfinished']}"])]
        for n, (i, c) in enumerate(code, 1):
            c.execution_count = n
        notes += events["notes"]
        elapsed = time.monotonic() - start
        meta["seconds"] = round(elapsed, 2)
        meta["events"] = events["notes"]
        meta["cell_seconds"] = events.get("seconds", {})
        if self.report:
            nb.cells.insert(0, self._report_cell(notes, elapsed))
        self.log.info("Graded in a sandbox in %.1f s%s", elapsed, "; " + " | ".join(notes) if notes else "")
        return nb, resources

    def _report_cell(self, notes, elapsed):
        lines = [f"**Autograded** in a sandbox in {elapsed:.0f} s (limits: {self.timeout} s for the notebook, "
                 f"{self.cell_timeout} s per cell, {self.call_timeout} s per call of your functions, "
                 f"{self.memory_mb} MiB of memory, no network)."]
        if notes:  # (values from submissions are in code spans; everything else is plain text)
            lines.append("")
            lines += [f"- {_md_note(n)}" for n in notes]
        cell = new_markdown_cell("\n".join(lines))
        cell.metadata["grader"] = {"report": True}
        return cell

    def _run(self, a_job, b_job, hidden):
        events = {"notes": [], "unfinished": f"the tests did not finish within {self.timeout} s "
                                              f"(the time limit for the whole notebook)"}
        info = sandbox.python_info(self.python, hidden)
        limits = self.limits()
        req_r, req_w = os.pipe()          # test process -> student process: calls
        resp_r, resp_w = os.pipe()        # student process -> test process: cell outputs, then answers
        b_out_r, b_out_w = os.pipe()      # test process -> driver: test results and the student's outputs
        # (the student process has no channel to the driver but its log, which is never shown)
        a_in_r, a_in_w = os.pipe()
        b_in_r, b_in_w = os.pipe()
        a_log_r, a_log_w = os.pipe()
        b_log_r, b_log_w = os.pipe()
        a = b = None
        groups = [sandbox.Cgroup(limits), sandbox.Cgroup(limits)]
        try:
            a_cmd = groups[0].wrap(sandbox.bwrap_argv(
                info, ["-m", "grader.student_runner", str(req_r), str(resp_w)], limits, hidden))
            b_cmd = groups[1].wrap(sandbox.bwrap_argv(
                info, ["-m", "grader.test_runner", str(resp_r), str(req_w), str(b_out_w)], limits))
            a = subprocess.Popen(a_cmd, stdin=a_in_r, stdout=a_log_w, stderr=a_log_w,
                                 pass_fds=(req_r, resp_w), start_new_session=True)
            b = subprocess.Popen(b_cmd, stdin=b_in_r, stdout=b_log_w, stderr=b_log_w,
                                 pass_fds=(resp_r, req_w, b_out_w), start_new_session=True)
        except Exception:
            for fd in (b_out_r, a_in_w, b_in_w, a_log_r, b_log_r):
                os.close(fd)
            _kill(a)
            for g in groups:
                g.remove()
            raise
        finally:
            for fd in (req_r, req_w, resp_r, resp_w, b_out_w, a_in_r, b_in_r, a_log_w, b_log_w):
                os.close(fd)
        readers = [_Reader(b_out_r, True, 96 << 20), _Reader(a_log_r, False, 64 << 10),
                   _Reader(b_log_r, False, 64 << 10)]
        for r in readers:
            r.start()
        deadline = time.monotonic() + self.timeout
        for fd, job in ((a_in_w, a_job), (b_in_w, b_job)):
            try:
                protocol.write_json(fd, job, deadline)
            except (OSError, protocol.Deadline):
                pass
            finally:
                os.close(fd)
        timed_out = False
        try:
            b.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            timed_out = True
        # the student process ends by itself once the test process has closed its end
        try:
            a.wait(0 if timed_out else 3)
        except subprocess.TimeoutExpired:
            pass
        a_status = a.poll()
        _kill(b)
        _kill(a)
        for r in readers:
            r.join(5)
        for g in groups:
            g.remove()
        b_out, a_log, b_log = readers
        messages = [m for m in b_out.items if isinstance(m, dict)]
        student_out = [m for m in messages if "student_cell" in m]   # forwarded by the test process
        events["seconds"] = {"student": {str(m["student_cell"]): m.get("seconds") for m in student_out},
                             "tests": {str(m.get("cell")): m.get("seconds") for m in messages if "cell" in m}}
        self.log.debug("test process log: %s", bytes(b_log.raw[-3000:]).decode("utf-8", "replace"))
        a_res = {str(m["student_cell"]): m.get("outputs") for m in student_out}
        b_res = {str(m["cell"]): m["outputs"] for m in messages if "cell" in m}
        done = [m for m in messages if m.get("done")]
        ready = bool(done) and not done[0].get("broken")
        stuck = [m["stuck_cell"] for m in messages if "stuck_cell" in m]
        if stuck:
            events["stuck_cell"] = str(stuck[0])
            events["stuck_note"] = (f"this cell ran past its time limit of {self.cell_timeout} s and did not stop "
                                    f"when interrupted; it was stopped, and the cells after it did not run")
        if timed_out:
            events["notes"].append(f"Grading stopped at the time limit of {self.timeout} s for the whole notebook; "
                                   f"tests that had not run get zero.")
        elif not done:
            tail = bytes(b_log.raw[-3000:]).decode("utf-8", "replace")
            self.log.error("The test process failed (exit %s): %s", b.returncode, tail)
            events["notes"].append("The grading tests could not be run to the end (a problem on the grading side); "
                                   "tell your instructor.")
            events["unfinished"] = "the grading tests could not be run (grading-side failure)"
        if done and done[0].get("broken"):
            events["notes"].append("Your code could not be asked: " + str(done[0]["broken"]) + ".")
        if not ready and a_status is not None and a_status != 0:
            events["notes"].append(f"The process running your notebook ended early "
                                   f"({self._describe_status(a_status)}).")
        if b_out.error:
            events["notes"].append(f"The outputs could not all be read ({b_out.error}).")
        return a_res, b_res, events

    @staticmethod
    def _describe_status(status: int) -> str:
        if status < 0 or status > 128:
            sig = -status if status < 0 else status - 128
            name = signal.Signals(sig).name if sig in signal.valid_signals() else str(sig)
            hint = {signal.SIGKILL: " - probably a time or memory limit",
                    signal.SIGXCPU: " - the CPU-time limit"}.get(sig, "")
            return f"killed by {name}{hint}"
        return f"exit status {status}"
