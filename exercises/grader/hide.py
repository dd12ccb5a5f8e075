"""Which installed modules implement an exercise's methods, and so are hidden while it is graded.

A hand list of modules to hide goes stale: a new library in the course's venv (or one nobody
thought of) hands the student the finished method, e.g. ``pytorch_grad_cam``'s
``GuidedBackpropReLUModel`` for exercise 03. So each source notebook says *what* the student
writes, as regular expressions (``metadata.grader.methods``, matched case-insensitively, with
:func:`re.search`, against names), and this module audits the course's Python for them:

* it asks the course's Python (a trusted run, outside any sandbox, like
  :func:`grader.sandbox.python_info`) for its import roots: every folder of ``sys.path`` except
  the standard library (the venv's site-packages), and the folders of editable installs
  (``course_lib``);
* it reads every ``.py`` and ``.pyi`` file there (``.pyi`` stubs describe compiled modules,
  e.g. OpenCV's) and collects the names of the functions, methods and classes *defined* in
  them (a fast regular expression for the names after ``def`` and ``class``; a file with a
  matching name is then parsed with :mod:`ast`, so a ``def`` in a docstring or a comment does not
  count). Test files and
  ``tests`` folders are left out: tests of a library are not something a student can call;
* a definition whose name matches one of the patterns is a *hit*, and its module is hidden:
  for a third-party package its top-level module (``captum``, ``pytorch_grad_cam``,
  ``sklearn``: the whole library, as the sandbox replaces a package folder as a whole; below a
  namespace package, the first regular package); for ``course_lib``, the submodule
  (``course_lib.saliency``);
* unless hiding it would break what every graded notebook needs: the core libraries of
  :data:`CORE` (each with its reason), and every module that is loaded when the sandbox's basic
  imports (:data:`BASE_IMPORTS`: the student process's preloads, the exercises' set-up imports,
  IPython) are imported in the course's Python. Such a hit is reported as *allowed*, with the
  reason, not hidden.

What it cannot see: an implementation that exists only in compiled code without a stub, or
under a name that matches none of the patterns (``metadata.grader.hide_modules`` stays for
such cases: it is added to what this finds).

The scan of the whole venv (torch included) takes a few seconds; its result is kept in memory
and on disk (``$XDG_CACHE_HOME/course-grader`` or ``~/.cache/course-grader``), keyed by the
course's Python, the folders and modification times of its import roots (a package installed,
removed or upgraded changes them) and the patterns.

``python -m grader.hide [--python PY] NOTEBOOK...`` prints the audit of source notebooks, with a
warning for a ``hide_modules`` entry that a base import loads (:func:`needed_by_every_notebook`),
and what each ``metadata.grader.forbid`` entry stubs in that Python (:func:`forbid_report`, a dry
run of :func:`grader.forbid.forbid`: an *allowed* hit such as ``torch._VF.instance_norm`` stays
importable, and it is the ``aten::`` operator entries that make it raise), with a warning for an
entry that names nothing.
"""
from __future__ import annotations

import ast
import hashlib
import json
import os
import re
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

SCAN_VERSION = 1  # bump when the rules change (invalidates the disk cache)

#: Libraries that stay importable whatever they contain: the notebooks cannot run without them.
CORE: dict[str, str] = {
    "torch": "the framework every exercise is written in (tensors, autograd, nn)",
    "torchvision": "the course's models and image transforms build on it",
    "numpy": "arrays; used by torch, matplotlib and course_lib",
    "matplotlib": "the notebooks' plots (course_lib.figures draws with it)",
    "PIL": "image loading (course_lib.data, course_lib.imaging)",
    "IPython": "runs the student's cells in the sandbox",
    "traitlets": "IPython's configuration",
    "course_lib": "the course package itself: only its submodules are hidden, one by one",
}

#: Packages that are hidden one submodule at a time (the course's own; the rest of it is needed).
PER_SUBMODULE = ("course_lib",)

