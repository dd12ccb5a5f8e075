"""The student process: runs the student's cells, then answers the tests' calls. UNTRUSTED.

Runs inside its own sandbox (see :mod:`grader.sandbox`). Everything here can be changed by
the student's code once it runs (it shares this process), so nothing it reports is taken
on trust: its only way out is the pipe to the test process, which checks every frame,
forwards the cell outputs to the driver only until the student's cells are done, enforces
the per-cell time limit from outside, and judges every answer itself.

    python -m grader.student REQ_FD RESP_FD

1. reads the job (JSON frame on stdin): the code cells to run, the time limits; sends
   ``{"started": true}`` to the test process (``RESP_FD``) once Python and the libraries
   are loaded, before any student code has run;
2. runs each cell in an IPython shell (magics and inline plots work as in Jupyter), each
   with a time limit, and sends its outputs (one JSON frame per cell) to the test process,
   which forwards them to the driver;
3. sends ``READY``, then serves calls (``REQ_FD``): each call runs in a forked child process
   with its own deadline and no other descriptor than its answer pipe, so a call that loops
   forever, crashes or exhausts memory costs that call only, and the next call starts afresh
   from the state after the student's cells. A call that asks for a report also sends back
   the state of its arguments after the call, as plain data (:func:`course_lib.grading.state`);
   the test process compares it with the state before, which it took itself.
"""
from __future__ import annotations

import base64
import os
import select
import signal
import sys
import time
import traceback

from course_lib.grading import state as _state_of_arguments  # bound before any student code runs

from . import protocol
from .forbid import forbid

MAX_TEXT = 20_000          # characters of one stream output kept
MAX_IMAGE = 2 << 20        # bytes of one PNG kept
MAX_IMAGES = 6 << 20       # bytes of all the PNGs of one cell (a cell's frame must stay under protocol.MAX_JSON)


class CellTimeout(KeyboardInterrupt):
    """Raised in a cell that runs past its time limit."""


def _make_shell():
    from IPython.core.interactiveshell import InteractiveShell
    from traitlets.config import Config

    class Shell(InteractiveShell):
        last_error = None

        def enable_gui(self, gui=None):  # no GUI event loop here; inline plots only
            pass

        def _showtraceback(self, etype, evalue, stb):
            self.last_error = {"ename": etype.__name__, "evalue": str(evalue)[:MAX_TEXT],
                               "traceback": [s[:MAX_TEXT] for s in stb[-30:]]}

    cfg = Config()
    cfg.HistoryManager.enabled = False
    shell = Shell.instance(config=cfg)
    try:
        shell.enable_matplotlib("inline")
    except Exception:  # noqa: BLE001 - plots are a nicety; grading does not need them
        pass
    return shell


def _outputs(cap, error) -> list[dict]:
    outs = []
    for name, text in (("stdout", cap.stdout), ("stderr", cap.stderr)):
        if text:
            outs.append({"output_type": "stream", "name": name, "text": text[:MAX_TEXT]})
    images = 0
    for o in cap.outputs[:20]:
        data = {}
        if isinstance(o.data.get("text/plain"), str):
            data["text/plain"] = o.data["text/plain"][:MAX_TEXT]
        png = o.data.get("image/png")
        if isinstance(png, bytes):
            png = base64.b64encode(png).decode()
        if isinstance(png, str) and len(png) <= MAX_IMAGE and images + len(png) <= MAX_IMAGES:
            data["image/png"] = png
            images += len(png)
        if data:
            outs.append({"output_type": "display_data", "data": data, "metadata": {}})
    if error:
        outs.append({"output_type": "error", **error})
    return outs


