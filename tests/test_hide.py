"""Which modules the grader hides from a student (``exercises/grader/hide.py``; issue 13, item 2).

An exercise's metadata names the methods the student writes (``metadata.grader.methods``,
patterns for function and class names); the grader audits the whole course venv for
definitions of them and hides every library that has one (``pytorch_grad_cam``'s
``GuidedBackpropReLUModel`` for exercise 03, not only the hand-listed ``captum``), except the
core libraries every notebook needs. Checked here: the lists found for the four exercises, the
audit on a made-up venv (so it is a scan, not a hand list), and in a real sandbox that the
modules found are gone while everything the exercises' set-up cells import still works.

The sandbox test needs the grader venv (``make grader-setup``) and bubblewrap: without them it
is skipped, except under CI (``CI`` set), where that is a failure.
"""
from __future__ import annotations

import ast
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
EXERCISES = ROOT / "exercises"
sys.path.insert(0, str(EXERCISES))
from grader import hide  # noqa: E402

COURSE_PYTHON = str(ROOT / ".venv" / "bin" / "python")
GRADER_PYTHON = EXERCISES / ".venv-grader" / "bin" / "python"
ASSIGNMENTS = sorted(p.name for p in (EXERCISES / "source").iterdir() if (p / f"{p.name}.ipynb").exists())

# what each exercise's audit must hide: the libraries known to implement its methods
MUST_HIDE = {
    "ex01_filters": {"course_lib.weights", "course_lib.neighbors", "sklearn"},     # NearestNeighbors
    "ex02_occlusion": {"course_lib.patches", "course_lib.occlusion", "captum"},    # captum.attr.Occlusion
    "ex03_saliency": {"course_lib.saliency", "captum", "pytorch_grad_cam"},        # GuidedBackpropReLUModel
    "ex04_cam": {"course_lib.cam", "captum", "pytorch_grad_cam"},                  # LayerGradCam, GradCAM
    "ex05_adversarial": {"course_lib.adversarial", "course_lib.optimize", "torchattacks", "captum"},  # FGSM, PGD
    "ex06_gram": {"course_lib.style"},                                             # gram_matrix, style_loss
    "ex07_style": {"course_lib.style", "course_lib.optimize"},                      # content_loss, total_variation
    "ex08_fast_style": {"course_lib.fast_style"},                                  # ResidualBlock, UpsampleConv
}
MUST_HIT = {"ex01_filters": ("sklearn", "NearestNeighbors"), "ex02_occlusion": ("captum", "Occlusion"),
            "ex03_saliency": ("pytorch_grad_cam", "GuidedBackpropReLUModel"),
            "ex04_cam": ("pytorch_grad_cam", "GradCAM"), "ex05_adversarial": ("torchattacks", "FGSM"),
            "ex06_gram": ("course_lib.style", "gram_matrix"), "ex07_style": ("course_lib.optimize", "total_variation"),
            "ex08_fast_style": ("course_lib.fast_style", "ResidualBlock")}


def _notebook(assignment: str) -> dict:
    return json.loads((EXERCISES / "source" / assignment / f"{assignment}.ipynb").read_text(encoding="utf-8"))


