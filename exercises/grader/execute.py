"""Running a notebook for grading: :class:`SandboxedExecute`, the nbgrader plug-in that runs the
student's cells and the tests in two sandboxes (the *driver*; runs in the grader venv).

``exercises/nbgrader_config.py`` puts it into ``nbgrader autograde`` in place of nbgrader's own
``Execute``; ``python -m grader validate`` uses it too. It runs the notebook that
:mod:`grader.rebuild` made (the instructor's cells, the student's answers) in two sandboxes
(:mod:`grader.sandbox`): the student's cells in the *student process* (:mod:`grader.student`),
the test cells in the *test process* (:mod:`grader.judge`), which never runs student code and
calls the student's functions across the boundary. Wall-clock, per-cell, per-call, CPU and
memory limits; a notebook that breaks them gets zero for what could not be tested, and the
reason is in the feedback (a report cell at the top).

Trust boundary: the driver trusts the notebook it is given (rebuilt from the source: the test
cells, ``metadata.grader`` and the limits are the instructor's) and the test process, whose
outputs alone decide grades (nbgrader's rule: a test cell with an error output scores zero,
otherwise its points). Nothing from the student process is trusted: its outputs reach the
driver only as forwarded by the test process and are only shown, reduced to plain, bounded
nbformat outputs first (:func:`_clean_outputs`); every pipe is read with a size cap
(:class:`_Reader`); at the deadline both sandboxes are killed as whole process groups
(:func:`_kill`); in the report, values from a submission are code spans, never markup
(:func:`_md_note`).
"""
from __future__ import annotations

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
from nbformat.v4 import new_markdown_cell, new_output
from traitlets import Bool, Integer, List, Unicode

from nbgrader.preprocessors import NbGraderPreprocessor

from . import hide, protocol, sandbox
from .collect import no_surrogates
from .pool import code_fingerprint
from .rebuild import function_names, grader_meta, is_test_cell

REPO = Path(__file__).resolve().parents[2]


class GradingSideError(RuntimeError):
    """The grading side could not run a notebook at all (the test process, which never runs student code,
    failed before its first result: a broken venv, a sandbox that cannot start...). Raised, never
    turned into a student's zero: nbgrader fails on the submission, and ``python -m grader autograde``
    stops and says what is broken."""


# --------------------------------------------------------------------------- the report

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


