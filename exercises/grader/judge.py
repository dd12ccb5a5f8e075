"""The test process (the judge): runs the pristine test cells; no student code ever runs here.

    python -m grader.judge RESP_FD REQ_FD OUT_FD

Reads the job (JSON frame on stdin): the test cells (sources taken from the instructor's
source notebook, hidden tests included), the names of the functions the student had to
write, the ids of the student's cells, and the time limits. Each of those names is bound
to a :class:`Proxy` that sends the call's arguments to the student process and waits for
the answer, which is loaded as plain data (``torch.load(weights_only=True)``): whatever the
student's code did to its own process (patched ``torch.allclose``, an IPython input
transformer that empties cells, a redefined test helper...) cannot reach the asserts that
run here. Judgements are made here too: :func:`course_lib.grading.check_no_side_effects`
takes the state of the arguments before the call itself and compares it with the state
the student process sends back as data.

The student process can only talk to this process. Until it is ready, it sends one frame
of outputs per cell; they are forwarded to the driver (``OUT_FD``) as the student's outputs,
and each must come within the per-cell time limit (plus a little), so a cell that ignores
the interrupt is stopped from here. After ``READY``, only answers are accepted, and the
arguments of calls are sent only then: nothing the student's code learns from them can
reach the feedback as outputs.

Hidden inputs cannot come back through the feedback either, whatever channel the student's
code uses to carry them from one call to the next (a file in the sandbox's ``/tmp``, shared
memory, a timing): the tests run in **two phases**. First the *visible* part of every test
cell (the lines before ``### BEGIN HIDDEN TESTS``), with full messages: no hidden input has
been sent yet. Then the hidden parts, each in the namespace its cell's visible part left;
from then on, everything the student's code could have learnt is tainted, so a failure there
is reported by one fixed phrase (:data:`HIDDEN_FAILURE`: not the exception's type, not its
line, no numbers) and the hidden parts' printed output is not shown. What a hidden test can
tell is whether its cell passed, which its points tell anyway.

Each test cell runs like a notebook cell (its last expression is its result, so a cell can
award partial credit nbgrader-style by ending with a number). Its outputs go to the driver
as nbformat outputs; an exception becomes an ``error`` output, which nbgrader grades as zero
for that cell. Warnings are printed to stdout: only a failing test costs points.
"""
from __future__ import annotations

import ast
import builtins
import contextlib
import io
import json
import os
import secrets
import sys
import time
import traceback
import warnings

from . import protocol

MAX_TEXT = 20_000


class GradingError(Exception):
    """The student's code could not be asked (it never got ready, it stopped answering...)."""


class StudentError(Exception):
    """An exception raised by the student's function that has no built-in equivalent here."""


def _rebuild(error: dict, name: str) -> BaseException:
    kind = str(error.get("type", "Exception"))[:100]
    message = str(error.get("message", ""))
    tb = str(error.get("traceback", ""))
    text = f"{message}\n\n--- raised in your function {name}() ---\n{tb}" if tb else f"{name}(): {message}"
    cls = getattr(builtins, kind, None)
    if isinstance(cls, type) and issubclass(cls, Exception) and cls not in (AssertionError,):
        try:
            exc = cls(text)
        except Exception:  # noqa: BLE001 - an exception class with an odd constructor
            exc = StudentError(f"{kind}: {text}")
    else:
        exc = StudentError(f"{kind}: {text}")
    low = message.lower()
    memory = kind == "MemoryError" or ("alloc" in low and "memory" in low)
    if memory:
        exc.args = (f"{exc.args[0] if exc.args else ''}\n[the grading sandbox limits memory; this call ran out of it]",)
    return exc