def _setup_imports(nb: dict) -> set[str]:
    """Modules the cells that run in the student's sandbox import (not tests, answers or `reference` cells)."""
    out = set()
    for c in nb["cells"]:
        m = c.get("metadata", {})
        if c["cell_type"] != "code" or m.get("nbgrader", {}).get("grade") or m.get("nbgrader", {}).get("solution") \
                or "reference" in m.get("tags", []):
            continue
        for node in ast.walk(ast.parse("".join(c["source"]))):
            if isinstance(node, ast.Import):
                out.update(a.name for a in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                out.add(node.module)
    return out


def _under(module: str, hidden) -> str | None:
    return next((h for h in hidden if module == h or module.startswith(h + ".")), None)


@pytest.fixture(scope="module")
def audits(tmp_path_factory):
    """A fresh audit of the course venv for every exercise (an empty cache: one scan for all four)."""
    os.environ["XDG_CACHE_HOME"] = str(tmp_path_factory.mktemp("cache"))
    hide.forget()
    try:
        start = time.perf_counter()
        out = {a: hide.audit(COURSE_PYTHON, _notebook(a)["metadata"]["grader"]["methods"]) for a in ASSIGNMENTS}
        assert not any(a.cached for a in out.values())
        print(f"audits of {len(out)} exercises: {time.perf_counter() - start:.1f} s")
        return out
    finally:
        os.environ.pop("XDG_CACHE_HOME")


# --------------------------------------------------------------------------- the course's exercises

def test_every_exercise_names_its_methods():
    for a in ASSIGNMENTS:
        meta = _notebook(a)["metadata"]["grader"]
        assert meta.get("methods"), f"{a}: metadata.grader.methods is empty"
        hide.audit_index(hide._Index([], {}, 0.0), meta["methods"])   # valid regular expressions


@pytest.mark.parametrize("assignment", ASSIGNMENTS)
def test_audit_hides_the_known_implementations(audits, assignment):
    a = audits[assignment]
    nb = _notebook(assignment)
    explicit = nb["metadata"]["grader"].get("hide_modules", [])
    print(f"{assignment}: hidden {a.hidden}; allowed {a.allowed}")
    assert MUST_HIDE[assignment] <= set(a.hidden), f"{assignment}: {MUST_HIDE[assignment] - set(a.hidden)} not hidden"
    unit, name = MUST_HIT[assignment]
    assert any(h.split("  ")[0].endswith("." + name) for h in a.hits[unit]), a.hits[unit]
    # nothing the notebook needs is hidden: core libraries, what their import loads, the set-up cells' imports
    hidden = list(dict.fromkeys(explicit + a.hidden))
    for core in list(hide.CORE) + ["course_lib.models", "course_lib.layers", "course_lib.imaging", "course_lib.figures",
                                   "course_lib.data", "course_lib.grading"]:
        assert core not in hidden, f"{assignment}: {core} would be hidden"
    for m in _setup_imports(nb) | set(hide.BASE_IMPORTS):
        assert _under(m, hidden) is None, f"{assignment}: the set-up imports {m}, which {_under(m, hidden)} hides"
    for unit, why in a.allowed.items():
        assert why and (unit.split(".")[0] in hide.CORE or "loaded by" in why), (unit, why)
    assert not a.base_errors, f"imports every graded notebook needs fail in the course venv: {a.base_errors}"


def test_whole_venv_scan_is_fast():
    """The scan reads every .py/.pyi file of the venv (torch included): a few seconds."""
    where = hide.import_roots(COURSE_PYTHON)
    assert any(r.endswith("site-packages") for r in where["roots"]), where
    assert "course_lib" in where["mapped"], where          # the editable install is found too
    index = hide.scan(where["roots"], where["mapped"])
    print(f"scan: {len(index.files)} files with definitions, {len(index.names)} names, {index.seconds:.1f} s")
    assert len(index.files) > 5000 and "GuidedBackpropReLUModel" in index.names
    assert index.seconds < 30


# --------------------------------------------------------------------------- the audit itself, on a made-up venv

FAKE = {
    # a library nobody listed: hidden as a whole
    "xaikit/__init__.py": "",
    "xaikit/methods/backprop.py": "class GuidedBackprop:\n    def attribute(self, x):\n        return x\n",
    # a module of its own
    "onefile.py": "def guided_relu_hook(module, grad_in, grad_out):\n    return grad_in\n",
    # below a namespace package (no __init__): its first regular package
    "vendorns/attr/__init__.py": "async def vanilla_saliency(model, x):\n    pass\n",
    # only a docstring, a comment and a test: no implementation
    "decoy/__init__.py": '"""Example::\n\n    def guided_backprop(model, x):\n        ...\n"""\n'
                         "# the class GuidedBackprop of xaikit does it\n",
    "decoy/tests/test_gb.py": "def guided_backprop():\n    pass\n",
    # a file this Python cannot parse: its def lines count
    "oldlib.py": 'print "old"\ndef guided_backprop(m, x):\n    pass\n',
    # a core library: reported, not hidden
    "torch/__init__.py": "def saliency_of(x):\n    return x\n",
}
FAKE_METHODS = ["saliency", "guided.?back.?prop", "guided.?relu"]


def test_audit_finds_a_library_nobody_listed(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(tmp_path / "venv")], check=True)
    python = str(tmp_path / "venv" / "bin" / "python")
    site = Path(subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                               capture_output=True, text=True, check=True).stdout.strip())
    for rel, text in FAKE.items():
        (site / rel).parent.mkdir(parents=True, exist_ok=True)
        (site / rel).write_text(text)

    a = hide.audit(python, FAKE_METHODS)
    assert a.hidden == ["oldlib", "onefile", "vendorns.attr", "xaikit"], a.hits
    assert a.hits["xaikit"] == ["xaikit.methods.backprop.GuidedBackprop  (guided.?back.?prop)"]
    assert set(a.allowed) == {"torch"} and a.hits["torch"] == ["torch.saliency_of  (saliency)"]
    assert not a.cached and a.base_errors      # numpy, course_lib ... are not in that venv

    # the sandbox can find every module to hide (by importlib.util.find_spec in that Python)
    from grader import sandbox
    info = sandbox.python_info(python, tuple(a.hidden))
    assert info.modules == {"oldlib": str((site / "oldlib.py").resolve()),
                            "onefile": str((site / "onefile.py").resolve()),
                            "vendorns.attr": str((site / "vendorns" / "attr").resolve()),
                            "xaikit": str((site / "xaikit").resolve())}

    # cached on disk; a library installed later is found (the cache is keyed by the folders' mtimes)
    assert hide.audit(python, FAKE_METHODS).cached
    hide.forget()
    again = hide.audit(python, FAKE_METHODS)
    assert again.cached and again.hidden == a.hidden
    (site / "late_gradcam").mkdir()
    (site / "late_gradcam" / "__init__.py").write_text("class GuidedBackpropModel:\n    pass\n")
    later = hide.audit(python, FAKE_METHODS)
    assert not later.cached and later.hidden == ["late_gradcam", "oldlib", "onefile", "vendorns.attr", "xaikit"]
    assert hide.audit(python, []).hidden == []
    with pytest.raises(hide.ScanError, match="not a valid regular expression"):
        hide.audit(python, ["guided("])


