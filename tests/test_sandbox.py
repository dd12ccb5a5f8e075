"""The grading sandbox (exercises/grader/sandbox.py), probed from inside (issue 13, items 3 and 5).

Each test starts sandboxes as the grading driver does: the command line is built by the
grader venv's Python (which has pyseccomp, for the seccomp filter), it runs the course's
Python with a short script, from a caller whose environment holds a secret. As root the
command is wrapped in the sandbox's cgroup like the driver does, but none of the bounds
checked here comes from it: the writes stop at the file systems' sizes, far below the cgroup's
memory cap, and the shared memory is refused outright.

Needs the grader venv (``make grader-setup``) and bubblewrap; skipped without them, except
under CI (``CI`` set), where that is a failure.
"""
from __future__ import annotations

import itertools
import json
import os
import platform
import shutil
import subprocess
import sys
from functools import lru_cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
EXERCISES = ROOT / "exercises"
GRADER_PY = EXERCISES / ".venv-grader" / "bin" / "python"
COURSE_PY = ROOT / ".venv" / "bin" / "python"
SECRET = "INSTRUCTOR_SECRET"
SECRET_VALUE = "s3cret-do-not-show-7f2c"
HIDDEN = ("course_lib.cam", "captum")   # a module file and a package folder, as an exercise hides them
MiB = 1 << 20

sys.path.insert(0, str(EXERCISES))
from grader import sandbox  # noqa: E402  (stdlib only at import: pyseccomp is needed only to build commands)

DEFAULTS = sandbox.Limits()


def _missing() -> str | None:
    if not GRADER_PY.exists():
        return "the grader venv is missing (run `make grader-setup`)"
    if shutil.which("bwrap") is None:
        return "bubblewrap is not installed (run `make grader-setup` as root, or `apt-get install bubblewrap`)"
    return None


@pytest.fixture(scope="module", autouse=True)
def grader_ready():
    why = _missing()
    if why:
        (pytest.fail if os.environ.get("CI") else pytest.skip)(why)


_BUILD = r"""
import json, sys
sys.path.insert(0, sys.argv[1])
from grader import sandbox
a = json.loads(sys.argv[2])
info = sandbox.python_info(a["python"], tuple(a["hidden"]))
print(json.dumps({"argv": sandbox.bwrap_argv(info, [], sandbox.Limits(), tuple(a["hidden"])),
                  "modules": info.modules}))
"""