def _duration(value) -> float | None:
    """A number of seconds a sandboxed process reported (its clock can be patched: NaN, infinity, a
    negative or huge number): a finite number >= 0, rounded, else None."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    try:
        value = float(value)
    except OverflowError:
        return None
    return round(value, 3) if math.isfinite(value) and value >= 0 else None


def _strict_json(node) -> None:
    """Make a notebook (or any JSON data) writable as strict JSON, in place, without recursion: lone
    surrogates in strings and keys (a file name that is not UTF-8, printed by a cell) become U+FFFD,
    as nbgrader's writer would fail on them; numbers that are not finite (``NaN``, ``Infinity``: not
    JSON, JupyterLab refuses the file) become null. Whatever the sandboxes sent, the file stays readable."""
    stack = [node]
    while stack:
        obj = stack.pop()
        if isinstance(obj, dict) and any(isinstance(k, str) and no_surrogates(k) != k for k in obj):
            items = list(obj.items())
            obj.clear()
            obj.update((no_surrogates(k) if isinstance(k, str) else k, v) for k, v in items)
        for key, value in list(obj.items() if isinstance(obj, dict) else enumerate(obj)):
            if isinstance(value, str):
                if (fixed := no_surrogates(value)) is not value:
                    obj[key] = fixed
            elif isinstance(value, float) and not math.isfinite(value):
                obj[key] = None
            elif isinstance(value, (dict, list)):
                stack.append(value)


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
    results = Unicode("", help="A folder of notebooks already run by the workers of `python -m grader autograde` "
                      "(<key>.json, see result_key): a notebook found there is not run again.").tag(config=True)

    #: the settings a result depends on (the Python's path is not one: a cluster's machines may differ in it)
    SETTINGS = ("timeout", "cell_timeout", "call_timeout", "cpu_seconds", "memory_mb", "tmp_mb", "hidden_modules",
                "report")

    def result_key(self, nb) -> str:
        """The key of a run of this notebook: a hash of the notebook as given, of the limits, of the CPU
        kernels chosen (:data:`sandbox.CPU_VARIABLES`) and of the grading code (:func:`code_fingerprint`).
        Equal keys, equal runs: a worker's result may stand in for running the notebook here."""
        payload = {"notebook": nb, "settings": {k: getattr(self, k) for k in self.SETTINGS},
                   "cpu": {k: os.environ.get(k, "") for k in sandbox.CPU_VARIABLES}, "code": code_fingerprint()}
        return hashlib.sha256(json.dumps(payload, sort_keys=True, default=list).encode()).hexdigest()

    def limits(self) -> sandbox.Limits:
        return sandbox.Limits(cpu_seconds=self.cpu_seconds or self.timeout, memory=self.memory_mb << 20,
                              tmp_size=self.tmp_mb << 20)

    def preprocess(self, nb, resources):
        if self.results:
            done = Path(self.results) / f"{self.result_key(nb)}.json"
            if done.is_file():
                self.log.info("Run by a grading worker (%s)", done.name[:12])
                return nbformat.reads(done.read_text(encoding="utf-8"), as_version=4), resources
            self.log.info("No result from a grading worker: running the notebook here")
        start = time.monotonic()
        meta = grader_meta(nb)
        notes = list(meta.get("notes", []))
        functions = meta.get("functions") or function_names(nb.cells)
        hidden = tuple(hide.outermost(list(meta.get("hide_modules", [])) + list(self.hidden_modules)
                                      + hide.implementations(self.python, meta.get("methods", []))))
        code = [(i, c) for i, c in enumerate(nb.cells) if c.cell_type == "code"]
        tests = [(i, c) for i, c in code if is_test_cell(c)]
        student = [(i, c) for i, c in code if not is_test_cell(c) and "reference" not in c.metadata.get("tags", [])]
        for _, c in code:
            c.outputs, c.execution_count = [], None

        a_job = {"cells": [{"id": str(i), "source": c.source} for i, c in student], "cwd": "/tmp",
                 "preload": ["numpy", "torch", "matplotlib.pyplot", "course_lib.models", "course_lib.layers",
                             "course_lib.imaging", "course_lib.figures"],
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
        meta["cpu_seconds"] = events.get("cpu_seconds")
        if self.report:
            nb.cells.insert(0, self._report_cell(notes))
        _strict_json(nb)  # (nothing the sandboxes sent can make the file unwritable or not JSON)
        self.log.info("Graded in a sandbox in %.1f s%s", elapsed, "; " + " | ".join(notes) if notes else "")
        return nb, resources

    def _report_cell(self, notes):
        # (no time taken here: a student's code could stretch it by what a hidden test showed it, and read it
        # back; the instructor finds it in the notebook's metadata.grader.seconds)
        lines = [f"**Autograded** in a sandbox (limits: {self.timeout} s for the notebook, "
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
                info, ["-m", "grader.student", str(req_r), str(resp_w)], limits, hidden))
            b_cmd = groups[1].wrap(sandbox.bwrap_argv(
                info, ["-m", "grader.judge", str(resp_r), str(req_w), str(b_out_w)], limits))
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
        cpu = [g.cpu_seconds() for g in groups]
        events["cpu_seconds"] = round(sum(cpu), 2) if None not in cpu else None   # (root, cgroup v2 only)
        for g in groups:
            g.remove()
        b_out, a_log, b_log = readers
        messages = [m for m in b_out.items if isinstance(m, dict)]
        student_out = [m for m in messages if "student_cell" in m]   # forwarded by the test process
        # (the seconds each cell took, as the sandboxes measured them: only a finite number >= 0 is kept)
        events["seconds"] = {
            "student": {str(m["student_cell"]): _duration(m.get("seconds")) for m in student_out},
            "tests": {str(m.get("cell")): _duration(m.get("seconds")) for m in messages if "cell" in m}}
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
            if not messages and b.returncode is not None and b.returncode > 0:
                # it ended by itself before its first result, whatever the student's code did: not a grade
                raise GradingSideError(f"the test process could not start (exit status {b.returncode}): "
                                       f"{tail.strip()[-600:] or 'no message'}")
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