#: What a graded notebook needs to import (the student process's preloads, the exercises' set-up
#: cells, grader.student itself): everything these load in the course's Python stays importable.
BASE_IMPORTS = ("numpy", "torch", "torch.nn", "torch.nn.functional", "torchvision", "matplotlib.pyplot",
                "PIL.Image", "course_lib.models", "course_lib.layers", "course_lib.imaging", "course_lib.figures",
                "course_lib.data", "course_lib.grading", "IPython.core.interactiveshell", "traitlets.config")

# the index: every name after "def" or "class" (two regular expressions with a literal start are
# several times faster than one anchored at line starts); a hit is then confirmed with ast, or
# where a file does not parse, with _DEF_LINE
_DEF_LOOSE = (re.compile(rb"def[ \t]+([A-Za-z_][A-Za-z0-9_]*)"), re.compile(rb"class[ \t]+([A-Za-z_][A-Za-z0-9_]*)"))
_DEF_LINE = re.compile(rb"^[ \t]*(?:async[ \t]+)?(?:def|class)[ \t]+([A-Za-z_][A-Za-z0-9_]*)", re.M)
_TEST_DIRS = {"tests", "test"}
_SUFFIXES = (".py", ".pyi")

_ROOTS_QUERY = r"""
import importlib.util, json, os, sys, sysconfig
std = {os.path.realpath(p) for p in (os.path.dirname(os.__file__), sysconfig.get_path("stdlib"))}
roots = []
for p in sys.path:   # the standard library is left out (its lib-dynload too), its site-packages not
    rp = os.path.realpath(p) if p else ""
    if not rp or not os.path.isdir(rp) or rp in roots:
        continue
    if {"site-packages", "dist-packages"} & set(rp.split(os.sep)) or not any(
            rp == s or rp.startswith(s + os.sep) for s in std):
        roots.append(rp)
mapped = {}
for f in sys.meta_path:   # setuptools' editable installs map a top-level name to a folder
    m = getattr(sys.modules.get(getattr(f, "__module__", "") or ""), "MAPPING", None)
    if isinstance(m, dict):
        mapped.update({k: os.path.realpath(v) for k, v in m.items() if isinstance(v, str)})
for name in json.loads(sys.argv[1]):
    try:
        spec = importlib.util.find_spec(name)
    except Exception:
        spec = None
    if spec is not None and spec.submodule_search_locations:
        mapped.setdefault(name, os.path.realpath(list(spec.submodule_search_locations)[0]))
print(json.dumps({"executable": os.path.realpath(sys.executable), "roots": roots, "mapped": mapped}))
"""

_NEEDED_QUERY = r"""
import importlib, json, sys
out = {}
for name in json.loads(sys.argv[1]):
    before = set(sys.modules)
    try:
        importlib.import_module(name)
        error = None
    except BaseException as e:
        error = f"{type(e).__name__}: {e}"[:300]
    out[name] = {"loaded": sorted(set(sys.modules) - before), "error": error}
print("\n@@NEEDED@@" + json.dumps(out))
"""


class ScanError(RuntimeError):
    """The course's Python could not be asked, or a pattern is not a valid regular expression."""


@dataclass
class Audit:
    methods: list[str]
    hidden: list[str] = field(default_factory=list)                 # modules to hide (sorted)
    allowed: dict[str, str] = field(default_factory=dict)           # module with hits -> why it stays
    hits: dict[str, list[str]] = field(default_factory=dict)        # module -> ["pkg.mod.Name  (pattern)", ...]
    base_errors: dict[str, str] = field(default_factory=dict)       # BASE_IMPORTS that failed in that Python
    seconds: float = 0.0                                            # time of the scan (0 when cached)
    cached: bool = False


# --------------------------------------------------------------------------- asking the course's Python

def _env() -> dict:
    env = dict(os.environ, PYTHONDONTWRITEBYTECODE="1", MPLBACKEND="Agg", CUDA_VISIBLE_DEVICES="")
    env.pop("PYTHONPATH", None)
    env.pop("PYTHONHOME", None)
    return env


