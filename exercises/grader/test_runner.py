"""The test process: runs the pristine test cells; no student code ever runs here.

    python -m grader.test_runner RESP_FD REQ_FD OUT_FD

Reads the job (JSON frame on stdin): the test cells (sources taken from the instructor's
source notebook, hidden tests included), the names of the functions the student had to
write, and the time limits. Each of those names is bound to a :class:`Proxy` that sends
the call's arguments to the student process and waits for the answer, which is loaded as
plain data (``torch.load(weights_only=True)``): whatever the student's code did to its own
process (patched ``torch.allclose``, an IPython input transformer that empties cells, a
redefined test helper...) cannot reach the asserts that run here.

Each test cell runs like a notebook cell (its last expression is its result, so a cell can
award partial credit nbgrader-style by ending with a number). Its outputs go to the driver
(``OUT_FD``) as nbformat outputs; an exception becomes an ``error`` output, which nbgrader
grades as zero for that cell. Warnings are printed to stdout: only a failing test costs points.
"""
from __future__ import annotations

import ast
import builtins
import contextlib
import io
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
    if kind == "MemoryError" or ("alloc" in low and "memory" in low):
        exc.args = (f"{exc.args[0] if exc.args else ''}\n[the grading sandbox limits memory; this call ran out of it]",)
    return exc


class Remote:
    """The channel to the student process."""

    def __init__(self, resp_fd: int, req_fd: int, setup_timeout: float, call_timeout: float):
        self.resp_fd, self.req_fd = resp_fd, req_fd
        self.setup_timeout, self.call_timeout = setup_timeout, call_timeout
        self.ready = False
        self.broken: str | None = None
        self.timed_out: set[str] = set()
        self.started = time.monotonic()

    def _wait_ready(self) -> None:
        if self.ready:
            return
        deadline = self.started + self.setup_timeout
        try:
            frame = protocol.read_frame(self.resp_fd, 64, deadline)
        except protocol.Deadline:
            self.broken = (f"your notebook's cells did not finish running within {self.setup_timeout:g} s "
                           f"(the time limit for running the notebook), so your functions could not be tested")
        except (EOFError, protocol.ProtocolError, OSError):
            self.broken = ("your notebook stopped before all its cells had run (it crashed or was killed, "
                           "e.g. by the memory limit), so your functions could not be tested")
        else:
            if frame == protocol.READY:
                self.ready = True
            else:
                self.broken = "your notebook's process sent garbage instead of getting ready"
        if self.broken:
            raise GradingError(self.broken)

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
            self.broken = (f"the process running your code stopped answering during a call to {name}() "
                           f"({type(e).__name__}: {e})")
            raise GradingError(self.broken) from None
        if not answer.get("ok"):
            error = answer.get("error") if isinstance(answer.get("error"), dict) else {}
            if error.get("type") == "TimeoutError":
                self.timed_out.add(name)
            raise _rebuild(error, name)
        value = protocol.decode_value(answer.get("value"))
        if report:
            changes = answer.get("changes")
            changes = [str(c) for c in changes] if isinstance(changes, list) else ["(no report)"]
            return value, changes
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


def _error_output(exc: BaseException, filename: str) -> dict:
    """The exception and the line number in the test cell, but no code (hidden tests stay hidden)."""
    lines = [f.lineno for f in traceback.extract_tb(exc.__traceback__) if f.filename == filename]
    where = f"(line {lines[-1]} of the test cell)\n" if lines else ""
    text = where + "".join(traceback.format_exception_only(type(exc), exc))
    return {"output_type": "error", "ename": type(exc).__name__, "evalue": str(exc)[:MAX_TEXT],
            "traceback": [text[-MAX_TEXT:]]}


def run_cell(source: str, ns: dict, filename: str) -> list[dict]:
    """Run one cell like Jupyter does: its outputs as nbformat output dicts."""
    out = io.StringIO()
    outputs, result = [], None
    try:
        tree = ast.parse(source, filename)
        last = None
        if tree.body and isinstance(tree.body[-1], ast.Expr):
            last = ast.Expression(tree.body.pop().value)
        import linecache
        linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out), warnings.catch_warnings():
            warnings.simplefilter("default")
            warnings.showwarning = lambda m, c, f, ln, file=None, line=None: print(f"{c.__name__}: {m}")
            exec(compile(tree, filename, "exec"), ns)
            if last is not None:
                result = eval(compile(last, filename, "eval"), ns)
    except BaseException as e:  # noqa: BLE001 - a failing test is this cell's result
        if out.getvalue():
            outputs.append({"output_type": "stream", "name": "stdout", "text": out.getvalue()[:MAX_TEXT]})
        outputs.append(_error_output(e, filename))
        return outputs
    if out.getvalue():
        outputs.append({"output_type": "stream", "name": "stdout", "text": out.getvalue()[:MAX_TEXT]})
    if result is not None:
        outputs.append({"output_type": "execute_result", "execution_count": None, "metadata": {},
                        "data": {"text/plain": repr(result)[:MAX_TEXT]}})
    return outputs


def main(argv=None) -> None:
    resp_fd, req_fd, out_fd = (int(a) for a in (argv or sys.argv[1:]))
    job = protocol.read_json(0)
    remote = Remote(resp_fd, req_fd, float(job["setup_timeout"]), float(job["call_timeout"]))
    ns: dict = {"__name__": "__main__", "__builtins__": builtins}
    for name in job["functions"]:
        ns[name] = Proxy(remote, name)
    for cell in job["cells"]:
        start = time.monotonic()
        outputs = run_cell(cell["source"], ns, f"<test cell {cell['id']}>")
        protocol.write_json(out_fd, {"cell": cell["id"], "outputs": outputs,
                                     "seconds": round(time.monotonic() - start, 3)})
    protocol.write_json(out_fd, {"done": True, "broken": remote.broken})
    os.close(out_fd)


if __name__ == "__main__":
    main()
