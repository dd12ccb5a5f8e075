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
import json
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

from nbgrader.preprocessors import NbGraderPreprocessor

from . import protocol, sandbox

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

class TolerantNotebookExporter(NotebookExporter):
    """Reads what it can; an unreadable submission becomes an empty notebook with the reason attached."""

    def from_filename(self, filename, resources=None, **kw):
        try:
            size = os.path.getsize(filename)
            if size > MAX_NOTEBOOK_BYTES:
                raise ValueError(f"the file is {size >> 20} MiB, more than the {MAX_NOTEBOOK_BYTES >> 20} MiB allowed")
            with open(filename, encoding="utf-8") as f:
                nb = nbformat.read(f, as_version=4)
            if not isinstance(nb.get("cells"), list):
                raise ValueError("it has no list of cells")
        except Exception as e:  # noqa: BLE001 - whatever is wrong with the file, the student gets a record
            self.log.warning("Unreadable submission %s: %s", filename, e)
            nb = nbformat.v4.new_notebook()
            grader_meta(nb)["notes"] = [f"Your notebook file could not be read ({type(e).__name__}: "
                                        f"{str(e)[:300]}); it was graded as an empty notebook."]
        resources = self._init_resources(resources)
        if "metadata" not in resources or resources["metadata"] == "":
            resources["metadata"] = {}
        path = os.path.dirname(filename)
        resources["metadata"]["path"] = path
        resources["metadata"]["name"] = os.path.splitext(os.path.basename(filename))[0]
        return self.from_notebook_node(nb, resources=resources, **kw)


# --------------------------------------------------------------------------- sanitizing

