"""Suspicious routes in a submission's code, flagged for the instructor (the *driver*; grader venv).

The student process stubs what an exercise forbids (:func:`grader.forbid.forbid`: torch's
operators in the dispatcher, Python functions as objects) and hides whole libraries
(:mod:`grader.hide`), but a program can always find another way: a private module, a name built at
run time, a second Python without the stubs, a walk up the stack into the grader. Rather than
trust names, this module reads the student's cells (never runs them: :mod:`ast` only) and lists
the routes that a human should look at:

* **private or low-level torch routes**: ``torch._C``, ``torch._VF``, ``torch._ops``, ``torch.ops``,
  ``torch.library``, ``_jit_get_operation``, any ``torch._*``, an ``aten::`` operator name in a
  string; code compiled or traced by torch (``torch.compile``, ``torch.jit``, ``torch.fx``,
  ``torch.export``), and private parts of other libraries (``torchvision...._misc``);
* **library versions of the exercise's methods**: a name reached through a module whose last part
  matches one of the exercise's ``metadata.grader.methods`` patterns or ``forbid`` entries
  (``F.instance_norm``, ``scipy.ndimage.gaussian_filter1d``, ``from torchvision... import
  gaussian_blur``), and a library's attribute replaced (``F.instance_norm = ...``);
* **introspection that can reach the grader**: ``sys._getframe``, ``inspect`` frames, ``f_back``,
  ``f_globals``, ``__globals__``, ``__code__``, ``__subclasses__``, ``gc.get_objects`` /
  ``get_referrers``, ``ctypes``, ``sys.modules``, a module's ``__dict__`` or ``vars()``,
  ``getattr`` with a computed name on a module, ``importlib.import_module`` / ``__import__`` of a
  computed name, ``eval``/``exec``/``compile`` of computed code (constant code is read as well);
* **imports of the grader** (``grader``, ``__main__``);
* **another program or Python**, where the stubs do not apply: ``subprocess``, ``os.system``,
  ``os.exec*``/``spawn*``/``popen``, ``multiprocessing``, ``pty``, and the shell and script magics
  (``!cmd``, ``%%bash``, ``%run``, ...).

A flag is not a deduction: it is shown in the feedback's report ("for your instructor to read"),
kept in the autograded notebook's ``metadata.grader.flags`` and printed on the ``python -m grader
autograde`` console (:mod:`grader.rebuild` does that). The honest reference solutions of all the
exercises raise none (``tests/test_sandbox.py``). What it cannot see: code that does not parse
(it does not run either), and routes nobody listed -- the list above is where to add them.
"""
from __future__ import annotations

import ast
import fnmatch
import re
from dataclasses import asdict, dataclass