# --------------------------------------------------------------------------- in a real sandbox

_IN_GRADER_VENV = r"""
import json, subprocess, sys
sys.path.insert(0, sys.argv[1])
from grader import hide, sandbox
course_python, jobs = sys.argv[2], json.loads(sys.argv[3])
hidden = []
for job in jobs:
    hidden += job["explicit"] + hide.implementations(course_python, job["methods"])
hidden = tuple(hide.outermost(hidden))    # (ex01 hides scipy, ex05 scipy.ndimage: inside it, gone already)
info = sandbox.python_info(course_python, hidden)
snippet = '''
import importlib, json, sys
out = {}
for name in json.loads(sys.argv[1]):
    try:
        importlib.import_module(name)
        out[name] = None
    except BaseException as e:
        out[name] = f"{type(e).__name__}: {e}"
print(json.dumps(out))
'''
names = sorted(set(sys.argv[4:]) | {h for h in hidden if info.modules.get(h)})
proc = subprocess.run(sandbox.bwrap_argv(info, ["-c", snippet, json.dumps(names)], sandbox.Limits(), hidden),
                      capture_output=True, text=True, timeout=300)
print(json.dumps({"hidden": hidden, "unresolved": [h for h in hidden if not info.modules.get(h)],
                  "rc": proc.returncode, "stderr": proc.stderr[-3000:],
                  "imports": json.loads(proc.stdout.strip().splitlines()[-1]) if proc.returncode == 0 else None}))
"""


