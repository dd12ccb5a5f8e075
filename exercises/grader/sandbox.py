"""A bubblewrap sandbox for one process that runs untrusted code.

What the process gets:

* **no network**: its own (empty) network namespace, loopback only;
* **its own process tree** (PID namespace): it cannot see or signal anything outside,
  and everything in it dies with it;
* **a read-only view of only what Python needs**: ``/usr``, the Python installation and
  virtual environment, ``course_lib``, the data folder, and this ``grader`` package.
  Nothing else of the machine exists in there: not the course folder (no source notebooks,
  no solutions, no gradebook, no other submissions), not ``$HOME``, not ``/etc/shadow``;
* **two writable folders, both bounded**: ``/tmp`` and ``/dev/shm``, private in-memory file
  systems of bounded size (``tmp_size``, ``shm_size``), gone when the process ends. Everything
  else is read-only: ``/``, ``/etc``, ``/dev`` and the folders that hide modules too;
* **no memory beyond its limit through shared memory**: a seccomp filter refuses (``EPERM``)
  what ``RLIMIT_DATA`` does not count and no grading needs -- System V shared memory, message
  queues and semaphores (``shmget``, ``shmat``, ``msgget``, ``semget``), ``memfd_create``,
  ``memfd_secret`` and anonymous shared ``mmap``; ``/dev/zero`` reads zeros but cannot be
  mapped (it is ``/dev/full``). Files in ``/tmp`` and ``/dev/shm`` may still be shared-mapped:
  their size is bounded;
* **only its own environment**: the whole chain (``prlimit``, ``bwrap``, bwrap's init, which
  is PID 1 inside, and Python) starts from the sandbox's explicit environment, nothing of the
  driver's (``/proc/1/environ`` would show it);
* **limits**: CPU seconds and memory (``RLIMIT_CPU``, ``RLIMIT_DATA``), file size, open
  files; the wall-clock limit is enforced by the driver, which kills the whole sandbox;
* **no privileges**: a user namespace, no capabilities, no further namespaces; when the grader
  runs as root, the sandbox also gets its own cgroup (where the machine has one) that caps the
  number of processes (fork bombs) and its total memory; otherwise ``RLIMIT_NPROC`` caps them.
  None of the bounds above depends on that cgroup.

Modules listed in ``hidden`` are replaced by :mod:`grader.hidden_module`, which raises
``ImportError`` (used to keep the reference implementation of the exercise out of reach).

Needs ``bwrap`` (0.8 or newer), ``prlimit``, and, in the Python that builds the command line
(the grader venv), :mod:`pyseccomp` over the system's ``libseccomp.so.2``; x86_64 or aarch64.
"""
from __future__ import annotations

import errno
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

GRADER_DIR = Path(__file__).resolve().parent          # exercises/grader
EXERCISES_DIR = GRADER_DIR.parent                     # exercises/  (never exposed as a whole)


class SandboxUnavailable(RuntimeError):
    """bubblewrap is missing or cannot create a sandbox on this machine."""


@dataclass
class Limits:
    cpu_seconds: int = 120              # CPU time per process (RLIMIT_CPU)
    memory: int = 3 << 30               # bytes of data memory per process (RLIMIT_DATA)
    tmp_size: int = 256 << 20           # bytes of the private /tmp
    shm_size: int = 64 << 20            # bytes of the private /dev/shm (POSIX shared memory)
    file_size: int = 64 << 20           # largest file it may write (RLIMIT_FSIZE)
    open_files: int = 256
    processes: int = 256                # processes and threads (a cgroup as root, else RLIMIT_NPROC)


@dataclass
class PythonInfo:
    """Where the course's Python lives (found by asking that Python, outside any sandbox)."""

    executable: str
    paths: list[str] = field(default_factory=list)           # folders to expose read-only
    modules: dict[str, str | None] = field(default_factory=dict)  # module -> file/folder to hide
    data_dir: str | None = None