#: attributes that lead from a function or a frame to the caller's (the grader's) state
INTROSPECTION_ATTRS = {
    "f_back": "walks up the call stack", "f_globals": "reads a frame's global names",
    "f_locals": "reads a frame's local names", "f_builtins": "reads a frame's builtins",
    "tb_frame": "reaches a frame through a traceback", "gi_frame": "reaches a generator's frame",
    "cr_frame": "reaches a coroutine's frame", "ag_frame": "reaches a generator's frame",
    "__globals__": "reads a function's module namespace", "__code__": "reads or replaces a function's code",
    "__closure__": "reads a function's closure", "__subclasses__": "lists every subclass (a way around imports)",
    "__builtins__": "reaches the builtins", "__dict__": "reads or changes an object's namespace",
}
#: dotted names (as imported) that are flagged wherever they are used, with the reason
FLAGGED_NAMES = {
    "sys._getframe": "walks up the call stack", "sys._current_frames": "reads every thread's frame",
    "sys.modules": "reaches every loaded module (the grader's own included)",
    "sys.settrace": "traces the grader's code", "sys.setprofile": "traces the grader's code",
    "inspect.currentframe": "walks up the call stack", "inspect.stack": "walks up the call stack",
    "inspect.trace": "walks up the call stack", "inspect.getouterframes": "walks up the call stack",
    "inspect.getinnerframes": "walks the call stack", "inspect.getframeinfo": "reads a frame",
    "gc.get_objects": "lists every object of the process (the grader's included)",
    "gc.get_referrers": "finds the objects that hold a given one", "gc.get_referents": "walks object references",
    "ctypes": "reads or writes memory directly", "_ctypes": "reads or writes memory directly",
    "cffi": "reads or writes memory directly",
    "importlib.reload": "reloads a module (a stubbed one comes back whole)",
    "torch.ops": "calls torch operators by their dispatcher names",
    "torch.library": "registers or replaces torch operator kernels (the grader's stubs are such kernels)",
    "torch.compile": "compiles code (its kernels can route around the grader's stubs)",
    "torch.jit": "compiles or traces code (its kernels can route around the grader's stubs)",
    "torch.fx": "traces code into graphs of operators", "torch.export": "exports code as graphs of operators",
    "subprocess": "starts another program (where the grader's stubs do not apply)",
    "os.system": "starts another program (where the grader's stubs do not apply)",
    "os.popen": "starts another program (where the grader's stubs do not apply)",
    "os.posix_spawn": "starts another program", "os.posix_spawnp": "starts another program",
    "multiprocessing": "starts other Python processes (where the grader's stubs may not apply)",
    "concurrent.futures.ProcessPoolExecutor": "starts other Python processes",
    "pty": "starts another program", "runpy": "runs a module or file as a script",
    "grader": "uses the grader's own code", "__main__": "reaches the module that runs the grader",
}
_PREFIX_FLAGGED = ("os.exec", "os.spawn")
#: IPython magics that run code or programs (their text is not Python, or is run elsewhere)
PROGRAM_MAGICS = {"bash", "sh", "script", "system", "sx", "run", "python", "python2", "python3", "pypy",
                  "perl", "ruby", "writefile", "file", "load", "sc"}
CODE_MAGICS = {"time", "timeit", "capture", "prun", "debug"}          # their text is Python: read it
_CALLS_WITH_CODE = {"eval", "exec", "compile"}


@dataclass(frozen=True)
class Flag:
    cell: str      # where: "answer cell `grade_id`" or "a cell you added after `grade_id`"
    line: int      # line in that cell (1-based; 0: the whole cell)
    code: str      # the route, as written or resolved (from the submission: quote it)
    why: str       # plain words

    def text(self, quote) -> str:
        where = f"{self.cell}, line {self.line}" if self.line else self.cell
        return f"{where}: {quote(self.code, 80)}: {self.why}"


def _ipython_to_python(source: str) -> str:
    """The Python that IPython runs for ``source`` (magics become calls of ``get_ipython()``)."""
    try:
        from IPython.core.inputtransformer2 import TransformerManager
    except ImportError:  # (not in this Python: magic and shell lines are read as comments)
        return "\n".join("#" + line if line.lstrip().startswith(("%", "!")) else line for line in source.split("\n"))
    try:
        return TransformerManager().transform_cell(source)
    except Exception:  # noqa: BLE001 - a cell IPython cannot transform does not run either
        return source


#: names that start with "_" and are the standard library's documented API, not a private route
DOCUMENTED = ("os._exit",)


def _private(part: str) -> bool:
    return part.startswith("_") and not (part.startswith("__") and part.endswith("__"))