class Remote:
    """The channel to the student process."""

    GRACE = 5.0   # seconds a cell's outputs may take to arrive after its own time limit

    def __init__(self, resp_fd: int, req_fd: int, setup_timeout: float, call_timeout: float,
                 cells=(), cell_timeout: float = 30.0, forward=None):
        self.resp_fd, self.req_fd = resp_fd, req_fd
        self.setup_timeout, self.call_timeout = setup_timeout, call_timeout
        self.cells, self.cell_timeout = list(cells), cell_timeout
        self.forward = forward or (lambda message: None)
        self.ready = False
        self.broken: str | None = None
        self.timed_out: set[str] = set()
        self.started = time.monotonic()
        self.hidden_phase = False   # set once hidden tests run: then no message may say which call broke

    def _frame_before_ready(self, deadline: float) -> bytes:
        return protocol.read_frame(self.resp_fd, protocol.MAX_JSON, min(deadline, self.started + self.setup_timeout))

    def _wait_ready(self) -> None:
        """Read the student process's frames up to ``READY``: the start, then one frame of outputs per
        cell, each within the per-cell limit; forward the outputs. Sets :attr:`broken` on failure."""
        if self.ready or self.broken:
            if self.broken:
                raise GradingError(self.broken)
            return
        overall = self.started + self.setup_timeout
        stage = "start"
        try:
            frame = self._frame_before_ready(overall)
            if frame == protocol.READY or _json(frame).get("started") is not True:
                raise protocol.ProtocolError("it did not start as expected")
            done = 0
            while True:
                stage = self.cells[done] if done < len(self.cells) else "ready"
                frame = self._frame_before_ready(time.monotonic() + self.cell_timeout + self.GRACE)
                if frame == protocol.READY:
                    self.ready = True
                    return
                if done == len(self.cells):
                    raise protocol.ProtocolError("it sent more cell outputs than it has cells")
                message = _json(frame)
                outputs, seconds = message.get("outputs"), message.get("seconds")
                self.forward({"student_cell": self.cells[done],
                              "outputs": outputs if _flat_outputs(outputs) else [],
                              "seconds": seconds if isinstance(seconds, (int, float)) else None})
                done += 1
        except protocol.Deadline:
            if time.monotonic() >= overall - 0.01:
                self.broken = (f"your notebook's cells did not finish running within {self.setup_timeout:g} s "
                               f"(the time limit for running the notebook), so your functions could not be tested")
            elif stage in ("start", "ready"):
                self.broken = ("your notebook's cells did not finish running within the time limits: the process "
                               "running them stopped responding after your last cell, so your functions could "
                               "not be tested")
            else:
                self.broken = (f"your notebook's cells did not finish running within the time limits: a cell ran "
                               f"past its limit of {self.cell_timeout:g} s and did not stop when interrupted (does it "
                               f"catch every exception, or change signal handlers?), so your functions could not "
                               f"be tested")
                self.forward({"stuck_cell": stage})
        except (EOFError, protocol.ProtocolError, OSError) as e:
            self.broken = ("your notebook stopped before all its cells had run (it crashed or was killed, "
                           "e.g. by the memory limit), so your functions could not be tested"
                           if isinstance(e, (EOFError, OSError)) else
                           f"the process running your notebook broke the grading protocol ({e}), so your "
                           f"functions could not be tested")
        raise GradingError(self.broken)

    def finish(self) -> None:
        """Wait (within the limits) for the student's cells to end, so their outputs reach the driver."""
        try:
            self._wait_ready()
        except GradingError:
            pass

    def call(self, name: str, args, kwargs, report: bool = False):
        if self.broken:
            raise GradingError(self.broken)
        if name in self.timed_out:
            raise TimeoutError(f"{name}() was not called again: an earlier call did not return within "
                               f"{self.call_timeout:g} s (the time limit per call)")
        self._wait_ready()
        req_id = secrets.token_hex(8)
        request = protocol.dumps({"id": req_id, "name": name, "args": tuple(args), "kwargs": dict(kwargs),
                                  "report": report})
        # the student process enforces the per-call limit itself; this deadline is the backstop
        deadline = time.monotonic() + self.call_timeout + 10
        try:
            protocol.write_frame(self.req_fd, request, deadline)
            data = protocol.read_frame(self.resp_fd, protocol.MAX_VALUE, deadline)
            answer = protocol.loads_untrusted(data)
            if not isinstance(answer, dict) or answer.get("id") != req_id:
                raise protocol.ProtocolError("an answer to another question")
        except (protocol.Deadline, EOFError, OSError, protocol.ProtocolError) as e:
            self.broken = ("the process running your code stopped answering during a hidden test"
                           if self.hidden_phase else
                           f"the process running your code stopped answering during a call to {name}() "
                           f"({type(e).__name__})")
            raise GradingError(self.broken) from None
        if not answer.get("ok"):
            error = answer.get("error") if isinstance(answer.get("error"), dict) else {}
            if error.get("type") == "TimeoutError":
                self.timed_out.add(name)
            raise _rebuild(error, name)
        try:
            value = protocol.decode_value(answer.get("value"))
            if report:
                return value, protocol.decode_value(answer.get("state"))
        except protocol.ProtocolError as e:
            raise StudentError(f"{name}() returned something that cannot be graded ({e})") from None
        return value