_QUERY = r"""
import importlib.util, json, os, sys
out = {"prefixes": sorted({os.path.realpath(p) for p in (sys.prefix, sys.base_prefix, sys.exec_prefix)}),
       "sys_path": [os.path.realpath(p) for p in sys.path if p and os.path.isdir(p)],
       "modules": {}, "packages": {}}
for name in ("course_lib",):
    spec = importlib.util.find_spec(name)
    if spec and spec.submodule_search_locations:
        out["packages"][name] = [os.path.realpath(p) for p in spec.submodule_search_locations]
for name in json.loads(sys.argv[1]):
    try:
        spec = importlib.util.find_spec(name)
    except Exception:
        spec = None
    if spec is None or not spec.origin:
        out["modules"][name] = None
    elif spec.submodule_search_locations:
        out["modules"][name] = os.path.realpath(list(spec.submodule_search_locations)[0])
    else:
        out["modules"][name] = os.path.realpath(spec.origin)
try:
    from course_lib.data import data_dir
    out["data_dir"] = os.path.realpath(data_dir())
except Exception:
    out["data_dir"] = None
print(json.dumps(out))
"""


#: Variables that choose PyTorch's CPU kernels; the grader's own environment passes them to the sandbox.
CPU_VARIABLES = ("ATEN_CPU_CAPABILITY", "DNNL_MAX_CPU_ISA", "ONEDNN_MAX_CPU_ISA", "COURSE_CPU_BF16")


@lru_cache(maxsize=None)
def python_info(python: str, hidden: tuple[str, ...] = ()) -> PythonInfo:
    """Ask the course's Python (a trusted run, outside the sandbox) where its files are."""
    env = dict(os.environ, PYTHONDONTWRITEBYTECODE="1")
    env.pop("PYTHONPATH", None)
    proc = subprocess.run([python, "-c", _QUERY, json.dumps(list(hidden))], capture_output=True, text=True,
                          env=env, cwd="/", timeout=120)
    if proc.returncode != 0:
        raise SandboxUnavailable(f"cannot run the course's Python {python}: {proc.stderr.strip()[-2000:]}")
    q = json.loads(proc.stdout)
    paths = list(q["prefixes"]) + [p for locs in q["packages"].values() for p in locs] + q["sys_path"]
    if q.get("data_dir") and os.path.isdir(q["data_dir"]):
        paths.append(q["data_dir"])
    mirror = os.environ.get("COURSE_DATA_MIRROR")
    if mirror and os.path.isdir(mirror):
        paths.append(os.path.realpath(mirror))
    exercises = str(EXERCISES_DIR.resolve())
    keep: list[str] = []
    for p in sorted(set(paths), key=len):
        if p.startswith("/usr/") or p == "/usr":
            continue
        if exercises == p or exercises.startswith(p.rstrip("/") + "/"):
            raise SandboxUnavailable(
                f"the course's Python has {p} on its path, which contains the exercises folder (with the "
                f"solutions); refusing to expose it to student code")
        if any(p == k or p.startswith(k.rstrip("/") + "/") for k in keep):
            continue
        keep.append(p)
    # the Python as the sandbox sees it: its folder with every link resolved (a venv reached through a
    # symlinked folder is exposed at its real place only), its own name kept (a venv's python is a link
    # to the base interpreter; started under the venv's name, it finds the venv's pyvenv.cfg)
    executable = os.path.join(os.path.realpath(os.path.dirname(os.path.abspath(python))), os.path.basename(python))
    return PythonInfo(executable=executable, paths=keep, modules=q["modules"], data_dir=q.get("data_dir"))


def _parents(path: str) -> list[str]:
    parts = Path(path).parts[1:-1]
    return ["/" + "/".join(parts[: i + 1]) for i in range(len(parts))]


