"""How the grading processes talk: length-prefixed frames on pipes, and values as torch files.

Three processes grade one notebook (see ``exercises/README.md``):

* the **driver** (nbgrader, outside any sandbox) starts the two others and collects what the
  test process says;
* the **student process** (sandbox, untrusted) runs the student's cells, then answers calls
  to the student's functions; it talks only to the test process;
* the **test process** (its own sandbox, no student code ever runs in it) forwards the
  outputs of the student's cells to the driver until the student process is ready, then runs
  the pristine test cells; the names of the student's functions are proxies that send each
  call to the student process and wait, with a deadline, for the answer.

Every message is one *frame*: a 4-byte big-endian length, then that many bytes. A frame
that is larger than the reader allows, or a stream that ends mid-frame, is an error for the
reader, never a reason to trust what came. Values cross as ``torch.save`` files; the side
that must not trust its peer (the test process reading an answer) loads them with
``torch.load(weights_only=True)``, which only builds tensors, numbers, strings and plain
containers, never runs code. This module imports nothing heavy, so the driver (which has
no torch) can use the framing too.
"""
from __future__ import annotations

import errno
import io
import json
import os
import select
import struct
import time

HEADER = struct.Struct(">I")
READY = b"READY"                       # the student process finished running the student's cells
MAX_JSON = 8 << 20                     # 8 MiB: a cell's outputs, a job description
MAX_VALUE = 64 << 20                   # 64 MiB: one argument set or one answer


class ProtocolError(RuntimeError):
    """The peer broke the protocol (oversized frame, garbage, closed mid-frame)."""


class Deadline(TimeoutError):
    """No complete frame arrived before the deadline."""


# --------------------------------------------------------------------------- raw frames

def _wait(fd: int, readable: bool, deadline: float | None) -> None:
    while True:
        timeout = None if deadline is None else deadline - time.monotonic()
        if timeout is not None and timeout <= 0:
            raise Deadline("deadline passed")
        try:
            r, w, _ = select.select([fd] if readable else [], [] if readable else [fd], [], timeout)
        except InterruptedError:
            continue
        if r or w:
            return


def read_exact(fd: int, n: int, deadline: float | None = None) -> bytes:
    chunks, got = [], 0
    while got < n:
        _wait(fd, True, deadline)
        try:
            chunk = os.read(fd, min(n - got, 1 << 20))
        except InterruptedError:
            continue
        if not chunk:
            raise EOFError("the stream ended" + (" in the middle of a frame" if got or chunks else ""))
        chunks.append(chunk)
        got += len(chunk)
    return b"".join(chunks)


def read_frame(fd: int, max_size: int, deadline: float | None = None) -> bytes:
    """One frame from ``fd`` (``EOFError`` if the stream ended cleanly before it)."""
    (n,) = HEADER.unpack(read_exact(fd, HEADER.size, deadline))
    if n > max_size:
        raise ProtocolError(f"frame of {n} bytes is larger than the {max_size} allowed")
    try:
        return read_exact(fd, n, deadline)
    except EOFError as e:
        raise ProtocolError(str(e)) from None


def write_frame(fd: int, data: bytes, deadline: float | None = None) -> None:
    """Write one frame; raises ``BrokenPipeError`` if the reader is gone, ``Deadline`` if it stops reading."""
    view = memoryview(HEADER.pack(len(data)) + data)
    while view:
        _wait(fd, False, deadline)
        try:
            n = os.write(fd, view[: 1 << 16])
        except InterruptedError:
            continue
        except BlockingIOError:
            continue
        except OSError as e:
            if e.errno == errno.EPIPE:
                raise BrokenPipeError("the reader has gone") from None
            raise
        view = view[n:]


def read_json(fd: int, max_size: int = MAX_JSON, deadline: float | None = None):
    data = read_frame(fd, max_size, deadline)
    try:
        return json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as e:
        raise ProtocolError(f"not a JSON frame: {e}") from None


def write_json(fd: int, obj, deadline: float | None = None) -> None:
    write_frame(fd, json.dumps(obj).encode("utf-8"), deadline)


# --------------------------------------------------------------------------- values (torch side only)

def encode_value(value, depth: int = 0):
    """``value`` with numpy arrays wrapped as ``{"__ndarray__": tensor}``: something that
    ``torch.load(weights_only=True)`` can rebuild. Raises TypeError for anything else."""
    import numpy as np
    import torch

    if depth > 20:
        raise TypeError("the answer is nested too deeply")
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, torch.Tensor):
        return value.detach().to("cpu").clone()
    if isinstance(value, np.ndarray):
        if value.dtype == object:
            raise TypeError("numpy arrays of Python objects cannot be graded")
        return {"__ndarray__": torch.from_numpy(np.ascontiguousarray(value).copy())}
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, (list, tuple)):
        items = [encode_value(v, depth + 1) for v in value]
        return {"__tuple__": items} if isinstance(value, tuple) else items
    if isinstance(value, dict):
        if not all(isinstance(k, (str, int)) for k in value):
            raise TypeError("dictionary keys must be strings or ints")
        return {"__dict__": [[k, encode_value(v, depth + 1)] for k, v in value.items()]}
    raise TypeError(f"answers must be tensors, numpy arrays, numbers, strings or lists/tuples/dicts "
                    f"of them, not {type(value).__name__}")


def decode_value(value):
    """Inverse of :func:`encode_value` (on a value loaded with ``weights_only=True``)."""
    if isinstance(value, list):
        return [decode_value(v) for v in value]
    if isinstance(value, dict):
        if set(value) == {"__ndarray__"}:
            return value["__ndarray__"].numpy()
        if set(value) == {"__tuple__"}:
            return tuple(decode_value(v) for v in value["__tuple__"])
        if set(value) == {"__dict__"}:
            return {k: decode_value(v) for k, v in value["__dict__"]}
        raise ProtocolError("unexpected dictionary in an answer")
    return value


def dumps(obj) -> bytes:
    import torch

    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


def loads_trusted(data: bytes):
    """Load a torch file written by the *test* process (it may hold models: full pickle)."""
    import torch

    return torch.load(io.BytesIO(data), weights_only=False)


def loads_untrusted(data: bytes):
    """Load a torch file written by the *student* process: tensors and plain data only."""
    import torch

    try:
        return torch.load(io.BytesIO(data), weights_only=True)
    except Exception as e:  # noqa: BLE001 - anything that is not plain data is a protocol error
        raise ProtocolError(f"the answer is not plain data ({type(e).__name__}: {str(e)[:300]})") from None