class _Scanner(ast.NodeVisitor):
    """One cell: resolves names to the modules they were imported from, and flags routes."""

    def __init__(self, bound: dict[str, str], methods: list[re.Pattern], forbidden: list[str], cell: str,
                 out: list[Flag], depth: int = 0, line0: int = 0, hidden: tuple[str, ...] = ()):
        self.bound, self.methods, self.forbidden, self.hidden = bound, methods, forbidden, hidden
        self.cell, self.out, self.depth, self.line0 = cell, out, depth, line0

    # ---- helpers
    def flag(self, node, code: str, why: str) -> None:
        line = self.line0 or getattr(node, "lineno", 0)
        self.out.append(Flag(self.cell, line, code, why))

    def path(self, node) -> str | None:
        """The dotted name ``node`` stands for, if it starts at an imported module."""
        if isinstance(node, ast.Name):
            return self.bound.get(node.id)
        if isinstance(node, ast.Attribute):
            base = self.path(node.value)
            return f"{base}.{node.attr}" if base else None
        if isinstance(node, ast.Call) and not node.keywords:
            name = self.path(node.func) or (node.func.id if isinstance(node.func, ast.Name) else None)
            arg = node.args[0] if node.args else None
            const = arg.value if isinstance(arg, ast.Constant) and isinstance(arg.value, str) else None
            if name in ("importlib.import_module", "__import__") and const and len(node.args) == 1:
                return const if name != "__import__" else const.split(".")[0]
            if name == "getattr" and len(node.args) in (2, 3) and isinstance(node.args[1], ast.Constant) \
                    and isinstance(node.args[1].value, str):
                base = self.path(node.args[0])
                return f"{base}.{node.args[1].value}" if base else None
        return None

    def check_path(self, node, path: str) -> None:
        """Flags for a use of the dotted name ``path`` (an import, an attribute of a module)."""
        parts = path.split(".")
        if any(path == h or path.startswith(h + ".") for h in self.hidden):
            self.flag(node, path, "a module hidden while this exercise is graded: it implements the exercise's methods")
            return
        for name, why in FLAGGED_NAMES.items():
            if path == name or path.startswith(name + "."):
                self.flag(node, path, why)
                return
        if path.startswith(_PREFIX_FLAGGED):
            self.flag(node, path, "starts another program (where the grader's stubs do not apply)")
            return
        if parts[0] == "torch" and any(_private(p) for p in parts[1:]):
            self.flag(node, path, "a private torch route: it can reach an operator the exercise forbids by another name")
            return
        if any(_private(p) for p in parts[1:]) and path not in DOCUMENTED:
            self.flag(node, path, "a private part of a library")
            return
        if len(parts) > 1:
            last = parts[-1]
            if any(p.search(last) for p in self.methods) or any(fnmatch.fnmatchcase(last, f) for f in self.forbidden):
                self.flag(node, path, "a library's version of what this exercise asks you to write")

    # ---- imports
    def visit_Import(self, node):
        for a in node.names:
            self.check_path(node, a.name)

    def visit_ImportFrom(self, node):
        if node.level:
            self.flag(node, "." * node.level + (node.module or ""), "a relative import (of the grader's package?)")
            return
        for a in node.names:
            self.check_path(node, f"{node.module}.{a.name}" if a.name != "*" else node.module or "")

    # ---- names and attributes
    def visit_Name(self, node):
        if node.id in ("_VF", "_jit_get_operation"):
            self.flag(node, node.id, "a private torch route: it can reach an operator the exercise forbids by another name")
        elif node.id == "__builtins__":
            self.flag(node, node.id, INTROSPECTION_ATTRS["__builtins__"])

    def visit_Attribute(self, node):
        path = self.path(node)
        if path:
            if not getattr(node, "_inner", False):  # the longest module path only, once
                self.check_path(node, path)
            self._mark_inner(node.value)
            if isinstance(node.ctx, (ast.Store, ast.Del)):
                self.flag(node, path, "changes an attribute of a library module")
        if node.attr in INTROSPECTION_ATTRS:
            self.flag(node, node.attr, INTROSPECTION_ATTRS[node.attr])
        elif node.attr in ("_VF", "_jit_get_operation") and not path:
            self.flag(node, node.attr, "a private torch route: it can reach an operator the exercise forbids by "
                                       "another name")
        self.generic_visit(node)

    def _mark_inner(self, node):
        while isinstance(node, ast.Attribute):
            node._inner = True
            node = node.value

    def visit_Constant(self, node):
        if isinstance(node.value, str) and ("aten::" in node.value or "_jit_get_operation" in node.value):
            self.flag(node, node.value, "names a torch operator by its dispatcher name")

    # ---- calls
    def visit_Call(self, node):
        func = node.func
        name = func.id if isinstance(func, ast.Name) else None
        fpath = self.path(func)
        args = node.args
        const0 = args[0].value if args and isinstance(args[0], ast.Constant) and isinstance(args[0].value, str) else None
        if name in _CALLS_WITH_CODE and not fpath:
            if const0 is not None and self.depth < 3:
                self.scan_text(const0, node)
            elif args:
                self.flag(node, name, "runs code built at run time")
        elif (name == "__import__" and not fpath) or fpath == "importlib.import_module":
            if const0 is None:
                self.flag(node, fpath or name, "imports a module whose name is computed at run time")
            else:
                self.check_path(node, const0)
        elif name in ("getattr", "setattr", "delattr", "hasattr") and not fpath and len(args) >= 2:
            if self.path(args[0]) and not (isinstance(args[1], ast.Constant) and isinstance(args[1].value, str)):
                self.flag(node, f"{name}({self.path(args[0])}, ...)", "looks up a name computed at run time in a module")
            elif self.path(args[0]) and name in ("setattr", "delattr"):
                self.flag(node, f"{self.path(args[0])}.{args[1].value}", "changes an attribute of a library module")
            elif self.path(args[0]):
                self.check_path(node, f"{self.path(args[0])}.{args[1].value}")
        elif name == "vars" and not fpath and args and self.path(args[0]):
            self.flag(node, f"vars({self.path(args[0])})", "reads or changes a module's namespace")
        elif isinstance(func, ast.Attribute) and isinstance(func.value, ast.Call) \
                and isinstance(func.value.func, ast.Name) and func.value.func.id == "get_ipython":
            self.ipython_call(node, func.attr)
        self.generic_visit(node)

    def ipython_call(self, node, method: str) -> None:
        """``get_ipython().run_line_magic(...)`` and the like, as IPython writes magics and ``!``."""
        consts = [a.value if isinstance(a, ast.Constant) and isinstance(a.value, str) else None for a in node.args]
        magic = consts[0] if consts else None
        if method in ("system", "getoutput"):
            self.flag(node, "!" + (magic or "..."), "runs a shell command (another program, without the grader's stubs)")
        elif method in ("run_line_magic", "run_cell_magic") and magic is not None:
            if magic in PROGRAM_MAGICS:
                self.flag(node, ("%%" if method == "run_cell_magic" else "%") + magic,
                          "runs another program, script or file (without the grader's stubs)")
            elif magic in CODE_MAGICS and self.depth < 3:
                for text in consts[1:]:
                    if text:
                        self.scan_text(text, node)
        elif method not in ("run_line_magic", "run_cell_magic"):
            self.flag(node, f"get_ipython().{method}", "uses the shell that runs your notebook (and the grader)")

    def scan_text(self, text: str, node) -> None:
        """Code given as a constant string (``exec("...")``, ``%time ...``): read it too."""
        try:
            tree = ast.parse(_ipython_to_python(text))
        except (SyntaxError, ValueError, RecursionError, MemoryError):
            return
        _Scanner(self.bound, self.methods, self.forbidden, self.cell, self.out, self.depth + 1,
                 self.line0 or getattr(node, "lineno", 0), self.hidden).visit(tree)