class RebuildFromSource(NbGraderPreprocessor):
    """Rebuild the submission from the instructor's source notebook; keep only the student's answers."""

    def source_path(self, resources) -> Path:
        from nbgrader.coursedir import CourseDirectory

        cd = CourseDirectory(parent=self)
        nbg = resources["nbgrader"]
        folder = cd.format_path(cd.source_directory, ".", nbg["assignment"])
        return Path(folder) / f"{nbg['notebook']}.ipynb"

    def preprocess(self, nb, resources):
        source = nbformat.read(self.source_path(resources), as_version=4)
        notes = list(grader_meta(nb).get("notes", []))
        known = {}
        for cell in source.cells:
            gid = _meta(cell).get("grade_id")
            if gid:
                known[gid] = cell
        answers, extras, anchor, seen = {}, {None: []}, None, set()
        for cell in nb.cells:
            gid = _meta(cell).get("grade_id")
            if gid in known and gid not in seen:
                seen.add(gid)
                anchor = gid
                extras.setdefault(gid, [])
                src_cell = known[gid]
                marks = ("grade", "solution", "locked", "points")
                if any(_meta(cell).get(k) != _meta(src_cell).get(k) for k in marks):
                    notes.append(f"The grading marks of cell `{gid}` (points, type of cell) were changed in your "
                                 f"notebook; the originals were used.")
                if is_answer_cell(src_cell):
                    if cell.get("cell_type") != src_cell.cell_type:
                        notes.append(f"Your answer cell `{gid}` had its type changed; it was read as "
                                     f"{src_cell.cell_type} again.")
                    answers[gid] = str(cell.get("source", ""))
                elif self._release_source(src_cell).strip() != str(cell.get("source", "")).strip():
                    what = "test" if is_test_cell(src_cell) else "read-only"
                    notes.append(f"The {what} cell `{gid}` was changed in your notebook; the original was used.")
                elif cell.get("cell_type") != src_cell.cell_type:
                    notes.append(f"The cell `{gid}` had its type changed; the original was used.")
                continue
            if cell.get("cell_type") not in ("code", "markdown"):
                continue
            if gid or _meta(cell):
                notes.append("A cell carrying grading marks that are not in the original "
                             f"(`{gid or '?'}`) was kept as an ordinary cell (no points).")
            new = (nbformat.v4.new_code_cell if cell.cell_type == "code" else nbformat.v4.new_markdown_cell)(
                str(cell.get("source", "")))
            extras[anchor].append(new)
        if seen:  # (a notebook with none of the cells is unreadable or empty: one note says so)
            for gid in known:
                if gid not in seen and (is_answer_cell(known[gid]) or is_test_cell(known[gid])):
                    kind = "answer" if is_answer_cell(known[gid]) else "test"
                    notes.append(f"The {kind} cell `{gid}` was missing from your notebook"
                                 + ("; it was graded as empty." if kind == "answer" else "; the original was used."))
        elif not notes:
            notes.append("Your notebook has none of the exercise's cells; it was graded as an empty notebook.")
        cells = list(extras[None])
        for scell in source.cells:
            gid = _meta(scell).get("grade_id")
            cell = copy.deepcopy(scell)
            if gid and is_answer_cell(scell):
                cell.source = answers.get(gid, "")
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
    """For feedback: a test cell shows its visible tests and every error message, not the hidden tests' code."""

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
        hidden = tuple(dict.fromkeys(list(meta.get("hide_modules", [])) + list(self.hidden_modules)))
        code = [(i, c) for i, c in enumerate(nb.cells) if c.cell_type == "code"]
        tests = [(i, c) for i, c in code if is_test_cell(c)]
        student = [(i, c) for i, c in code if not is_test_cell(c) and "reference" not in c.metadata.get("tags", [])]
        for _, c in code:
            c.outputs, c.execution_count = [], None

        a_job = {"cells": [{"id": str(i), "source": c.source} for i, c in student], "cwd": "/tmp",
                 "preload": ["numpy", "torch", "matplotlib.pyplot", "course_lib.models", "course_lib.imaging"],
                 "cell_timeout": self.cell_timeout, "call_timeout": self.call_timeout}
        b_job = {"cells": [{"id": str(i), "source": c.source} for i, c in tests], "functions": functions,
                 "setup_timeout": max(1, self.timeout - 5), "call_timeout": self.call_timeout}
        a_res, b_res, events = self._run(a_job, b_job, hidden)

        for i, c in student:
            c.outputs = _clean_outputs(a_res.get(str(i), []))
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
        if notes:
            lines.append("")
            lines += [f"- {n}" for n in notes]
        cell = new_markdown_cell("\n".join(lines))
        cell.metadata["grader"] = {"report": True}
        return cell

    def _run(self, a_job, b_job, hidden):
        events = {"notes": [], "unfinished": f"the tests did not finish within {self.timeout} s "
                                              f"(the time limit for the whole notebook)"}
        info = sandbox.python_info(self.python, hidden)
        limits = self.limits()
        req_r, req_w = os.pipe()          # test process -> student process: calls
        resp_r, resp_w = os.pipe()        # student process -> test process: answers
        a_out_r, a_out_w = os.pipe()      # student process -> driver: cell outputs
        b_out_r, b_out_w = os.pipe()      # test process -> driver: test results
        a_in_r, a_in_w = os.pipe()
        b_in_r, b_in_w = os.pipe()
        a_log_r, a_log_w = os.pipe()
        b_log_r, b_log_w = os.pipe()
        a = b = None
        groups = [sandbox.Cgroup(limits), sandbox.Cgroup(limits)]
        try:
            a_cmd = groups[0].wrap(sandbox.bwrap_argv(
                info, ["-m", "grader.student_runner", str(req_r), str(resp_w), str(a_out_w)], limits, hidden))
            b_cmd = groups[1].wrap(sandbox.bwrap_argv(
                info, ["-m", "grader.test_runner", str(resp_r), str(req_w), str(b_out_w)], limits))
            a = subprocess.Popen(a_cmd, stdin=a_in_r, stdout=a_log_w, stderr=a_log_w,
                                 pass_fds=(req_r, resp_w, a_out_w), start_new_session=True)
            b = subprocess.Popen(b_cmd, stdin=b_in_r, stdout=b_log_w, stderr=b_log_w,
                                 pass_fds=(resp_r, req_w, b_out_w), start_new_session=True)
        except Exception:
            for fd in (a_out_r, b_out_r, a_in_w, b_in_w, a_log_r, b_log_r):
                os.close(fd)
            _kill(a)
            for g in groups:
                g.remove()
            raise
        finally:
            for fd in (req_r, req_w, resp_r, resp_w, a_out_w, b_out_w, a_in_r, b_in_r, a_log_w, b_log_w):
                os.close(fd)
        readers = [_Reader(a_out_r, True, 32 << 20), _Reader(b_out_r, True, 64 << 20),
                   _Reader(a_log_r, False, 64 << 10), _Reader(b_log_r, False, 64 << 10)]
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
        a_out, b_out, a_log, b_log = readers

        events["seconds"] = {"student": {str(m.get("cell")): m.get("seconds") for m in a_out.items
                                         if isinstance(m, dict) and "cell" in m},
                             "tests": {str(m.get("cell")): m.get("seconds") for m in b_out.items
                                       if isinstance(m, dict) and "cell" in m}}
        self.log.debug("test process log: %s", bytes(b_log.raw[-3000:]).decode("utf-8", "replace"))
        a_res = {str(m.get("cell")): m.get("outputs") for m in a_out.items if isinstance(m, dict) and "cell" in m}
        b_res = {str(m["cell"]): m["outputs"] for m in b_out.items if isinstance(m, dict) and "cell" in m}
        done = [m for m in b_out.items if isinstance(m, dict) and m.get("done")]
        ready = any(isinstance(m, dict) and m.get("ready") for m in a_out.items)
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
        if a_out.error:
            events["notes"].append(f"The outputs of your cells could not all be read ({a_out.error}).")
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