def test_sandbox_hides_what_the_audit_found_and_keeps_what_the_notebooks_need():
    why = None if GRADER_PYTHON.exists() else "the grader venv is missing (run `make grader-setup`)"
    if why is None and shutil.which("bwrap") is None:
        why = "bubblewrap is not installed (run `make grader-setup` as root, or `apt-get install bubblewrap`)"
    if why:
        (pytest.fail if os.environ.get("CI") else pytest.skip)(why)
    jobs, needed = [], set(hide.BASE_IMPORTS) | {"torch", "torchvision", "matplotlib", "course_lib.models",
                                                   "course_lib.imaging"}
    for a in ASSIGNMENTS:
        meta = _notebook(a)["metadata"]["grader"]
        jobs.append({"explicit": meta.get("hide_modules", []), "methods": meta["methods"]})
        needed |= _setup_imports(_notebook(a))
    env = dict(os.environ)
    env.pop("PYTHONPATH", None)
    proc = subprocess.run([str(GRADER_PYTHON), "-c", _IN_GRADER_VENV, str(EXERCISES), COURSE_PYTHON, json.dumps(jobs),
                           *sorted(needed), "pytorch_grad_cam.guided_backprop", "sklearn.neighbors", "captum.attr"],
                          capture_output=True, text=True, env=env, cwd=EXERCISES, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    r = json.loads(proc.stdout.strip().splitlines()[-1])
    assert r["rc"] == 0 and r["imports"] is not None, r["stderr"]
    assert not r["unresolved"], f"hidden modules the sandbox cannot find: {r['unresolved']}"
    assert {"pytorch_grad_cam", "captum", "sklearn"} <= set(r["hidden"])
    broken = {m: e for m, e in r["imports"].items() if m in needed and e}
    assert not broken, f"hiding {r['hidden']} breaks imports the exercises need: {broken}"
    for m in set(r["hidden"]) | {"pytorch_grad_cam.guided_backprop", "sklearn.neighbors", "captum.attr"}:
        e = r["imports"][m]
        assert e and e.startswith("ImportError") and "is not available while this exercise is graded" in e, (m, e)


# --------------------------------------------------------------------------- forbid: stubs by operator and by object

_FORBID_PROBE = r'''
import io, json, sys
sys.path.insert(0, sys.argv[1])
ex05, ex08 = json.loads(sys.argv[2]), json.loads(sys.argv[3])
for name in ("numpy", "torch", "matplotlib.pyplot", "course_lib.models", "course_lib.layers", "course_lib.imaging",
             "course_lib.figures"):      # the student process's preloads
    __import__(name)
from grader import protocol
from grader.forbid import forbid
from course_lib.grading import state
out = {"dry": forbid(ex08, apply=False), "routes": {}}
assert "torchvision" not in sys.modules, "ex08's entries import torchvision"   # (tested below: it imports)

def attempt(label, f):
    try:
        f()
        out["routes"][label] = "ran"
    except NotImplementedError as e:
        out["routes"][label] = "stubbed: " + str(e)
    except BaseException as e:
        out["routes"][label] = f"{type(e).__name__}: {e}"

import torch, torch.nn.functional as F
x = torch.randn(2, 3, 7, 5)
IN = (x, None, None, None, None, True, 0.1, 1e-5, False)
forbid(ex08)
attempt("F.instance_norm", lambda: F.instance_norm(x))
attempt("torch.instance_norm", lambda: torch.instance_norm(*IN))
attempt("torch._C._VariableFunctions.instance_norm", lambda: torch._C._VariableFunctions.instance_norm(*IN))
attempt("torch._VF.instance_norm", lambda: torch._VF.instance_norm(*IN))
attempt("torch.ops.aten.instance_norm", lambda: torch.ops.aten.instance_norm(*IN))
attempt("torch._ops.ops.aten.instance_norm.default", lambda: torch._ops.ops.aten.instance_norm.default(*IN))
attempt("torch._C._jit_get_operation", lambda: torch._C._jit_get_operation("aten::instance_norm")[0](*IN))
attempt("nn.InstanceNorm2d", lambda: torch.nn.InstanceNorm2d(3)(x))
attempt("F.batch_norm", lambda: F.batch_norm(x, None, None, training=True))
attempt("torch.native_batch_norm", lambda: torch.native_batch_norm(x, None, None, None, None, True, 0.1, 1e-5))
attempt("aten.native_batch_norm.out", lambda: torch.ops.aten.native_batch_norm.out(
    x, None, None, None, None, True, 0.1, 1e-5, out=torch.empty(0), save_mean=torch.empty(0), save_invstd=torch.empty(0)))
attempt("aten._native_batch_norm_legit.no_stats", lambda: torch.ops.aten._native_batch_norm_legit.no_stats(
    x, None, None, True, 0.1, 1e-5))
attempt("nn.GroupNorm", lambda: torch.nn.GroupNorm(3, 3)(x))
attempt("F.layer_norm", lambda: F.layer_norm(x, (7, 5)))
attempt("F.rms_norm", lambda: F.rms_norm(x, (7, 5)))
attempt("vmap(F.instance_norm)", lambda: torch.func.vmap(lambda t: F.instance_norm(t[None]))(x))
attempt("torch._decomp...native_batch_norm", lambda: torch._decomp.decompositions.native_batch_norm(
    x, None, None, None, None, True, 0.1, 1e-5))
attempt("torch._refs._normalize", lambda: torch._refs._normalize(x, [2, 3], 1e-5))
# honest work, and what the grader itself does in this process
attempt("honest instance norm", lambda: (x - x.mean((2, 3), keepdim=True)) / torch.sqrt(
    x.var((2, 3), keepdim=True, unbiased=False) + 1e-5))
attempt("conv, pad, interpolate, norm", lambda: (torch.nn.Conv2d(3, 3, 3)(F.pad(x, (1, 1, 1, 1), mode="reflect")),
                                                 F.interpolate(x, size=(9, 9)), x.norm(dim=1), F.normalize(x)))
attempt("import torchvision", lambda: __import__("torchvision.transforms.v2"))
attempt("import torch._dynamo", lambda: __import__("torch._dynamo"))
attempt("answer encoding", lambda: protocol.dumps({"value": protocol.encode_value((x, x.numpy()))}))
attempt("torch.save", lambda: torch.save({"x": x}, io.BytesIO()))
attempt("state", lambda: state((x, torch.nn.Conv2d(3, 3, 3)), {}))
out["dry"].update(forbid(ex05, apply=False))
forbid(ex05)
import torchvision.transforms as T, torchvision.transforms.functional as TF, torchvision.transforms.v2 as T2
import PIL.ImageFilter
attempt("v1 gaussian_blur", lambda: TF.gaussian_blur(x, [5, 5], [1.0, 1.0]))
attempt("v1 GaussianBlur", lambda: T.GaussianBlur(5, 1.0)(x))
attempt("v2 gaussian_blur", lambda: T2.functional.gaussian_blur(x, [5, 5], [1.0, 1.0]))
attempt("v2 _misc.gaussian_blur", lambda: __import__("torchvision.transforms.v2.functional._misc",
                                                     fromlist=["_"]).gaussian_blur(x, [5, 5], [1.0, 1.0]))
attempt("v2 gaussian_blur_image", lambda: T2.functional.gaussian_blur_image(x, [5, 5], [1.0, 1.0]))
attempt("v2 GaussianBlur", lambda: T2.GaussianBlur(5, 1.0)(x))
attempt("_get_gaussian_kernel2d", lambda: __import__("torchvision.transforms._functional_tensor", fromlist=["_"])
        ._get_gaussian_kernel2d([5, 5], [1.0, 1.0], torch.float32, x.device))
attempt("PIL GaussianBlur", lambda: PIL.ImageFilter.GaussianBlur(2))
attempt("v2 gaussian_noise", lambda: T2.functional.gaussian_noise(x))
attempt("torchvision resize", lambda: T2.functional.resize(x, [4, 4]))
print("@@" + json.dumps(out))
'''
HONEST = {"honest instance norm", "conv, pad, interpolate, norm", "import torchvision", "import torch._dynamo",
          "answer encoding", "torch.save", "state", "v2 gaussian_noise", "torchvision resize"}


def test_forbid_stubs_every_route_and_nothing_else():
    """Issue 27, class 3: ex08's and ex05's ``forbid`` entries, applied as the student process does, stop
    every route the red team used (and more), by operator in torch's dispatcher and by function object;
    what honest work and the grader need in that process still works, ``import torchvision`` (which
    imports ``torch._dynamo``) included; each entry names something (a dry run, as ``python -m
    grader.hide`` reports it)."""
    meta = {a: _notebook(a)["metadata"]["grader"] for a in ("ex05_adversarial", "ex08_fast_style")}
    assert all(":: " not in e and e.startswith("aten::") for e in meta["ex08_fast_style"]["forbid"][:5])
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONDONTWRITEBYTECODE="1")
    env.pop("PYTHONPATH", None)
    start = time.perf_counter()
    proc = subprocess.run([COURSE_PYTHON, "-c", _FORBID_PROBE, str(EXERCISES),
                           json.dumps(meta["ex05_adversarial"]["forbid"]), json.dumps(meta["ex08_fast_style"]["forbid"])],
                          capture_output=True, text=True, env=env, cwd="/", timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.rsplit("@@", 1)[1])
    print(f"probe: {time.perf_counter() - start:.1f} s")
    assert all(out["dry"].values()) and len(out["dry"]) == sum(len(m["forbid"]) for m in meta.values()), out["dry"]
    assert any(s.startswith("aten::instance_norm (CompositeImplicitAutograd") for s in out["dry"]["aten::*instance_norm*"])
    for label, result in out["routes"].items():
        if label in HONEST:
            assert result == "ran", (label, result)
        else:
            assert result.startswith("stubbed: ") and "is not available while this exercise is graded" in result, \
                (label, result)


