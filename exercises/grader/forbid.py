"""What an exercise forbids, stubbed in the student process (``metadata.grader.forbid``).

Some exercises ask the student to write by hand what a library the course needs does in one call
(``instance_norm`` in torch, a Gaussian blur in torchvision): the library cannot be hidden whole
(:mod:`grader.hide` does that for the others), so the student process makes these calls raise
before the student's cells run, by :func:`forbid`. Two kinds of entries: torch *operators*, stubbed
in the dispatcher so that every Python route reaches the stub, and Python functions or classes,
stubbed as *objects* so that every name bound to them raises. A best effort: what gets past it is
for :mod:`grader.routes` to flag and the instructor to read.
"""
from __future__ import annotations

import sys

#: Dispatch keys whose kernels compute an operator (or decompose it into others): a stub registered
#: there is what every route to the operator ends in. The other keys (Autograd, Autocast, Tracer,
#: Functionalize, vmap's FuncTorch*, ...) pass the call on to one of these; Meta (shapes only, no
#: values) stays, so that code that only traces shapes (torch._dynamo, torchvision's fake kernels) works.
COMPUTE_KEYS = ("CompositeImplicitAutograd", "CompositeImplicitAutogradNestedTensor", "CompositeExplicitAutograd",
                "CompositeExplicitAutogradNonFunctional", "CPU", "CUDA", "MkldnnCPU", "QuantizedCPU", "QuantizedCUDA",
                "SparseCPU", "SparseCUDA", "SparseCsrCPU", "SparseCsrCUDA", "NestedTensorCPU", "NestedTensorCUDA")
_LIBRARIES: dict = {}   # namespace -> torch.library.Library: the stubs last as long as these objects


def _refusal(what: str) -> str:
    return f"{what} is not available while this exercise is graded: the exercise asks you to write it yourself"


def _stub_code(message: str, n_free: int):
    """A code object that raises ``NotImplementedError(message)``, with ``n_free`` free variables, so
    that it can replace the ``__code__`` of a function whose closure has that many cells."""
    free = [f"_free{i}" for i in range(n_free)]
    lines = ["def _outer():"] + [f"    {v} = None" for v in free] + ["    def _stub(*args, **kwargs):",
                                                                       f"        raise NotImplementedError({message!r})"]
    if free:  # (after the raise: never read, but they make the cells this code expects)
        lines.append(f"        {', '.join(free)}")
    lines.append("    return _stub")
    ns: dict = {}
    exec(compile("\n".join(lines), "<forbidden>", "exec"), ns)  # noqa: S102 - our own constant text
    return ns["_outer"]().__code__


def _operators(pattern: str) -> list[str]:
    """Every registered operator overload that ``pattern`` names (``aten::instance_norm``: all its
    overloads; shell-style wildcards allowed, as in ``aten::*batch_norm*``)."""
    import fnmatch

    import torch

    names = torch._C._dispatch_get_all_op_names()
    return sorted(n for n in names if fnmatch.fnmatchcase(n, pattern) or fnmatch.fnmatchcase(n.split(".")[0], pattern))


def _forbid_operators(pattern: str, apply: bool) -> list[str]:
    """Register a raising kernel for every compute key (:data:`COMPUTE_KEYS`) of the operators
    ``pattern`` names: the dispatcher then raises, whatever Python name called the operator
    (``F.instance_norm``, ``torch.instance_norm``, ``torch._C._VariableFunctions``, ``torch._VF``,
    ``torch.ops.aten``, ``torch._C._jit_get_operation``, ``nn.InstanceNorm2d``, ...)."""
    import torch

    done = []
    for op in _operators(pattern):
        ns, name = op.split("::", 1)
        keys = [k for k in COMPUTE_KEYS if torch._C._dispatch_has_kernel_for_dispatch_key(op, k)]
        if not keys:
            continue
        done.append(f"{op} ({', '.join(keys)})")
        if not apply:
            continue
        message = _refusal(f"{op.split('.')[0]} (torch's operator, whatever name calls it)")

        def stub(*args, _message=message, **kwargs):
            raise NotImplementedError(_message)
        try:
            lib = _LIBRARIES.get(ns) or _LIBRARIES.setdefault(ns, torch.library.Library(ns, "IMPL"))
            for key in keys:
                lib.impl(name, stub, key)
        except Exception as e:  # noqa: BLE001 - one operator that cannot be stubbed does not stop grading
            done[-1] += f": not stubbed ({type(e).__name__}: {e})"
    return done