def _ask(python: str, script: str, arg, timeout: int) -> str:
    try:
        proc = subprocess.run([os.path.abspath(python), "-c", script, json.dumps(arg)], capture_output=True,
                              text=True, env=_env(), cwd="/", timeout=timeout)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise ScanError(f"cannot run the course's Python {python}: {e}") from e
    if proc.returncode != 0:
        raise ScanError(f"cannot run the course's Python {python}: {proc.stderr.strip()[-2000:]}")
    return proc.stdout


def import_roots(python: str) -> dict:
    """``{"executable", "roots": [site folders], "mapped": {top-level name: folder}}`` of that Python."""
    return json.loads(_ask(python, _ROOTS_QUERY, list(PER_SUBMODULE), 120))


def needed_modules(python: str) -> tuple[dict[str, str], dict[str, str]]:
    """Modules loaded by :data:`BASE_IMPORTS` (module -> the base import that loaded it), and the
    base imports that failed there (name -> error)."""
    out = _ask(python, _NEEDED_QUERY, list(BASE_IMPORTS), 600)
    data = json.loads(out.rsplit("@@NEEDED@@", 1)[1])
    needed, errors = {}, {}
    for base, r in data.items():
        for m in r["loaded"]:
            needed.setdefault(m, base)
        if r["error"]:
            errors[base] = r["error"]
    return needed, errors


# --------------------------------------------------------------------------- the scan

def _is_test_file(name: str) -> bool:
    return name.startswith("test_") or name.endswith(("_test.py", "_test.pyi")) or name in ("conftest.py",
                                                                                              "tests.py")


def _module_dirs(roots: list[str], mapped: dict[str, str]):
    """(top-level name, folder or file) of everything importable from the roots."""
    for name, folder in mapped.items():
        if os.path.isdir(folder):
            yield name, folder
    for root in roots:
        try:
            entries = sorted(os.scandir(root), key=lambda e: e.name)
        except OSError:
            continue
        for e in entries:
            name = e.name
            if e.is_dir():
                if name.endswith("-stubs"):
                    name = name[: -len("-stubs")]
                if not name.isidentifier() or name == "__pycache__":
                    continue
            elif e.is_file() and name.endswith(_SUFFIXES):
                name = name.rsplit(".", 1)[0]
                if not name.isidentifier() or _is_test_file(e.name):
                    continue
            else:
                continue
            if name not in mapped:
                yield name, e.path


def _files(top: str, path: str):
    """(dotted module, file) of every .py/.pyi file of one top-level module, tests left out."""
    if os.path.isfile(path):
        yield top, path
        return
    for dirpath, dirnames, filenames in os.walk(path):
        dirnames[:] = sorted(d for d in dirnames if d.isidentifier() and d not in _TEST_DIRS)
        rel = os.path.relpath(dirpath, path)
        parts = [top] + ([] if rel == "." else rel.split(os.sep))
        for f in sorted(filenames):
            if not f.endswith(_SUFFIXES) or _is_test_file(f):
                continue
            stem = f.rsplit(".", 1)[0]
            if not stem.isidentifier():
                continue
            yield ".".join(parts if stem == "__init__" else parts + [stem]), os.path.join(dirpath, f)


@dataclass
class _Index:
    files: list[tuple[str, str, str]]          # (module, path, top-level folder or file)
    names: dict[str, list[int]]                # defined name -> indices into files
    seconds: float


def scan(roots: list[str], mapped: dict[str, str] | None = None) -> _Index:
    """Every function/class name defined in the .py/.pyi files under the import roots."""
    start = time.perf_counter()
    files: list[tuple[str, str, str]] = []
    names: dict[bytes, list[int]] = {}
    for top, base in _module_dirs(roots, mapped or {}):
        for module, path in _files(top, base):
            try:
                with open(path, "rb") as fh:
                    data = fh.read()
            except OSError:
                continue
            found = set(_DEF_LOOSE[0].findall(data)).union(_DEF_LOOSE[1].findall(data))
            if not found:
                continue
            i = len(files)
            files.append((module, path, base))
            for n in found:
                names.setdefault(n, []).append(i)
    return _Index(files, {k.decode("ascii"): v for k, v in names.items()}, time.perf_counter() - start)