@lru_cache(maxsize=None)
def _command(hidden: tuple[str, ...]) -> tuple[tuple[str, ...], dict]:
    """The sandbox's command line (ending with the course's Python, no arguments yet), from the grader venv."""
    env = dict(os.environ)
    env.pop("PYTHONPATH", None)
    python = str(COURSE_PY if COURSE_PY.exists() else Path(sys.executable))
    proc = subprocess.run([str(GRADER_PY), "-c", _BUILD, str(EXERCISES), json.dumps({"python": python,
                                                                                      "hidden": hidden})],
                          capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0, f"building the sandbox's command failed:\n{proc.stderr[-3000:]}"
    out = json.loads(proc.stdout)
    return tuple(out["argv"]), out["modules"]


def run_sandboxed(code: str, hidden: tuple[str, ...] = (), pass_fds: tuple[int, ...] = (),
                  timeout: int = 60) -> dict:
    """Run ``code`` in a sandbox (from a caller whose environment holds a secret); its last line of output, JSON."""
    argv, _ = _command(hidden)
    group = sandbox.Cgroup(DEFAULTS)   # (as root: like the driver; otherwise nothing)
    try:
        proc = subprocess.run(group.wrap(list(argv) + ["-c", code]), capture_output=True, text=True,
                              timeout=timeout, pass_fds=pass_fds, env=dict(os.environ, **{SECRET: SECRET_VALUE}))
    finally:
        group.remove()
    assert proc.returncode == 0, f"the sandboxed script failed ({proc.returncode}):\n{proc.stderr[-3000:]}"
    return json.loads(proc.stdout.strip().splitlines()[-1])


# --------------------------------------------------------------------------- item 3: the environment

ENVIRON = r"""
import glob, json, os
procs = {}
for p in glob.glob("/proc/[0-9]*/environ"):
    try:
        procs[p] = open(p, "rb").read().decode("utf-8", "replace")
    except OSError as e:
        procs[p] = None
print(json.dumps({"environ": dict(os.environ), "procs": procs}))
"""


def test_no_variable_of_the_caller_reaches_the_sandbox():
    """PID 1 (bwrap's init) and every other process inside start from the sandbox's explicit environment."""
    out = run_sandboxed(ENVIRON)
    assert SECRET not in out["environ"] and SECRET_VALUE not in json.dumps(out["environ"])
    assert out["procs"].get("/proc/1/environ") is not None, f"PID 1's environment was not readable: {out['procs']}"
    given = set(out["environ"])
    for path, text in out["procs"].items():
        if text is None:
            continue
        assert SECRET not in text and SECRET_VALUE not in text, f"{path} holds the caller's secret"
        names = {v.split("=", 1)[0] for v in text.split("\0") if v}
        assert names <= given | {"PWD"}, f"{path} has variables the sandbox was not given: {names - given}"
    assert {"PATH", "HOME", "PYTHONPATH", "MPLBACKEND"} <= given
    argv = _command(())[0]
    assert os.path.basename(argv[0]) == "env" and argv[1] == "-i"   # the chain starts from that environment only
    listed = {a.split("=", 1)[0] for a in itertools.takewhile(lambda a: "=" in a, argv[2:])}
    assert given - {"PWD"} == listed, "the sandbox's environment is not the one its command line lists"


# --------------------------------------------------------------------------- item 5: memory-backed disks

FILL = r"""
import errno, json, os, sys
places, cap, chunk = json.loads(sys.argv[1]), 320 << 20, b"\0" * (1 << 20)
out = {}
for d in places:
    written, err, paths = 0, None, []
    try:
        while written < cap and err is None:     # files of 16 MiB: below RLIMIT_FSIZE, so the file system stops it
            path = os.path.join(d, f"fill{len(paths)}.bin")
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            paths.append(path)
            try:
                for _ in range(16):
                    os.write(fd, chunk)
                    written += len(chunk)
            finally:
                os.close(fd)
    except OSError as e:
        err = errno.errorcode.get(e.errno, str(e.errno))
    chmod = None
    try:
        os.chmod(d, 0o1777 if d.startswith(("/tmp", "/dev/shm")) else 0o755)
    except OSError as e:
        chmod = errno.errorcode.get(e.errno, str(e.errno))
    for path in paths:
        try:
            os.unlink(path)
        except OSError:
            pass
    out[d] = {"mib": written >> 20, "error": err, "chmod": chmod}
print(json.dumps(out))
"""


def test_every_writable_place_is_bounded():
    """/tmp and /dev/shm fill up at their sizes; /, /dev, /etc, the made folders, the hiding folders are read-only."""
    _, modules = _command(HIDDEN)
    python_dir = os.path.dirname(os.path.dirname(os.path.realpath(str(COURSE_PY if COURSE_PY.exists()
                                                                      else sys.executable))))
    places = ["/tmp", "/dev/shm", "/", "/dev", "/etc", os.path.dirname(python_dir)]
    if modules.get("captum") and os.path.isdir(modules["captum"]):
        places.append(modules["captum"])   # a package folder replaced by a (read-only) tmpfs
    out = run_sandboxed(f"import sys; sys.argv[1:] = [{json.dumps(json.dumps(places))}]\n" + FILL, HIDDEN)
    print(json.dumps(out, indent=1))
    assert out["/tmp"]["error"] == "ENOSPC" and out["/tmp"]["mib"] <= DEFAULTS.tmp_size // MiB
    assert out["/tmp"]["mib"] >= DEFAULTS.tmp_size // MiB - 16          # (and it is usable up to its size)
    assert out["/dev/shm"]["error"] == "ENOSPC" and out["/dev/shm"]["mib"] <= DEFAULTS.shm_size // MiB
    for d in places[2:]:
        assert out[d]["mib"] == 0 and out[d]["error"] in ("EROFS", "EACCES", "EPERM"), (d, out[d])
        assert out[d]["chmod"] in ("EROFS", "EACCES", "EPERM"), (d, out[d])   # no chmod-ing one open either


SHARED = r"""
import ctypes, errno, json, mmap, os, platform, subprocess, sys
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
out = {}
def call(name, f, *args):
    ctypes.set_errno(0)
    r = f(*args)
    out[name] = errno.errorcode.get(ctypes.get_errno(), "?") if r == -1 else f"returned {r}"
call("shmget 1 GiB", libc.shmget, 0, ctypes.c_size_t(1 << 30), 0o1600)
call("shmat", libc.shmat, 0, None, 0)
call("msgget", libc.msgget, 0, 0o1600)
call("semget", libc.semget, 0, 16, 0o1600)
call("memfd_create", libc.memfd_create, b"hoard", 0)
call("memfd_secret", libc.syscall, 447, 0)      # (the same number on x86_64 and aarch64)
def mapping(name, *args, **kw):
    try:
        mmap.mmap(*args, **kw).close()
        out[name] = "mapped"
    except OSError as e:
        out[name] = errno.errorcode.get(e.errno, str(e.errno))
mapping("mmap shared anonymous 1 GiB", -1, 1 << 30)
mapping("mmap shared anonymous, validate", -1, 1 << 20, flags=mmap.MAP_SHARED | 0x02 | mmap.MAP_ANONYMOUS)
mapping("mmap private anonymous", -1, 1 << 20, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
fd = os.open("/dev/zero", os.O_RDWR)
mapping("mmap shared /dev/zero", fd, 1 << 20)
out["read /dev/zero"] = os.read(fd, 8).hex()
if platform.machine() == "x86_64":   # the x32 ABI's shmget: killed (another ABI), not run
    code = "import ctypes; l = ctypes.CDLL(None); l.syscall(0x40000000 | 29, 0, 1 << 30, 0o1600)"
    out["x32 shmget"] = subprocess.run([sys.executable, "-c", code]).returncode
print(json.dumps(out))
"""


def test_shared_memory_outside_the_memory_limit_is_refused():
    """System V IPC, memfd, anonymous shared mappings, /dev/zero mappings (RLIMIT_DATA counts none): refused."""
    out = run_sandboxed(SHARED)
    print(json.dumps(out, indent=1))
    for name in ("shmget 1 GiB", "msgget", "semget", "memfd_create"):
        assert out[name] == "EPERM", (name, out[name])
    assert out["memfd_secret"] in ("EPERM", "ENOSYS")         # (ENOSYS: a kernel without it)
    assert out["shmat"] in ("EPERM", "EINVAL")
    assert out["mmap shared anonymous 1 GiB"] == "EPERM"
    assert out["mmap shared anonymous, validate"] == "EPERM"
    assert out["mmap private anonymous"] == "mapped"          # what malloc, numpy and torch use
    assert out["mmap shared /dev/zero"] == "ENODEV"
    assert out["read /dev/zero"] == "00" * 8
    if platform.machine() == "x86_64":
        assert out["x32 shmget"] == -31, out["x32 shmget"]     # SIGSYS


# --------------------------------------------------------------------------- and everything else still works

WORK = r"""
import json, os, sys
import numpy as np
import torch
import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt
from multiprocessing import shared_memory
out = {"dot": float(torch.ones(3) @ torch.ones(3))}
net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten())
x = torch.randn(2, 3, 32, 32, requires_grad=True)
net(x).sum().backward()
out["grad"] = list(x.grad.shape)
a = np.arange(9.0).reshape(3, 3)
out["numpy"] = float((a @ a).trace())
fig, ax = plt.subplots()
ax.imshow(a)
fig.savefig("/tmp/plot.png")
out["png"] = os.path.getsize("/tmp/plot.png")
shm = shared_memory.SharedMemory(create=True, size=1 << 20)   # POSIX shared memory: a file in /dev/shm
shm.buf[0] = 7
out["posix shm"] = shm.buf[0]
shm.close()
shm.unlink()
out["fd"] = os.read(int(sys.argv[1]), 100).decode()   # a descriptor the caller passed, untouched
print(json.dumps(out))
"""


def test_normal_work_still_runs():
    """torch (a conv net with backward), numpy, a matplotlib PNG in /tmp, POSIX shm, and the caller's descriptors."""
    r, w = os.pipe()
    try:
        os.write(w, b"from the driver")
        os.close(w)
        out = run_sandboxed(f"import sys; sys.argv[1:] = ['{r}']\n" + WORK, pass_fds=(r,))
    finally:
        os.close(r)
    assert out["dot"] == 3.0 and out["grad"] == [2, 3, 32, 32] and out["numpy"] == 180.0
    assert out["png"] > 1000 and out["posix shm"] == 7
    assert out["fd"] == "from the driver"


def test_cgroups_left_by_killed_graders_are_removed_and_no_others(tmp_path):
    """A grading process killed in the middle of a job leaves its (empty) cgroups behind; the next one
    removes them: only those named after a process that is gone, and only when empty."""
    gone = 4_194_304 + 7                   # above the kernel's highest pid: no such process
    (tmp_path / "pids").mkdir()
    stale = [tmp_path / f"nbgrader-sandbox-{gone}-1", tmp_path / "pids" / f"nbgrader-sandbox-{gone}-2"]
    alive = tmp_path / f"nbgrader-sandbox-{os.getpid()}-1"          # this process: still running
    busy = tmp_path / f"nbgrader-sandbox-{gone}-3"                  # not empty (as a cgroup something runs in)
    other = tmp_path / "user.slice"
    for d in stale + [alive, busy, other]:
        d.mkdir()
    (busy / "cgroup.procs").write_text("1\n")
    sandbox._remove_stale_cgroups(tmp_path)
    assert not any(d.exists() for d in stale)
    assert alive.is_dir() and busy.is_dir() and other.is_dir()