def _python_objects(dotted: str) -> list[tuple[str, object]]:
    """``(name, object)`` for the Python name ``dotted`` (its last part may have wildcards:
    ``torchvision.transforms._functional_tensor.*gaussian*``); its module is imported."""
    import fnmatch
    import importlib

    parts = dotted.split(".")
    for i in range(len(parts) - 1, 0, -1):
        try:
            owner = importlib.import_module(".".join(parts[:i]))
        except Exception:  # noqa: BLE001 - not a module (or a hidden one): try the parent
            continue
        try:
            for name in parts[i:-1]:
                owner = getattr(owner, name)
        except AttributeError:
            return []
        prefix = ".".join(parts[:-1])
        if any(c in parts[-1] for c in "*?["):
            names = [n for n in sorted(vars(owner)) if fnmatch.fnmatchcase(n, parts[-1])]
        else:
            names = [parts[-1]] if hasattr(owner, parts[-1]) else []
        return [(f"{prefix}.{n}", getattr(owner, n)) for n in names]
    return []


def _forbid_object(name: str, obj, apply: bool, aliases: list) -> str | None:
    """Stub one Python object *itself*, so that every name bound to it raises: a function gets a
    raising ``__code__`` (the functions it wraps too, ``__wrapped__``), a class a raising
    ``__init__``; anything else (a builtin) is replaced, in every loaded module, wherever it is
    bound (collected into ``aliases``, done by :func:`_replace_aliases`)."""
    import types

    message = _refusal(name)
    if isinstance(obj, types.FunctionType):
        chain, f = [], obj
        while isinstance(f, types.FunctionType) and f not in chain and len(chain) < 10:
            chain.append(f)
            f = getattr(f, "__wrapped__", None)
        if apply:
            for f in chain:
                f.__code__ = _stub_code(message, len(f.__code__.co_freevars))
        return f"{name} (function)"
    if isinstance(obj, type) and obj.__flags__ & (1 << 9):  # Py_TPFLAGS_HEAPTYPE: a class defined in Python
        if apply:
            def __init__(self, *args, **kwargs):
                raise NotImplementedError(message)
            obj.__init__ = __init__
        return f"{name} (class)"
    if callable(obj):
        aliases.append((obj, message))
        return f"{name} (every module attribute bound to it)"
    return None


def _replace_aliases(aliases: list) -> None:
    def stub_for(message):
        def stub(*args, **kwargs):
            raise NotImplementedError(message)
        return stub

    stubs = {id(obj): (obj, stub_for(message)) for obj, message in aliases}
    for module in list(sys.modules.values()):
        namespace = getattr(module, "__dict__", None)
        if not isinstance(namespace, dict):
            continue
        for key, value in list(namespace.items()):
            hit = stubs.get(id(value))
            if hit is not None and hit[0] is value:
                namespace[key] = hit[1]


def forbid(entries, apply: bool = True) -> dict[str, list[str]]:
    """Make what ``entries`` name (``metadata.grader.forbid``) raise ``NotImplementedError``, for this
    process: what an exercise asks the student to write by hand, in a library that cannot be hidden
    as a whole (torch, torchvision, PIL). Two kinds of entries:

    * ``namespace::operator`` (``aten::instance_norm``; wildcards allowed: ``aten::*batch_norm*``):
      torch's *operator*, in the dispatcher, with all its overloads -- every Python route reaches it
      (:func:`_forbid_operators`), so one entry covers ``F.instance_norm``, ``torch.instance_norm``,
      ``torch._VF``, ``torch.ops.aten``, ``nn.InstanceNorm2d`` and the rest;
    * a dotted Python name (``torchvision.transforms.functional.gaussian_blur``; wildcards allowed
      in its last part): the function or class *object* is stubbed (:func:`_forbid_object`), so it
      raises under any other name or module path that is bound to it.

    Returns, per entry, what was (with ``apply=False``: would be) stubbed; an entry that names
    nothing gets an empty list (``python -m grader.hide`` warns about it). Nothing the grader itself
    uses in this process (the answer encoding, ``torch.save``, :func:`course_lib.grading.state`)
    goes through these operators. A best effort still: code that undoes a registration, or computes
    the result in a way nobody listed, gets through; :mod:`grader.routes` flags the suspicious
    routes in the submitted source for the instructor."""
    report, aliases = {}, []
    for entry in entries:
        entry = str(entry)
        try:
            if "::" in entry:
                report[entry] = _forbid_operators(entry, apply)
            else:
                found = [_forbid_object(name, obj, apply, aliases) for name, obj in _python_objects(entry)]
                report[entry] = [f for f in found if f]
        except Exception as e:  # noqa: BLE001 - a broken entry does not stop grading
            report[entry] = [f"error: {type(e).__name__}: {e}"]
    if apply and aliases:
        _replace_aliases(aliases)
    return report