def _compile(methods) -> list[re.Pattern]:
    out = []
    for m in methods:
        try:
            out.append(re.compile(m, re.IGNORECASE))
        except re.error as e:
            raise ScanError(f"metadata.grader.methods: {m!r} is not a valid regular expression: {e}") from e
    return out


def _defined(path: str) -> set[str]:
    """Names of the functions and classes a file really defines (not in a string or a comment)."""
    try:
        with open(path, "rb") as fh:
            data = fh.read()
    except OSError:
        return set()
    try:
        tree = ast.parse(data, filename=path)
    except (SyntaxError, ValueError, RecursionError, MemoryError):   # not this Python's syntax: def/class lines
        return {n.decode("ascii") for n in _DEF_LINE.findall(data)}
    return {n.name for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))}


def _unit(module: str, base: str) -> str:
    """The module to hide for a hit in ``module`` (found in the top-level folder or file ``base``)."""
    parts = module.split(".")
    if parts[0] in PER_SUBMODULE:
        return ".".join(parts[:2])
    if os.path.isfile(base):
        return parts[0]
    folder, i = base, 1
    # below a namespace package (a folder without __init__), the first regular package or module
    while i < len(parts) and not any(os.path.exists(os.path.join(folder, f"__init__{s}")) for s in _SUFFIXES):
        folder = os.path.join(folder, parts[i])
        i += 1
    return ".".join(parts[:i])


def _top(module: str) -> str:
    return module.split(".", 1)[0]


def audit_index(index: _Index, methods, needed: dict[str, str] | None = None,
                base_errors: dict[str, str] | None = None) -> Audit:
    """Match the patterns against a scan: what is hidden, what is allowed (and why)."""
    patterns = _compile(methods)
    needed = needed or {}
    result = Audit(methods=list(methods), base_errors=dict(base_errors or {}), seconds=index.seconds)
    if not patterns:
        return result
    anyone = re.compile("|".join(f"(?:{p.pattern})" for p in patterns), re.IGNORECASE)
    per_file: dict[int, list[tuple[str, str]]] = {}
    for name, where in index.names.items():
        if anyone.search(name):
            pattern = next(p.pattern for p in patterns if p.search(name))
            for i in where:
                per_file.setdefault(i, []).append((name, pattern))
    hits: dict[str, list[str]] = {}
    for i, found in sorted(per_file.items()):
        module, path, base = index.files[i]
        real = _defined(path)
        found = [(n, p) for n, p in found if n in real]
        if not found:
            continue
        unit = _unit(module, base)
        hits.setdefault(unit, []).extend(f"{module}.{n}  ({p})" for n, p in sorted(found))
    for unit in sorted(hits):
        top = _top(unit)
        result.hits[unit] = sorted(set(hits[unit]))
        if unit in CORE or (top in CORE and top not in PER_SUBMODULE):
            result.allowed[unit] = CORE.get(unit) or CORE[top]
        elif unit in needed:
            result.allowed[unit] = f"loaded by `import {needed[unit]}`, which every graded notebook needs"
        else:
            result.hidden.append(unit)
    return result


# --------------------------------------------------------------------------- caching

def _fingerprint(python: str, where: dict) -> str:
    h = hashlib.sha256(json.dumps([SCAN_VERSION, BASE_IMPORTS, sorted(CORE), PER_SUBMODULE, python, where],
                                  sort_keys=True).encode())
    h.update(_OWN_SOURCE)                            # the rules themselves
    for p in [where["executable"]] + list(where["roots"]):
        try:
            st = os.stat(p)
            h.update(f"{p}\0{st.st_mtime_ns}\0".encode())
            if os.path.isdir(p):
                for e in sorted(os.scandir(p), key=lambda e: e.name):
                    h.update(f"{e.name}\0{e.stat(follow_symlinks=False).st_mtime_ns}\0".encode())
        except OSError:
            h.update(f"{p}\0missing\0".encode())
    for folder in sorted(where["mapped"].values()):   # editable installs: every file (they are edited in place)
        for dirpath, dirnames, filenames in os.walk(folder):
            dirnames[:] = sorted(d for d in dirnames if d != "__pycache__")
            for f in sorted(filenames):
                if f.endswith(_SUFFIXES):
                    try:
                        st = os.stat(os.path.join(dirpath, f))
                    except OSError:
                        continue
                    h.update(f"{dirpath}/{f}\0{st.st_mtime_ns}\0{st.st_size}\0".encode())
    return h.hexdigest()