class Proxy:
    """Stands for the student's function ``name`` in the test cells."""

    def __init__(self, remote: Remote, name: str):
        self.remote, self.__name__ = remote, name
        self.__qualname__ = name

    def __call__(self, *args, **kwargs):
        return self.remote.call(self.__name__, args, kwargs)

    def __grading_call__(self, args, kwargs, report: bool = False):
        return self.remote.call(self.__name__, args, kwargs, report=report)

    def __repr__(self):
        return f"<your function {self.__name__}>"


HIDDEN_FAILURE = ("a hidden test of this cell failed. Hidden tests try your function on other sizes, layers, "
                  "targets and networks; they show no details (that would reveal their inputs). Check that your "
                  "function is general: no fixed sizes, no fixed layer or class, no change to its arguments, "
                  "and fast enough for the time limit.")


def split_hidden(source: str) -> tuple[str, str | None]:
    """``(visible, hidden)``: the test cell's lines before ``### BEGIN HIDDEN TESTS``, and the rest,
    padded with blank lines so that its line numbers are the cell's. ``hidden`` is None when the
    cell has no hidden part. If the split is not valid Python on both sides (a marker inside a
    block), the whole cell counts as hidden."""
    lines = source.split("\n")
    begin = next((n for n, line in enumerate(lines) if "BEGIN HIDDEN TESTS" in line), None)
    if begin is None:
        return source, None
    visible, hidden = "\n".join(lines[:begin]), "\n" * begin + "\n".join(lines[begin:])
    try:
        ast.parse(visible)
        ast.parse(hidden)
    except SyntaxError:
        return "", source
    return visible, hidden


def _error_output(exc: BaseException, filename: str, hidden: bool = False) -> dict:
    """The exception and the line number in the test cell, but no code (hidden tests stay hidden).

    A failure in the hidden phase is reported by :data:`HIDDEN_FAILURE` alone, whatever it was:
    its type, its line or its numbers could all be chosen by the student's code from a hidden
    input, and read back from the feedback."""
    if hidden:
        return {"output_type": "error", "ename": "HiddenTestFailed", "evalue": HIDDEN_FAILURE,
                "traceback": [f"HiddenTestFailed: {HIDDEN_FAILURE}\n"]}
    lines = [f.lineno for f in traceback.extract_tb(exc.__traceback__) if f.filename == filename]
    line = lines[-1] if lines else None
    where = f"(line {line} of the test cell)\n" if line is not None else ""
    text = where + "".join(traceback.format_exception_only(type(exc), exc))
    return {"output_type": "error", "ename": type(exc).__name__, "evalue": str(exc)[:MAX_TEXT],
            "traceback": [text[-MAX_TEXT:]]}


