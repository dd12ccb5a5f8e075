"""Reading a submitted notebook and rebuilding it from the instructor's source: nbgrader plug-ins
of the *driver* (runs in the grader venv, outside any sandbox).

``exercises/nbgrader_config.py`` puts them into ``nbgrader autograde`` and its feedback:

* :class:`TolerantNotebookExporter` -- a submission that is not a readable notebook (broken
  JSON, far too large) becomes an empty one instead of aborting the run: it gets zero, with
  the reason in its feedback.
* :class:`RebuildFromSource` (first sanitizing step) -- the notebook that is graded is rebuilt
  from the instructor's *source* notebook: every instructor cell (instructions, set-up, test
  cells with their hidden tests) is taken from there, and only the student's answer cells
  (nbgrader solution cells, matched by ``grade_id``) and the cells the student added come
  from the submission. A deleted, edited or re-typed test cell, changed points, a forged
  grade cell: none of it survives. What was found is listed in the feedback, and so are the
  suspicious routes in the student's code, flagged for the instructor (:mod:`grader.routes`;
  also in ``metadata.grader.flags`` and on the console).
* :class:`HideHiddenTests` (feedback) -- a test cell shows its visible tests and every error
  message, not the hidden tests' code; the student's markdown is shown verbatim.

The rebuilt notebook is what :mod:`grader.execute` runs; the helpers that tell its cells apart
(:func:`is_test_cell`, :func:`function_names`, ...) are here too.

Trust boundary: the submitted file is untrusted data; nothing of it runs here. It is read with
bounds (file size, JSON nesting, :data:`MAX_CELL_SOURCE` and the other limits) and every value
taken is type-checked (:func:`clean_submission`); its ``metadata.grader`` is ignored, and the
notes for the feedback come from the reader and from the grader's own notes
(:func:`grader.collect.grader_notes`), never from the submission. Markdown from the student
reaches the feedback only as a fenced block (:func:`_fenced`). Trusted: the instructor's source
notebook and the course folder (a submission is graded only if read from its own
``submitted/<student>/<exercise>/``).
"""
from __future__ import annotations

import ast
import copy
import hashlib
import json
import math
import os
import re
from pathlib import Path

import nbformat
from nbconvert.exporters import NotebookExporter
from traitlets import Unicode

from nbgrader.coursedir import CourseDirectory
from nbgrader.preprocessors import NbGraderPreprocessor

from . import routes
from .collect import MAX_FILE_BYTES, grader_notes, no_surrogates, quote, read_regular, why_unsafe

MAX_NOTEBOOK_BYTES = MAX_FILE_BYTES  # (64 MiB: what grader.collect collects)
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
        gid = no_surrogates(gid) if isinstance(gid, str) else gid  # (lone surrogates: U+FFFD, writable)
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
        src = no_surrogates(src)
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
    text = data.decode("utf-8", "replace")  # (a byte that is not UTF-8 costs that character, not the grade)
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
        flags = self._flag_routes(source, answers, extras, resources, notes)
        meta = grader_meta(nb)
        meta["notes"] = notes
        meta["functions"] = function_names(source.cells)
        meta["flags"] = flags
        return nb, resources

    #: at most this many flags are listed in the feedback (all of them stay in the metadata, up to 200)
    MAX_FLAGS_SHOWN = 12

    def _flag_routes(self, source, answers, extras, resources, notes) -> list[dict]:
        """Suspicious routes in the student's code (:mod:`grader.routes`), for the instructor: a note in
        the feedback's report, ``metadata.grader.flags`` of the autograded notebook, a console line."""
        try:
            flags = routes.notebook_flags(source.cells, answers, extras, source.metadata.get("grader", {}))
        except Exception:  # noqa: BLE001 - no flags is better than no grade
            self.log.exception("Could not scan the submission for suspicious routes")
            return []
        if not flags:
            return []
        shown = [f.text(quote) for f in flags[: self.MAX_FLAGS_SHOWN]]
        more = len(flags) - len(shown)
        notes.append("For your instructor to read: your code uses routes that can get around the rules of this "
                     "exercise or reach the grader (a flag, not a deduction; your instructor looks at them): "
                     + "; ".join(shown) + (f"; and {more} more." if more > 0 else "."))
        nbg = resources.get("nbgrader", {})
        self.log.warning("Flagged for the instructor: %s/%s: %d suspicious route(s): %s%s", nbg.get("student"),
                         nbg.get("assignment"), len(flags), "; ".join(shown), f"; and {more} more" if more > 0 else "")
        return routes.as_metadata(flags[:200])

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