# What the seccomp filter refuses (EPERM): memory that RLIMIT_DATA does not count and that no
# grading needs. System V IPC objects stay (in the sandbox's IPC namespace) after the process that
# made them and hold memory no rlimit counts (shmget of any size; msgget and semget, up to 32000
# queues or sets each); memfd_create and memfd_secret make anonymous files of any size. Files in
# /tmp and /dev/shm (shm_open, multiprocessing's shared memory) still work, within those sizes.
_REFUSED_SYSCALLS = ("shmget", "shmat", "msgget", "semget", "memfd_create")
_REFUSED_IF_KNOWN = ("memfd_secret",)         # newer than some libseccomp releases
# mmap(..., flags, ...) with MAP_SHARED (or MAP_SHARED_VALIDATE) and MAP_ANONYMOUS: anonymous
# shared memory (shmem) that RLIMIT_DATA does not count. Same values on x86_64 and aarch64.
_MAP_SHARED, _MAP_ANONYMOUS = 0x01, 0x20
_SECCOMP_ARCHES = ("x86_64", "aarch64")       # where mmap's flags are its 4th argument (tested)

# Run by the course's Python (trusted, outside the sandbox, isolated: no site, no PYTHON*
# variables) between `env -i` and prlimit: puts the seccomp filter (argv[1], hex) into a pipe and
# hands its read end to bwrap as argv[3 + int(argv[2])] (`--seccomp FD`). The kernel picks the
# descriptor, so it cannot clash with those the caller passes in; callers need not pass one.
_FEED_SECCOMP = r"""
import os, sys
bpf, at, cmd = bytes.fromhex(sys.argv[1]), int(sys.argv[2]), sys.argv[3:]
r, w = os.pipe()
os.write(w, bpf)
os.close(w)
os.set_inheritable(r, True)
cmd[at] = str(r)
os.execv(cmd[0], cmd)
"""


@lru_cache(maxsize=None)
def seccomp_filter() -> bytes:
    """The sandbox's seccomp filter as a BPF program (built with libseccomp, through pyseccomp)."""
    machine = platform.machine()
    if machine not in _SECCOMP_ARCHES:
        raise SandboxUnavailable(f"the sandbox's seccomp filter is written for {' and '.join(_SECCOMP_ARCHES)}, "
                                 f"not {machine}")
    try:
        import pyseccomp as seccomp
    except (ImportError, RuntimeError, OSError) as e:  # RuntimeError: pyseccomp finds no libseccomp
        raise SandboxUnavailable(
            f"the sandbox's seccomp filter needs pyseccomp and libseccomp ({type(e).__name__}: {e}): run "
            f"`make grader-setup` (pyseccomp is in requirements-grader.txt) and, if libseccomp.so.2 is "
            f"missing, `apt-get install libseccomp2`") from e
    refuse = seccomp.ERRNO(errno.EPERM)
    f = seccomp.SyscallFilter(seccomp.ALLOW)   # anything else: allowed; another architecture: killed
    for name in _REFUSED_SYSCALLS + _REFUSED_IF_KNOWN:
        if seccomp.resolve_syscall(seccomp.Arch.NATIVE, name) < 0:
            if name in _REFUSED_IF_KNOWN:
                continue
            raise SandboxUnavailable(f"this libseccomp does not know the system call {name}")
        f.add_rule(refuse, name)
    shared_anon = _MAP_SHARED | _MAP_ANONYMOUS
    f.add_rule(refuse, "mmap", seccomp.Arg(3, seccomp.MASKED_EQ, shared_anon, shared_anon))
    with tempfile.TemporaryFile() as t:
        f.export_bpf(t)
        t.seek(0)
        bpf = t.read()
    if not bpf or len(bpf) % 8 or len(bpf) > 4096:
        raise SandboxUnavailable(f"libseccomp made a seccomp filter of {len(bpf)} bytes")
    return bpf