def run_cells(shell, cells, cell_timeout: float, out_fd: int) -> None:
    """Run each cell with its time limit; one frame of outputs per cell on ``out_fd``."""
    from IPython.utils.capture import capture_output

    def on_alarm(_sig, _frame):
        raise CellTimeout(f"this cell did not finish within {cell_timeout:g} s (the time limit per cell)")

    for cell in cells:
        shell.last_error = None
        start = time.monotonic()
        signal.signal(signal.SIGALRM, on_alarm)
        signal.setitimer(signal.ITIMER_REAL, cell_timeout)
        with capture_output() as cap:
            try:
                shell.run_cell(cell["source"], store_history=False)
            except BaseException as e:  # noqa: BLE001 - e.g. the alarm fired outside the cell's code
                shell.last_error = {"ename": type(e).__name__, "evalue": str(e)[:MAX_TEXT], "traceback": []}
            finally:
                signal.setitimer(signal.ITIMER_REAL, 0)
        protocol.write_json(out_fd, {"cell": cell["id"], "outputs": _outputs(cap, shell.last_error),
                                     "seconds": round(time.monotonic() - start, 3)})


# --------------------------------------------------------------------------- serving calls

def _error(req_id, exc: BaseException | None = None, kind: str = "", message: str = "", tb: str = "") -> bytes:
    if exc is not None:
        kind, message = type(exc).__name__, str(exc)
        try:
            tb = "".join(traceback.format_exception(exc)[-12:])
        except BaseException:  # noqa: BLE001 - e.g. no memory left to format it
            tb = ""
    return protocol.dumps({"id": req_id, "ok": False,
                           "error": {"type": kind, "message": message[:4000], "traceback": tb[-8000:]}})


def _seal() -> list[tuple[dict, str, object, object]]:
    """What computes an answer's reported state, as ``(namespace, name, object, its code)``, taken
    when this module is imported (before any student code runs)."""
    import course_lib.grading as grading

    sealed = []
    for namespace, names in ((globals(), ("_state_of_arguments", "_answer", "_tampered", "protocol")),
                             (vars(protocol), ("encode_value", "dumps")),
                             (vars(grading), ("state", "_digest", "_hooks"))):
        for name in names:
            obj = namespace.get(name)
            sealed.append((namespace, name, obj, getattr(obj, "__code__", None)))
    return sealed


def _tampered() -> list[str]:
    """The names of :func:`_seal` that no longer hold their object or code (empty: intact).

    A best effort, like every check made in this process: code that can patch these can patch this
    check too. It stops the plain forgery (a student's function that walks up the stack and
    replaces the state function by one that reports the state before the call); the rest is for
    the suspicious-routes flags and the instructor to see (``exercises/README.md``)."""
    return [name for namespace, name, obj, code in _SEALED
            if namespace.get(name) is not obj or getattr(obj, "__code__", None) is not code]


def _answer(ns, data: bytes) -> bytes:
    """Run one call (in the forked child) and encode the answer."""
    req_id = None
    try:
        req = protocol.loads_trusted(data)
        req_id = req["id"]
        fn = ns.get(req["name"])
        if not callable(fn):
            return _error(req_id, kind="NameError",
                          message=f"your notebook does not define a function called {req['name']!r} "
                                  f"(did its cell run without an error? did you keep its name?)")
        args, kwargs = req["args"], req["kwargs"]
        value = fn(*args, **kwargs)
        changed = _tampered()
        if changed:
            return _error(req_id, kind="GradingTampered",
                          message=f"during this call your code changed the grader's own functions "
                                  f"({', '.join(changed)}), which compute what the tests are told; the call is "
                                  f"not graded, and your instructor sees this")
        answer = {"id": req_id, "ok": True, "value": protocol.encode_value(value)}
        if req.get("report"):  # the state after the call, as data: the test process judges it
            answer["state"] = protocol.encode_value(_state_of_arguments(args, kwargs))
        return protocol.dumps(answer)
    except BaseException as e:  # noqa: BLE001 - the student's exception is the answer
        return _error(req_id, e)


def _request_id(data: bytes):
    try:
        return protocol.loads_trusted(data)["id"]
    except Exception:  # noqa: BLE001
        return None