def _bind_imports(tree, bound: dict[str, str]) -> None:
    """Record what names the imports (and plain aliases: ``G = torch.nn.functional``) bind."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                if a.asname:
                    bound[a.asname] = a.name
                else:
                    top = a.name.split(".")[0]
                    bound[top] = top
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            for a in node.names:
                if a.name != "*":
                    bound[a.asname or a.name] = f"{node.module}.{a.name}"
    for _ in range(3):  # aliases of aliases
        scanner = _Scanner(bound, [], [], "", [])
        for node in ast.walk(tree):
            if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
                path = scanner.path(node.value)
                if path and node.targets[0].id not in bound:
                    bound[node.targets[0].id] = path


def _parse(source: str):
    try:
        return ast.parse(_ipython_to_python(source))
    except (SyntaxError, ValueError, RecursionError, MemoryError):  # it does not run either
        return None


def scan(cells, context=(), methods=(), forbid=(), hidden=()) -> list[Flag]:
    """The flags for the student's ``cells`` (``(where, source)`` pairs, e.g. ``("answer cell `fgsm`",
    "def fgsm(...): ...")``). ``context``: the sources of the other code cells that run before them
    (the instructor's set-up: its imports bind names, e.g. ``F``); ``methods``: the exercise's
    ``metadata.grader.methods`` patterns; ``forbid``: its ``metadata.grader.forbid`` entries (their
    last names count, ``aten::*instance_norm*`` as ``*instance_norm*``); ``hidden``: the modules hidden
    while it is graded (``metadata.grader.hide_modules``)."""
    patterns = []
    for m in methods:
        try:
            patterns.append(re.compile(m, re.IGNORECASE))
        except re.error:
            continue
    forbidden = sorted({str(f).split("::")[-1].split(".")[0] if "::" in str(f) else str(f).split(".")[-1]
                        for f in forbid})
    bound: dict[str, str] = {}
    trees = []
    for source in context:
        tree = _parse(source)
        if tree is not None:
            _bind_imports(tree, bound)
    for where, source in cells:
        tree = _parse(source)
        if tree is not None:
            _bind_imports(tree, bound)
            trees.append((where, tree))
    out: list[Flag] = []
    for where, tree in trees:
        _Scanner(dict(bound), patterns, forbidden, where, out, hidden=tuple(map(str, hidden))).visit(tree)
    return list(dict.fromkeys(out))


def as_metadata(flags) -> list[dict]:
    return [asdict(f) for f in flags]


def notebook_flags(source_cells, answers: dict, added: dict, grader_meta: dict) -> list[Flag]:
    """The flags of a rebuilt submission (:class:`grader.rebuild.RebuildFromSource`): the student's
    answers (``grade_id`` -> source) and the code cells they added (anchor ``grade_id`` or None ->
    cells), read after the instructor's set-up cells (``source_cells``, whose imports bind names);
    the exercise's ``metadata.grader`` gives the methods, forbid entries and hidden modules. Code
    that cannot be read (nested too deeply for the parser) is itself a flag."""
    from .collect import quote

    context, cells = [], []
    for cell in source_cells:
        nbg = cell.get("metadata", {}).get("nbgrader", {}) or {}
        if cell.get("cell_type") != "code":
            continue
        if nbg.get("solution"):
            if answers.get(nbg.get("grade_id")):
                cells.append((f"answer cell {quote(nbg['grade_id'])}", answers[nbg["grade_id"]]))
        elif not nbg.get("grade") and "reference" not in cell.get("metadata", {}).get("tags", []):
            context.append(cell.get("source", ""))
    for anchor, extra in added.items():
        where = f"a cell you added after {quote(anchor)}" if anchor else "a cell you added at the top"
        cells += [(where, c.source) for c in extra if c.get("cell_type") == "code"]
    meta = grader_meta if isinstance(grader_meta, dict) else {}
    try:
        return scan(cells, context, meta.get("methods", []), meta.get("forbid", []), meta.get("hide_modules", []))
    except (RecursionError, MemoryError) as e:
        return [Flag("your code", 0, type(e).__name__, "it could not be read through for such routes")]