def bwrap_argv(info: PythonInfo, argv: list[str], limits: Limits, hidden: tuple[str, ...] = (),
               fds: tuple[int, ...] = (), env: dict | None = None) -> list[str]:
    """The full command line: ``env -i ENV python -I -S -c FEED ... prlimit ... -- bwrap ... -- python argv``.

    ``env -i ENV``: the whole chain starts from the sandbox's own environment (``--clearenv``
    alone would not do: bwrap's init, PID 1 inside, keeps the environment bwrap started with).
    The few lines of Python after it hand the seccomp filter to bwrap through a pipe of their
    own. So the command needs nothing from the caller: no environment, no descriptor.
    """
    bwrap = shutil.which("bwrap")
    if bwrap is None:
        raise SandboxUnavailable("bubblewrap (bwrap) is not installed: `sudo apt-get install bubblewrap` "
                                 "(or run `make grader-setup`, which installs it when run as root)")
    env_bin = shutil.which("env", path="/usr/bin:/bin")
    if env_bin is None:
        raise SandboxUnavailable("env (from coreutils) is needed to start the sandbox with a clean environment")
    bpf = seccomp_filter()
    as_root = os.geteuid() == 0
    cmd: list[str] = []
    prlimit = shutil.which("prlimit")
    if prlimit is None:
        raise SandboxUnavailable("prlimit (from util-linux) is needed to set the sandbox's limits")
    rl = {"--cpu": (limits.cpu_seconds, limits.cpu_seconds + 5), "--data": (limits.memory, limits.memory),
          "--fsize": (limits.file_size, limits.file_size), "--nofile": (limits.open_files, limits.open_files),
          "--core": (0, 0)}
    if not as_root:  # RLIMIT_NPROC counts all of this user's processes (root is exempt from it)
        n = limits.processes + _user_processes()
        rl["--nproc"] = (n, n)
    cmd += [prlimit] + [f"{k}={s}:{h}" for k, (s, h) in rl.items()] + ["--"]
    cmd += [bwrap, "--die-with-parent", "--new-session", "--unshare-pid", "--unshare-net", "--unshare-ipc",
            "--unshare-uts", "--unshare-cgroup-try", "--hostname", "sandbox"]
    cmd += ["--unshare-user"] + (["--disable-userns"] if _supports(bwrap, "--disable-userns") else [])
    if as_root:  # bwrap run by root keeps root's capabilities unless told otherwise
        cmd += ["--cap-drop", "ALL"]
    # the system: /usr and the merged-/usr links, a few harmless files of /etc
    cmd += ["--ro-bind", "/usr", "/usr"]
    for name in ("bin", "lib", "lib32", "lib64", "libx32", "sbin"):
        p = Path("/") / name
        if p.is_symlink():
            cmd += ["--symlink", os.readlink(p), str(p)]
        elif p.is_dir():
            cmd += ["--ro-bind", str(p), str(p)]
    cmd += ["--perms", "0755", "--dir", "/etc"]
    for f in ("/etc/ld.so.cache", "/etc/ld.so.conf", "/etc/passwd", "/etc/group", "/etc/localtime",
              "/etc/nsswitch.conf"):
        if os.path.exists(f):
            cmd += ["--ro-bind", f, f]
    if not _supports(bwrap, "--size") or not _supports(bwrap, "--remount-ro"):
        raise SandboxUnavailable("this bubblewrap is too old (it cannot bound the size of /tmp): 0.8 or newer "
                                 "is needed")
    # /dev: bwrap's minimal one, its /dev/zero swapped for /dev/full (reads zeros, cannot be mmap'ed:
    # a shared mapping of /dev/zero is anonymous shared memory); the writable places, sized
    cmd += ["--proc", "/proc", "--dev", "/dev", "--dev-bind", "/dev/full", "/dev/zero",
            "--perms", "1777", "--size", str(limits.shm_size), "--tmpfs", "/dev/shm",
            "--perms", "1777", "--size", str(limits.tmp_size), "--tmpfs", "/tmp"]
    # Python, the course's packages, the data, and this package -- read-only
    made = {"/", "/usr", "/etc", "/tmp", "/proc", "/dev"}
    exposed = list(info.paths) + [str(GRADER_DIR)]
    for p in exposed:
        for parent in _parents(p):
            if parent not in made and not any(parent == e or parent.startswith(e + "/") for e in exposed):
                cmd += ["--perms", "0755", "--dir", parent]
                made.add(parent)
        cmd += ["--ro-bind", p, p]
    stub = str(GRADER_DIR / "hidden_module.py")
    for name in hidden:
        path = info.modules.get(name)
        if not path:
            continue
        if os.path.isdir(path):  # (a tmpfs owned by the sandbox's user: read-only, or it could chmod and fill it)
            cmd += ["--perms", "0555", "--tmpfs", path, "--ro-bind", stub, os.path.join(path, "__init__.py"),
                    "--remount-ro", path]
        else:
            cmd += ["--ro-bind", stub, path]
            cached = os.path.join(os.path.dirname(path), "__pycache__")
            if os.path.isdir(cached):
                cmd += ["--perms", "0555", "--tmpfs", cached, "--remount-ro", cached]
    # last: the tmpfs of bwrap's / (with /etc and the folders made above) and of /dev, read-only
    # (their mounts only: /tmp, /dev/shm, /proc and the binds keep their own flags)
    cmd += ["--remount-ro", "/dev", "--remount-ro", "/"]
    base_env = {
        "PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": "/tmp", "TMPDIR": "/tmp", "LANG": "C.UTF-8",
        "PYTHONPATH": str(EXERCISES_DIR), "PYTHONDONTWRITEBYTECODE": "1", "PYTHONIOENCODING": "utf-8",
        "PYTHONHASHSEED": "0", "MPLBACKEND": "Agg", "MPLCONFIGDIR": "/tmp/matplotlib",
        "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": "",
        "COURSE_FAST": "1",
    }
    if info.data_dir:
        base_env["COURSE_DATA_DIR"] = info.data_dir
    mirror = os.environ.get("COURSE_DATA_MIRROR")
    if mirror and os.path.isdir(mirror):
        base_env["COURSE_DATA_MIRROR"] = os.path.realpath(mirror)
    # the instructor's choice of kernels (e.g. the whole test suite run as a CPU without AVX-512 would)
    base_env.update({k: os.environ[k] for k in CPU_VARIABLES if os.environ.get(k, "").isalnum()})
    base_env.update(env or {})
    for k, v in base_env.items():
        if not k or "=" in k or "\0" in k + str(v):
            raise ValueError(f"not an environment variable: {k!r}={v!r}")
    cmd += ["--clearenv"]
    for k, v in base_env.items():
        cmd += ["--setenv", k, v]
    cmd += ["--seccomp", "FD"]
    at = len(cmd) - 1           # the feeder puts the pipe's descriptor there
    cmd += ["--chdir", "/tmp", "--"]
    feed = [info.executable, "-I", "-S", "-c", _FEED_SECCOMP, bpf.hex(), str(at)]
    return [env_bin, "-i"] + [f"{k}={v}" for k, v in base_env.items()] + feed + cmd + [info.executable] + list(argv)


