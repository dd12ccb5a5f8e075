"""Results that take minutes, computed once and then read from disk.

``remember(f, *args, **kwargs)`` returns ``f(*args, **kwargs)``. The first call computes it and
saves it in ``data/cache/results/``; later calls with the same key read it back. The key is

    K = sha256( f's module and name,  the source of course_lib (and of f's module),  every argument )

with every parameter named and its default filled in (``f(x)`` and ``f(x, steps=100)`` are the same
call when 100 is the default). A model counts by its structure (``repr``) and :func:`weights_hash`
(every parameter and buffer), a tensor by its shape, dtype and bytes, a PIL image by its size, mode
and bytes, a list, tuple or dict by its items, and anything else by ``repr``. Retraining the
model, editing the library or changing any argument gives another key, so for a seeded
(deterministic) call a cached result is exactly what the call would return now. Arguments named
``callback``, ``progress`` or ``every`` only show progress: they are left out of the key, and a call
answered from the cache shows no progress.

What is kept is the result as plain data: tensors (detached, without Python attributes), numbers,
strings, ``None``, lists, tuples and dicts of these, and an optimisation's
``Optimized(image, history)`` (:class:`course_lib.optimize.Optimized`, its :class:`~course_lib.optimize.History`
included); the first call returns that same plain form, so a computed and a cached result look
alike. Anything else (a numpy array, an object) is refused with a TypeError: it could not be read
back safely (``torch.load(..., weights_only=True)``, which admits only :data:`KEPT_CLASSES` besides
plain data).

``COURSE_CACHE=0`` turns the cache off (the browser test does, so that it always computes).
:mod:`course_lib.neighbors` caches extracted features the same way, under ``data/cache/features``.
"""
from __future__ import annotations

import functools
import hashlib
import inspect
import os
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .data import data_dir
from .optimize import History, Optimized

PACKAGE = Path(__file__).resolve().parent
NOT_IN_KEY = ("callback", "progress", "every")
#: The classes a cached result may hold besides plain data (read back by ``torch.load(..., weights_only=True)``).
KEPT_CLASSES = (Optimized, History)


def enabled() -> bool:
    return os.environ.get("COURSE_CACHE", "1").strip() != "0"


def _tensor_bytes(t: torch.Tensor) -> bytes:
    """Shape, dtype and raw bytes of a tensor, for hashing."""
    t = t.detach().cpu().contiguous()
    return f"{tuple(t.shape)}:{t.dtype};".encode() + t.reshape(-1).view(torch.uint8).numpy().tobytes()


def weights_hash(model: nn.Module) -> str:
    """sha256 of every parameter and buffer of ``model`` (names, shapes, dtypes and values)."""
    h = hashlib.sha256(type(model).__name__.encode())
    for name, t in sorted(model.state_dict().items()):
        h.update(f"{name}:".encode() + _tensor_bytes(t))
    return h.hexdigest()


@functools.cache
def _package_hash() -> str:
    """sha256 of course_lib's source, read once per process (the code that is running)."""
    h = hashlib.sha256()
    for f in sorted(PACKAGE.glob("*.py")):
        h.update(f.name.encode() + f.read_bytes())
    return h.hexdigest()


def _source_hash(fn) -> str:
    own = inspect.getsourcefile(fn)
    if own and Path(own).resolve().parent != PACKAGE:
        return hashlib.sha256(_package_hash().encode() + Path(own).read_bytes()).hexdigest()
    return _package_hash()


def _feed(h, value) -> None:
    """Add ``value`` to the hash ``h`` (see the module docstring for what counts)."""
    from PIL import Image

    if isinstance(value, nn.Module):
        h.update(b"module" + repr(value).encode() + weights_hash(value).encode())
    elif isinstance(value, torch.Tensor):
        h.update(b"tensor" + _tensor_bytes(value))
    elif isinstance(value, np.ndarray):
        h.update(f"array{value.shape}{value.dtype}".encode() + np.ascontiguousarray(value).tobytes())
    elif isinstance(value, Image.Image):
        h.update(f"image{value.size}{value.mode}".encode() + value.tobytes())
    elif isinstance(value, (list, tuple)):
        h.update(f"{type(value).__name__}{len(value)}".encode())
        for v in value:
            _feed(h, v)
    elif isinstance(value, dict):
        h.update(f"dict{len(value)}".encode())
        for k in sorted(value, key=repr):
            _feed(h, k)
            _feed(h, value[k])
    else:
        h.update(repr(value).encode())


def key(fn, args, kwargs) -> str:
    """The cache key of ``fn(*args, **kwargs)``: every parameter by name, defaults filled in (so
    ``f(x)`` and ``f(x, steps=100)`` share a key when 100 is the default), progress-only ones left out."""
    h = hashlib.sha256(f"{fn.__module__}.{fn.__qualname__}".encode())
    h.update(_source_hash(fn).encode())
    try:
        bound = inspect.signature(fn).bind(*args, **kwargs)
        bound.apply_defaults()
        named = dict(bound.arguments)
    except (TypeError, ValueError):   # no signature to bind to: the arguments as given
        named = {"*args": list(args), **kwargs}
    _feed(h, {k: v for k, v in named.items() if k not in NOT_IN_KEY})
    return h.hexdigest()


def plain(value, where: str = "the result"):
    """``value`` as plain, safely loadable data (see the module docstring), or a TypeError."""
    if isinstance(value, torch.Tensor):
        return value.detach()   # a new tensor object: no Python attributes, no autograd graph
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, Optimized):   # before tuple: it is one, and stays an Optimized
        history = History(plain(value.history.objective, f"{where}.history.objective"),
                          plain(value.history.evaluations, f"{where}.history.evaluations"))
        return Optimized(plain(value.image, f"{where}.image"), history)
    if isinstance(value, (list, tuple)):
        items = [plain(v, f"{where}[{i}]") for i, v in enumerate(value)]
        return items if isinstance(value, list) else tuple(items)
    if isinstance(value, dict) and all(isinstance(k, (str, int)) for k in value):
        return {k: plain(v, f"{where}[{k!r}]") for k, v in value.items()}
    raise TypeError(f"remember() keeps tensors, numbers, strings and lists/tuples/dicts of them; "
                    f"{where} is a {type(value).__module__}.{type(value).__qualname__}")


def cache_dir() -> Path:
    return data_dir() / "cache" / "results"


def remember(fn, *args, **kwargs):
    """``fn(*args, **kwargs)``, computed once per key and then read from ``data/cache/results/``."""
    if not enabled():
        return plain(fn(*args, **kwargs), f"the result of {fn.__name__}")
    path = cache_dir() / f"{fn.__name__}-{key(fn, args, kwargs)[:24]}.pt"
    if path.exists():
        try:
            with torch.serialization.safe_globals(list(KEPT_CLASSES)):
                return torch.load(path, weights_only=True)
        except Exception:   # unreadable (truncated, or from another torch): compute it again
            path.unlink(missing_ok=True)
    result = plain(fn(*args, **kwargs), f"the result of {fn.__name__}")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    torch.save(result, tmp)
    os.replace(tmp, path)
    return result