def test_forbid_stubs_a_function_object_under_every_name():
    """A function stubbed as an object raises under any name bound to it (its closure cells kept); a
    callable that is not a Python function or class (a builtin) is replaced wherever a loaded module
    binds it."""
    import functools
    import types

    sys.path.insert(0, str(EXERCISES))
    from grader.forbid import forbid

    def make(k):
        def add(x):
            return x + k
        return add

    mod = types.ModuleType("c3_fake_lib")
    opaque = functools.partial(max, 0)       # (one of its own: stubbing `len` would stub it in this process)
    mod.add, mod.plain, mod.builtin = make(1), (lambda x: x), opaque
    alias = types.ModuleType("c3_fake_alias")
    alias.same, alias.builtin = mod.add, opaque
    sys.modules.update({"c3_fake_lib": mod, "c3_fake_alias": alias})
    try:
        report = forbid(["c3_fake_lib.add", "c3_fake_lib.pla*", "c3_fake_lib.builtin", "c3_fake_lib.nothing"])
        assert report == {"c3_fake_lib.add": ["c3_fake_lib.add (function)"],
                          "c3_fake_lib.pla*": ["c3_fake_lib.plain (function)"],
                          "c3_fake_lib.builtin": ["c3_fake_lib.builtin (every module attribute bound to it)"],
                          "c3_fake_lib.nothing": []}
        for f in (mod.add, alias.same, mod.plain, mod.builtin, alias.builtin):
            with pytest.raises(NotImplementedError, match="is not available while this exercise is graded"):
                f(1)
        assert opaque(1) == 1                    # the object itself is left as it was
    finally:
        for name in ("c3_fake_lib", "c3_fake_alias"):
            sys.modules.pop(name, None)