@lru_cache(maxsize=None)
def _supports(bwrap: str, option: str) -> bool:
    proc = subprocess.run([bwrap, "--help"], capture_output=True, text=True)
    return option in proc.stdout + proc.stderr


def _user_processes() -> int:
    uid, n = os.getuid(), 0
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                if os.stat(f"/proc/{d}").st_uid == uid:
                    n += int(open(f"/proc/{d}/status").read().split("Threads:")[1].split()[0])
            except (OSError, IndexError, ValueError):
                pass
    return n


def _remove_stale_cgroups(root: Path) -> None:
    """Remove the empty cgroups left by grading processes that were killed (a worker stopped in the middle
    of a job: ``remove`` never ran). A cgroup is named after the process that made it; only those whose
    process is gone are touched, and ``rmdir`` removes a cgroup only when nothing runs in it."""
    for base in (root, root / "pids", root / "memory", root / "cpuacct"):
        for d in base.glob("nbgrader-sandbox-*-*") if base.is_dir() else ():
            pid = d.name.split("-")[2]
            if pid.isdigit() and not Path(f"/proc/{pid}").exists():
                try:
                    d.rmdir()
                except OSError:
                    pass


class Cgroup:
    """A fresh cgroup for one sandbox (root only, best effort): a cap on processes and on total memory.

    ``wrap(cmd)`` returns a command that first moves itself into the cgroup, then runs ``cmd``;
    ``remove()`` deletes the cgroup once everything in it has ended.
    """

    _count = 0

    def __init__(self, limits: Limits):
        self.dirs: list[Path] = []
        if os.geteuid() != 0:
            return
        v2 = Path("/sys/fs/cgroup")
        if Cgroup._count == 0:
            _remove_stale_cgroups(v2)
        Cgroup._count += 1
        name = f"nbgrader-sandbox-{os.getpid()}-{Cgroup._count}"
        memory = limits.memory + limits.tmp_size + limits.shm_size + (1 << 30)
        controllers = (v2 / "cgroup.controllers").read_text().split() if (v2 / "cgroup.controllers").exists() else []
        if controllers:
            settings = {"pids.max": limits.processes} if "pids" in controllers else {}
            if "memory" in controllers:
                settings.update({"memory.max": memory, "memory.swap.max": 0})
            self._make(v2 / name, settings)
        else:
            self._make(v2 / "pids" / name, {"pids.max": limits.processes})
            self._make(v2 / "memory" / name, {"memory.limit_in_bytes": memory})
            self._make(v2 / "cpuacct" / name, {})      # (only counts: the CPU time of a grading)

    def _make(self, path: Path, settings: dict) -> None:
        try:
            path.mkdir()
        except OSError:
            return
        self.dirs.append(path)
        for k, v in settings.items():
            try:
                (path / k).write_text(str(v))
            except OSError:
                pass

    def wrap(self, cmd: list[str]) -> list[str]:
        if not self.dirs:
            return cmd
        joins = " && ".join(f"echo $$ > '{d}/cgroup.procs'" for d in self.dirs)
        return ["/bin/sh", "-c", joins + ' && exec "$@"', "sh"] + cmd

    def cpu_seconds(self) -> float | None:
        """The CPU time used by everything in the cgroup so far (cgroup v2's cpu.stat, v1's cpuacct), or None."""
        for d in self.dirs:
            try:
                if (d / "cpuacct.usage").exists():
                    return int((d / "cpuacct.usage").read_text()) / 1e9
                for line in (d / "cpu.stat").read_text().splitlines():
                    if line.startswith("usage_usec "):
                        return int(line.split()[1]) / 1e6
            except (OSError, ValueError):
                pass
        return None

    def remove(self) -> None:
        for d in self.dirs:
            for _ in range(50):
                try:
                    d.rmdir()
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    import time

                    time.sleep(0.05)
        self.dirs = []


def check(python: str) -> None:
    """Raise :class:`SandboxUnavailable` (saying how to fix it) unless a sandbox can be started."""
    info = python_info(python)
    proc = subprocess.run(bwrap_argv(info, ["-c", "print('ok')"], Limits()), capture_output=True, text=True,
                          timeout=60)
    if proc.returncode != 0 or proc.stdout.strip() != "ok":
        raise SandboxUnavailable(
            "bubblewrap cannot create a sandbox here: " + (proc.stderr.strip()[-1500:] or f"exit {proc.returncode}")
            + "\n(on Ubuntu 24.04+, unprivileged user namespaces may be restricted by AppArmor: "
              "see exercises/README.md)")


if __name__ == "__main__":  # python -m grader.sandbox PYTHON: check that sandboxes work
    check(sys.argv[1] if len(sys.argv) > 1 else sys.executable)
    print("sandbox: ok")