def _reap() -> None:
    """Collect finished children (the student's own included), so they stop counting against the limits."""
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def call_in_child(ns, data: bytes, timeout: float) -> bytes:
    _reap()
    r, w = os.pipe()
    try:
        pid = os.fork()
    except OSError as e:
        os.close(r)
        os.close(w)
        return _error(_request_id(data), kind="RuntimeError",
                      message=f"no process could be started for this call ({e}): your code has used up the "
                              f"sandbox's process limit")
    if pid == 0:  # the child: run the student's function, write the answer, exit
        try:
            os.close(r)
            os.setpgid(0, 0)
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, 1)
            os.dup2(devnull, 2)
            # nothing but the answer pipe: not the channels, nor any copy the student's cells made
            os.closerange(3, w)
            os.closerange(w + 1, MAX_FD)
            signal.setitimer(signal.ITIMER_REAL, 0)
            out = _answer(ns, data)
            view = memoryview(out)
            while view:
                view = view[os.write(w, view):]
        finally:
            os._exit(0)
    os.close(w)
    deadline = time.monotonic() + timeout
    chunks, size, timed_out = [], 0, False
    try:
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                timed_out = True
                break
            ready, _, _ = select.select([r], [], [], left)
            if not ready:
                continue
            chunk = os.read(r, 1 << 20)
            if not chunk:
                break
            size += len(chunk)
            if size > protocol.MAX_VALUE:
                return _error(_request_id(data), kind="ValueError",
                              message=f"the answer is larger than {protocol.MAX_VALUE >> 20} MiB")
            chunks.append(chunk)
    finally:
        os.close(r)
        if timed_out:
            for target in (-pid, pid):
                try:
                    os.kill(target, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass
        _, status = os.waitpid(pid, 0)
    req_id = _request_id(data)
    if timed_out:
        return _error(req_id, kind="TimeoutError",
                      message=f"the call did not return within {timeout:g} s (the time limit per call); "
                              f"it was stopped. Is there an endless loop?")
    if not chunks:
        sig = os.WTERMSIG(status) if os.WIFSIGNALED(status) else None
        why = (f"it was killed by signal {sig}" + (" (probably the memory or CPU-time limit)"
                                                    if sig in (signal.SIGKILL, signal.SIGXCPU) else "")
               if sig else f"it exited with status {os.WEXITSTATUS(status)} without answering")
        return _error(req_id, kind="RuntimeError", message=f"your code crashed during this call: {why}")
    return b"".join(chunks)


MAX_FD = 4096  # above the sandbox's RLIMIT_NOFILE (256)
_SEALED = _seal()


def serve(ns, req_fd: int, resp_fd: int, call_timeout: float) -> None:
    while True:
        try:
            data = protocol.read_frame(req_fd, protocol.MAX_VALUE)
        except (EOFError, protocol.ProtocolError, OSError):
            return
        try:
            protocol.write_frame(resp_fd, call_in_child(ns, data, call_timeout))
        except (BrokenPipeError, OSError):
            return


def main(argv=None) -> None:
    req_fd, resp_fd = (int(a) for a in (argv or sys.argv[1:]))
    job = protocol.read_json(0)
    os.chdir(job.get("cwd") or os.getcwd())
    # the heavy libraries are loaded before the student's cells, so that the per-cell time limit
    # measures the student's code, not the import of torch on a slow machine
    for name in job.get("preload", ()):
        try:
            __import__(name)
        except Exception:  # noqa: BLE001 - the cell that imports it will show the error
            pass
    forbid(job.get("forbid", ()))   # (what each entry stubbed goes to this process's log only)
    shell = _make_shell()
    protocol.write_json(resp_fd, {"started": True})
    run_cells(shell, job["cells"], float(job["cell_timeout"]), resp_fd)
    protocol.write_frame(resp_fd, protocol.READY)
    serve(shell.user_ns, req_fd, resp_fd, float(job["call_timeout"]))


if __name__ == "__main__":
    main()