# --------------------------------------------------------------------------- suspicious routes, flagged

sys.path.insert(0, str(EXERCISES))
from grader import routes  # noqa: E402
from grader.collect import quote  # noqa: E402

_SETUP = "import math\nimport torch\nimport torch.nn.functional as F\nfrom torch import nn\n"
_M08 = _notebook("ex08_fast_style")["metadata"]["grader"]
_M05 = _notebook("ex05_adversarial")["metadata"]["grader"]
#: (code, exercise metadata, routes that must be flagged: substrings of the flags' code)
ROUTE_SAMPLES = {
    "vf": ("def instance_norm(x):\n    return torch._C._VariableFunctions.instance_norm(x, None, None, None, None, "
           "True, 0.0, 1e-5, False)", _M08, ["torch._C._VariableFunctions.instance_norm"]),
    "ops": ("y = torch.ops.aten.instance_norm(x)\nimport torch._ops as o\nz = o.ops.aten.batch_norm(x)",
            _M08, ["torch.ops.aten.instance_norm", "torch._ops"]),
    "jit": ("op = torch._C._jit_get_operation('aten::instance_norm')", _M08,
            ["torch._C._jit_get_operation", "aten::instance_norm"]),
    "names": ("h = F.instance_norm\ng = nn.InstanceNorm2d\nk = getattr(F, 'batch_norm')\nfrom torch import _VF",
              _M08, ["torch.nn.functional.instance_norm", "torch.nn.InstanceNorm2d", "torch.nn.functional.batch_norm",
                     "torch._VF"]),
    "alias": ("T = torch\nC = T._C\nf = C._VariableFunctions.instance_norm\nlib = torch.library.Library('aten', 'IMPL')",
              _M08, ["torch._C", "torch.library"]),
    "misc": ("from torchvision.transforms.v2.functional._misc import gaussian_blur as gb\n"
             "import scipy.ndimage as nd\ny = nd.gaussian_filter1d(x, 1.0)", _M05,
             ["torchvision.transforms.v2.functional._misc.gaussian_blur", "scipy.ndimage.gaussian_filter1d"]),
    "frames": ("import sys, inspect, gc, ctypes\nfr = sys._getframe(1).f_back\ng = fr.f_globals\n"
               "inspect.currentframe()\ngc.get_referrers(g)\nsys.modules['__main__']", _M05,
               ["sys._getframe", "f_back", "f_globals", "inspect.currentframe", "gc.get_referrers", "ctypes",
                "sys.modules"]),
    "computed": ("import importlib\nm = importlib.import_module('tor' + 'ch')\nn = __import__(name)\n"
                 "v = getattr(torch, 'inst' + 'ance_norm')\nexec(code)\nexec('torch._VF.instance_norm(x)')",
                 _M08, ["importlib.import_module", "__import__", "getattr(torch, ...)", "exec", "torch._VF"]),
    "grader": ("import grader.student\nfrom grader import protocol\nimport __main__", _M05,
               ["grader.student", "grader.protocol", "__main__"]),
    "programs": ("%time y = F.instance_norm(x)\n!python -c 'print(1)'\nimport subprocess\nos.system('ls')", _M08,
                 ["torch.nn.functional.instance_norm", "!python", "subprocess"]),
    "patch": ("F.instance_norm = lambda x: x\nfn.__code__ = other.__code__", _M08,
              ["torch.nn.functional.instance_norm", "__code__"]),
}