def cache_dir() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "course-grader"


_OWN_SOURCE = Path(__file__).read_bytes()
_INDEX: dict[str, _Index] = {}
_NEEDED: dict[str, tuple[dict, dict]] = {}
_AUDITS: dict[tuple[str, tuple[str, ...]], Audit] = {}


def _disk(key: str) -> Path:
    return cache_dir() / f"hide-{key[:48]}.json"


def _load(key: str):
    try:
        return json.loads(_disk(key).read_text())
    except (OSError, ValueError):
        return None


def _store(key: str, value) -> None:
    path = _disk(key)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(value))
        os.replace(tmp, path)
    except OSError:
        pass


def forget() -> None:
    """Drop what this process remembers (the next audit scans again, unless the disk cache has it)."""
    for memo in (_INDEX, _NEEDED, _AUDITS):
        memo.clear()


def audit(python: str, methods, cache: bool = True) -> Audit:
    """The audit of the course's Python ``python`` for the patterns ``methods`` (see the module's doc).

    ``cache=False``: no result stored on disk is used (what this process found since :func:`forget`
    still is: the scan of a venv whose folders did not change)."""
    methods = list(methods or [])
    _compile(methods)
    if not methods:
        return Audit(methods=[])
    where = import_roots(python)
    fp = _fingerprint(os.path.abspath(python), where)
    key = hashlib.sha256(json.dumps([fp, methods]).encode()).hexdigest()
    if cache:
        if (fp, tuple(methods)) in _AUDITS:
            return replace(_AUDITS[(fp, tuple(methods))], seconds=0.0, cached=True)
        try:
            a = Audit(**{**_load(key), "seconds": 0.0, "cached": True})
        except TypeError:           # nothing stored (or not an audit)
            pass
        else:
            _AUDITS[(fp, tuple(methods))] = a
            return a
    _needed(python, fp, cache)
    if fp not in _INDEX:
        _INDEX.clear()                       # one venv at a time: the index holds every name defined in it
        _INDEX[fp] = scan(where["roots"], where["mapped"])
    needed, errors = _NEEDED[fp]
    a = audit_index(_INDEX[fp], methods, needed, errors)
    _AUDITS[(fp, tuple(methods))] = a
    _store(key, {k: v for k, v in asdict(a).items() if k not in ("seconds", "cached")})
    return a


def _needed(python: str, fp: str, cache: bool = True) -> tuple[dict, dict]:
    """:func:`needed_modules` of that Python (fingerprint ``fp``), remembered in memory and on disk."""
    if fp not in _NEEDED:
        stored = _load("needed-" + fp) if cache else None
        if not (isinstance(stored, list) and len(stored) == 2):
            stored = needed_modules(python)          # imports torch & co. in that Python: seconds
            _store("needed-" + fp, list(stored))
        _NEEDED[fp] = tuple(stored)
    return _NEEDED[fp]


def needed_by_every_notebook(python: str, modules, cache: bool = True) -> dict[str, str]:
    """Those of ``modules`` (e.g. a notebook's explicit ``metadata.grader.hide_modules``) that hiding
    would break: module -> the base import (:data:`BASE_IMPORTS`) that loads it or a submodule of it."""
    where = import_roots(python)
    needed, _ = _needed(python, _fingerprint(os.path.abspath(python), where), cache)
    out = {}
    for m in modules:
        base = needed.get(m) or next((b for n, b in needed.items() if n.startswith(m + ".")), None)
        if base:
            out[m] = base
    return out


_FORBID_QUERY = r"""
import json, sys
arg = json.loads(sys.argv[1])
sys.path.insert(0, arg["exercises"])
from grader.forbid import forbid
print("\n@@FORBID@@" + json.dumps(forbid(arg["entries"], apply=False)))
"""