def run_cell(source: str, ns: dict, filename: str, hidden: bool = False, last: bool = True) -> tuple[list[dict], bool]:
    """Run one cell (or one phase of it) like Jupyter does: ``(outputs as nbformat output dicts, passed)``.
    ``hidden``: the hidden phase; its printed output is left out and a failure is the fixed phrase.
    ``last``: this is the end of the cell, whose last expression is its result (nbgrader reads a number
    there as partial credit, any other value as full marks: so only the cell's very end may have one)."""
    out = io.StringIO()
    outputs, result = [], None
    try:
        tree = ast.parse(source, filename)
        final = None
        if last and tree.body and isinstance(tree.body[-1], ast.Expr):
            final = ast.Expression(tree.body.pop().value)
        import linecache
        linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out), warnings.catch_warnings():
            warnings.simplefilter("default")
            warnings.showwarning = lambda m, c, f, ln, file=None, line=None: print(f"{c.__name__}: {m}")
            exec(compile(tree, filename, "exec"), ns)
            if final is not None:
                result = eval(compile(final, filename, "eval"), ns)
    except BaseException as e:  # noqa: BLE001 - a failing test is this cell's result
        if out.getvalue() and not hidden:
            outputs.append({"output_type": "stream", "name": "stdout", "text": out.getvalue()[:MAX_TEXT]})
        outputs.append(_error_output(e, filename, hidden))
        return outputs, False
    if out.getvalue() and not hidden:
        outputs.append({"output_type": "stream", "name": "stdout", "text": out.getvalue()[:MAX_TEXT]})
    if result is not None and (not hidden or isinstance(result, (int, float))):   # (a number: partial credit)
        outputs.append({"output_type": "execute_result", "execution_count": None, "metadata": {},
                        "data": {"text/plain": repr(result)[:MAX_TEXT]}})
    return outputs, True


def run_tests(cells, base: dict, write, hidden_phase=lambda: None) -> None:
    """Run the test cells in two phases (see the module's docstring): every cell's visible part,
    then (after calling ``hidden_phase()``) every hidden part; ``write(cell_id, outputs, seconds)``
    gets each cell's outputs once its result is known (a cell whose visible part failed is
    reported at once)."""
    pending = []
    for cell in cells:
        visible, hidden = split_hidden(cell["source"])
        filename = f"<test cell {cell['id']}>"
        ns = dict(base)
        start = time.monotonic()
        outputs, passed = run_cell(visible, ns, filename, last=hidden is None)
        seconds = time.monotonic() - start
        if passed and hidden is not None:
            pending.append((cell, hidden, filename, ns, outputs, seconds))
        else:
            write(cell["id"], outputs, seconds)
    hidden_phase()
    for cell, hidden, filename, ns, outputs, seconds in pending:
        start = time.monotonic()
        more, _ = run_cell(hidden, ns, filename, hidden=True)
        write(cell["id"], outputs + more, seconds + time.monotonic() - start)


def _json(frame: bytes) -> dict:
    try:
        message = json.loads(frame.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as e:
        raise protocol.ProtocolError(f"not a JSON frame: {type(e).__name__}") from None
    if not isinstance(message, dict):
        raise protocol.ProtocolError("not a JSON object")
    return message


def _flat_outputs(outputs) -> bool:
    """A list of outputs no deeper than nbformat's (dict -> data dict -> strings / list of strings)."""
    def depth(v, d=0):
        if d > 4:
            return False
        if isinstance(v, dict):
            return all(isinstance(k, str) and depth(x, d + 1) for k, x in v.items())
        if isinstance(v, list):
            return all(depth(x, d + 1) for x in v)
        return v is None or isinstance(v, (str, int, float, bool))
    return isinstance(outputs, list) and depth(outputs)


def main(argv=None) -> None:
    resp_fd, req_fd, out_fd = (int(a) for a in (argv or sys.argv[1:]))
    job = protocol.read_json(0)
    remote = Remote(resp_fd, req_fd, float(job["setup_timeout"]), float(job["call_timeout"]),
                    cells=job.get("student_cells", ()), cell_timeout=float(job.get("cell_timeout", 30)),
                    forward=lambda message: protocol.write_json(out_fd, message))
    base: dict = {"__name__": "__main__", "__builtins__": builtins}
    for name in job["functions"]:
        base[name] = Proxy(remote, name)
    run_tests(job["cells"], base, lambda cell, outputs, seconds: protocol.write_json(
        out_fd, {"cell": cell, "outputs": outputs, "seconds": round(seconds, 3)}),
        hidden_phase=lambda: setattr(remote, "hidden_phase", True))
    remote.finish()
    protocol.write_json(out_fd, {"done": True, "broken": remote.broken})
    os.close(out_fd)


if __name__ == "__main__":
    main()