@pytest.mark.parametrize("sample", sorted(ROUTE_SAMPLES))
def test_routes_flags_the_bypasses(sample):
    code, meta, expected = ROUTE_SAMPLES[sample]
    flags = routes.scan([(f"answer cell {quote(sample)}", code)], [_SETUP], meta["methods"], meta.get("forbid", []),
                        meta.get("hide_modules", []))
    found = [f.code for f in flags]
    for route in expected:
        assert any(route in c for c in found), (route, [f.text(quote) for f in flags])
    for f in flags:
        assert f.cell == f"answer cell `{sample}`" and f.line >= 1 and f.why


def test_routes_flags_nothing_in_the_reference_solutions():
    """The honest reference answers of every exercise (read after their set-up cells) raise no flag,
    nor do ordinary imports (torchvision, numpy) and the student's own functions of the same names."""
    import nbformat

    for a in ASSIGNMENTS:
        nb = nbformat.read(EXERCISES / "source" / a / f"{a}.ipynb", as_version=4)
        answers = {c.metadata["nbgrader"]["grade_id"]: c.source for c in nb.cells
                   if c.metadata.get("nbgrader", {}).get("solution")}
        answers[next(iter(answers))] = "import torchvision\nimport numpy as np\n" + answers[next(iter(answers))]
        flags = routes.notebook_flags(nb.cells, answers, {None: []}, nb.metadata["grader"])
        assert flags == [], (a, [f.text(quote) for f in flags])
        assert len(answers) >= 2