def forbid_report(python: str, entries) -> dict[str, list[str]]:
    """What each ``metadata.grader.forbid`` entry would stub in the course's Python (a dry run of
    :func:`grader.forbid.forbid` there: operators with their dispatch keys, Python functions and
    classes). An entry with an empty list names nothing: a typo, or a name the library dropped."""
    arg = {"exercises": str(Path(__file__).resolve().parents[1]), "entries": [str(e) for e in entries or []]}
    if not arg["entries"]:
        return {}
    return json.loads(_ask(python, _FORBID_QUERY, arg, 600).rsplit("@@FORBID@@", 1)[1])


def outermost(modules) -> list[str]:
    """``modules`` without those inside another of them (``scipy.ndimage`` when ``scipy`` is there):
    the sandbox hides a package folder whole, so what lies inside it is gone already, and hiding it
    again would need a folder the hidden package no longer has."""
    modules = list(dict.fromkeys(modules))
    return [m for m in modules if not any(m.startswith(o + ".") for o in modules)]


def implementations(python: str, methods) -> list[str]:
    """The modules of the course's Python that implement one of ``methods`` (regular expressions
    for the names of the functions and classes the student writes) and can be hidden."""
    return list(audit(python, methods).hidden)


# --------------------------------------------------------------------------- python -m grader.hide

def _main(argv=None) -> int:
    import argparse

    ap = argparse.ArgumentParser(prog="python -m grader.hide", description=__doc__.split("\n\n")[0])
    ap.add_argument("--python", default=str(Path(__file__).resolve().parents[2] / ".venv" / "bin" / "python"),
                    help="the course's Python (default: the repository's .venv)")
    ap.add_argument("--no-cache", action="store_true", help="scan again, even if a cached audit exists")
    ap.add_argument("notebooks", nargs="+", help="source notebooks (their metadata.grader.methods)")
    args = ap.parse_args(argv)
    if args.no_cache:
        forget()
    for nb in args.notebooks:
        meta = json.loads(Path(nb).read_text()).get("metadata", {}).get("grader", {})
        a = audit(args.python, meta.get("methods", []), cache=not args.no_cache)
        explicit = list(meta.get("hide_modules", []))
        print(f"{nb}:\n  methods: {a.methods}\n  hide_modules (explicit): {explicit}")
        print(f"  hidden (found): {a.hidden}\n  hidden in all: {list(dict.fromkeys(explicit + a.hidden))}")
        every = list(dict.fromkeys(explicit + a.hidden))
        for unit in sorted(set(every) - set(outermost(every))):
            print(f"  warning: {unit} lies inside another hidden module, which hides it already (see `outermost`)")
        for unit, base in needed_by_every_notebook(args.python, explicit, cache=not args.no_cache).items():
            print(f"  warning: hide_modules lists {unit}, which `import {base}` loads: every graded notebook "
                  f"needs that import, and hiding {unit} breaks it")
        for entry, stubs in forbid_report(args.python, meta.get("forbid", [])).items():
            if stubs:
                print(f"  forbid {entry}: {len(stubs)} stub(s): {', '.join(stubs[:4])}" + (" ..." if len(stubs) > 4 else ""))
            else:
                print(f"  warning: forbid {entry} names nothing in that Python (a typo, or a name the library dropped)")
        for unit, why in a.allowed.items():
            print(f"  allowed: {unit} ({why}; `forbid` stubs what must not be called); "
                  f"hits: {', '.join(h.split('  ')[0] for h in a.hits[unit][:6])}"
                  + (" ..." if len(a.hits[unit]) > 6 else ""))
        for unit in a.hidden:
            print(f"  hit: {unit}: {', '.join(h.split('  ')[0] for h in a.hits[unit][:6])}"
                  + (" ..." if len(a.hits[unit]) > 6 else ""))
        for base, err in a.base_errors.items():
            print(f"  warning: `import {base}` fails in that Python: {err}")
        print(f"  scan: {a.seconds:.1f} s" + (" (cached)" if a.cached else ""))
    return 0


if __name__ == "__main__":
    sys.exit(_main())
