"""Grading a whole class: the submissions run side by side, on this machine or on a Dask cluster.

``python -m grader autograde`` grades in three steps (the *driver* is the process you start):

1. **prepare** (driver): for every submitted notebook that is due -- new, changed since it was last
   graded, or everything with ``--force`` -- nbgrader's own sanitizing pass (the ``Autograde``
   converter's ``sanitize_preprocessors``: rebuilt from the source notebook, hidden tests put
   back...) gives the notebook that :class:`~grader.execute.SandboxedExecute` will run. Its
   *key* is a hash of that notebook, of the limits and of the grading code
   (:meth:`SandboxedExecute.result_key`);
2. **run** (workers): a :class:`Job` per notebook, run by :func:`run_job` in a worker process --
   a local process pool (``--workers N``, the default) or a Dask cluster (``--scheduler
   tcp://HOST:8786``). Each job runs ``SandboxedExecute`` as nbgrader would: two fresh sandboxes
   of its own (own ``/tmp`` and ``/dev/shm``, own limits; no process is shared between two
   students). A worker only returns the executed notebook; it writes nothing;
3. **record** (driver): ``nbgrader autograde`` as before, one exercise at a time, in a thread of
   the driver. Its ``SandboxedExecute`` finds each
   notebook's executed copy under its key (``--SandboxedExecute.results``) and uses it instead of
   running the notebook again. So one process alone writes the gradebook, the autograded
   notebooks and the feedback, and a grade is the same whether its notebook ran in a pool, on a
   cluster or in nbgrader itself (a notebook whose result is missing still runs there).

Steps 1-3 overlap: the notebooks are prepared and sent exercise by exercise, and an exercise's
grades are recorded as soon as all its notebooks are back, while the workers run the next ones.

First, a **pre-flight**: the sandbox must start, and the reference solution of each exercise must
pass its own tests in the sandbox (its jobs go first). No grade is recorded before they passed; a
grading side that cannot grade stops the run, with the reason, and nothing is written. A job that
fails on the grading side later (:class:`~grader.execute.GradingSideError`) stops the run too.

A reference solution that passed once -- here, or in ``python -m grader validate``, which runs the same
check -- is not run again while nothing it depends on changed (``exercises/.grader-results/preflight.json``). What was graded is remembered in the course's
``.grader-results/graded.json`` (a stamp per submission: its
files, the source notebook, the limits and the grading code), so a second run grades only what
changed.
"""
from __future__ import annotations

import hashlib
import json
import os
import socket
import sys
import time
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import nbformat

from .sandbox import CPU_VARIABLES

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
RESULTS = ".grader-results"          # beside submitted/: executed notebooks, and what was graded
STATE = "graded.json"
#: the reference solutions that passed their pre-flight, {key: "exercise/notebook"}, the key a hash of the
#: notebook, the limits, the code, the Python and the CPU variables (any course graded from this checkout;
#: a grading side broken since is still caught: GradingSideError)
PREFLIGHT = HERE.parent / RESULTS / "preflight.json"


@lru_cache(maxsize=None)
def code_fingerprint() -> str:
    """A hash of the code that decides grades: this package, ``nbgrader_config.py`` and ``course_lib``."""
    h = hashlib.sha256()
    files = sorted(HERE.glob("*.py")) + [HERE.parent / "nbgrader_config.py"] + sorted((REPO / "course_lib").rglob("*.py"))
    for f in files:
        if f.is_file():
            h.update(f"{f.relative_to(REPO)}\0".encode() + f.read_bytes() + b"\0")
    return h.hexdigest()[:20]


def preflight_key(text: str, settings: dict, python: str) -> str:
    """What a reference solution's pre-flight pass depends on: the source notebook (its text), the
    limits (``--SandboxedExecute.*``), the grading code, the course's Python and the CPU variables."""
    return _sha256(json.dumps([text, settings, code_fingerprint(), python,
                               {k: os.environ.get(k, "") for k in CPU_VARIABLES}], sort_keys=True,
                              default=str).encode())


def record_preflights(passed: dict) -> None:
    """Add passes ({key: "exercise/notebook"}) to the record of reference solutions that passed:
    the pre-flights of ``autograde`` and the source notebooks ``grader validate`` found passing
    (the same check: every test cell of the reference passes in the sandbox, with these limits)."""
    if passed:
        _save(PREFLIGHT, {**_load(PREFLIGHT), **passed})


# --------------------------------------------------------------------------- jobs

@dataclass
class Job:
    """One notebook to run: a student's (``kind="grade"``) or an exercise's reference (``"preflight"``)."""

    kind: str
    student: str
    exercise: str
    notebook: str                         # the notebook's name (without .ipynb)
    text: str                             # the notebook to run, as nbformat JSON
    key: str                              # SandboxedExecute.result_key of it (grade jobs)
    settings: dict = field(default_factory=dict)   # --SandboxedExecute.* options of this run

    @property
    def name(self) -> str:
        return f"{self.student}/{self.exercise}/{self.notebook}"


def _sandboxed_execute(settings: dict):
    from .__main__ import _config
    from .execute import SandboxedExecute

    cfg = _config()
    for name, value in settings.items():
        cfg.SandboxedExecute[name] = value
    return SandboxedExecute(config=cfg)


def run_job(job: Job) -> dict:
    """What a worker does with one job: run the notebook in its sandboxes and return the result.

    A grade job returns the executed notebook (``notebook``); a pre-flight job returns the failing
    test cells of the reference solution (``failures``: empty when it passes). Raises
    :class:`GraderMismatch` when this worker's grading code or limits differ from the driver's
    (another checkout on a cluster machine), and whatever the grading side raised."""
    ex = _sandboxed_execute(job.settings)
    nb = nbformat.reads(job.text, as_version=4)
    if job.kind == "grade" and ex.result_key(nb) != job.key:
        raise GraderMismatch(f"worker {socket.gethostname()} computes another key for {job.name}: its grader, "
                             f"course_lib or limits differ from the driver's (run every worker from the same "
                             f"checkout as the driver)")
    start = time.monotonic()
    out = {"name": job.name, "kind": job.kind, "key": job.key, "worker": f"{socket.gethostname()}:{os.getpid()}"}
    if job.kind == "preflight":
        out["failures"] = _preflight_failures(ex, nb)
    else:
        nb, _ = ex.preprocess(nb, {})
        out["notebook"] = nbformat.writes(nb)
        out["cpu_seconds"] = nb.metadata.get("grader", {}).get("cpu_seconds")   # (the sandboxes' cgroups)
    out["seconds"] = round(time.monotonic() - start, 2)
    return out


def _preflight_failures(ex, nb) -> list[str]:
    """The test cells of a reference solution that did not pass when graded, and what the grading reported."""
    nb, _ = ex.preprocess(nb, {})
    return reference_failures(nb)


def reference_failures(nb) -> list[str]:
    """What keeps a reference solution, graded (``nb``: executed by ``SandboxedExecute``), from passing its
    pre-flight: its test cells that failed (what ``grader validate`` checks too), and the events its report
    lists (a flag, a note on the grading)."""
    from .rebuild import is_test_cell

    failed = []
    for cell in nb.cells:
        if cell.cell_type == "code" and is_test_cell(cell):
            errors = [o for o in cell.outputs if o.get("output_type") == "error"]
            if errors:
                grade_id = cell.metadata.get("nbgrader", {}).get("grade_id", "?")
                failed.append(f"{grade_id}: {errors[0].get('ename', '')}: {str(errors[0].get('evalue', ''))[:300]}")
    if nb.cells and nb.cells[0].metadata.get("grader", {}).get("report"):
        failed += [f"report: {n}" for n in nb.metadata.get("grader", {}).get("events", [])]
    return failed


class GraderMismatch(RuntimeError):
    """A worker's grading code or settings differ from the driver's."""


# --------------------------------------------------------------------------- workers

def default_workers(memory_mb: int = 3072, tmp_mb: int = 256, shm_mb: int = 64) -> int:
    """How many gradings this machine can run side by side: one per core, and no more than the
    memory allows when every sandbox uses all it may (two sandboxes per grading, each with its
    data memory, its /tmp and its /dev/shm)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    per_grading = 2 * (memory_mb + tmp_mb + shm_mb) << 20
    available = None
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    available = int(line.split()[1]) << 10
    except OSError:
        pass
    by_memory = max(1, available // per_grading) if available else cores
    return max(1, min(cores, by_memory))


class _Local:
    """A pool of worker processes on this machine (started fresh: nothing inherited from the driver)."""

    def __init__(self, workers: int):
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        self.workers = workers
        self.pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"))

    def submit(self, job: Job):
        return self.pool.submit(run_job, job)

    def close(self, abandon=()):
        """Wait for the running jobs; with ``abandon`` (futures whose results are not wanted: the run is
        broken, no grade will be written), stop them instead: the worker processes are killed, and their
        sandboxes with them (bwrap's ``--die-with-parent``)."""
        if abandon:
            for proc in list((getattr(self.pool, "_processes", None) or {}).values()):
                proc.kill()
        self.pool.shutdown(wait=True, cancel_futures=True)

    def describe(self) -> str:
        return f"{self.workers} worker process(es) on this machine"


class _Dask:
    """The workers of a Dask cluster (``dask scheduler`` / ``dask worker``, dask-jobqueue, Kubernetes).
    A worker that dies in the middle of a job is restarted by its nanny and the scheduler runs the
    job again elsewhere; its result reaches the driver once."""

    def __init__(self, address: str):
        from distributed import Client

        self.client = Client(address, timeout=30)
        self.address = address

    def submit(self, job: Job):
        return self.client.submit(run_job, job, pure=False, key=f"grade-{job.kind}-{job.name}-{time.time_ns()}")

    def close(self, abandon=()):
        if abandon:
            self.client.cancel(list(abandon), force=True)
        self.client.close()

    def describe(self) -> str:
        n = len(self.client.scheduler_info(n_workers=-1).get("workers", {}))
        return f"the Dask cluster at {self.address} ({n} worker(s))"


# --------------------------------------------------------------------------- what is due

def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes() if path.is_file() and not path.is_symlink() else b""
    except OSError:
        return b""


def stamp(root: Path, student: str, exercise: str, notebooks, settings: dict) -> str:
    """What a grade depends on: the submission's files, the exercise's source notebooks, the limits,
    and the grading code (:func:`grader.execute.code_fingerprint`)."""
    h = hashlib.sha256()
    for n in notebooks:
        h.update(_sha256(_read(root / "submitted" / student / exercise / f"{n}.ipynb")).encode())
        h.update(_sha256(_read(root / "source" / exercise / f"{n}.ipynb")).encode())
    h.update(_sha256(_read(root / "submitted" / student / exercise / "timestamp.txt")).encode())
    h.update(json.dumps(settings, sort_keys=True, default=str).encode())
    h.update(code_fingerprint().encode())
    return h.hexdigest()


def _load(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def _save(path: Path, data: dict) -> None:
    path.parent.mkdir(exist_ok=True)
    tmp = path.parent / f".{path.name}.{os.getpid()}"
    tmp.write_text(json.dumps(data, indent=1, sort_keys=True))
    os.replace(tmp, path)


def load_state(root: Path) -> dict:
    """What was graded in this course: {"graded": {"student/exercise": stamp}}."""
    return _load(root / RESULTS / STATE)


def save_state(root: Path, state: dict) -> None:
    _save(root / RESULTS / STATE, state)


# --------------------------------------------------------------------------- prepare

class Preparer:
    """nbgrader's sanitizing pass, run in the driver, without writing anything: the notebook that
    ``nbgrader autograde`` will hand to ``SandboxedExecute`` for a submission."""

    def __init__(self, root: Path, settings: dict):
        from nbgrader.converters import Autograde
        from nbgrader.coursedir import CourseDirectory

        from .__main__ import _config

        cfg = _config()
        cfg.CourseDirectory.root = str(root)
        for name, value in settings.items():
            cfg.SandboxedExecute[name] = value
        self.coursedir = CourseDirectory(config=cfg)
        self.converter = Autograde(coursedir=self.coursedir, config=cfg)
        self.converter.exporter = self.converter.exporter_class(parent=self.converter, config=cfg)  # (as in start())
        self.converter._sanitizing = True        # (what nbgrader's convert_single_notebook sets)
        self.converter._init_preprocessors()
        self.execute = _sandboxed_execute(settings)

    def notebook(self, student: str, exercise: str, name: str) -> tuple[str, str]:
        """(the notebook to run, as JSON, and its result key)."""
        path = os.path.join(self.coursedir.format_path(self.coursedir.submitted_directory, student, exercise),
                            f"{name}.ipynb")
        resources = self.converter.init_single_notebook_resources(path)
        output, _ = self.converter.exporter.from_filename(path, resources=resources)
        nb = nbformat.reads(output, as_version=4)   # (what the autograding pass reads back from the file)
        return output, self.execute.result_key(nb)


# --------------------------------------------------------------------------- the run

@dataclass
class Outcome:
    results: dict = field(default_factory=dict)      # name -> the worker's answer (without the notebook)
    broken: str | None = None                        # why the grading side cannot grade
    unprepared: list = field(default_factory=list)   # (name, reason): nbgrader will grade these itself
    seconds: float = 0.0                             # the whole run, pre-flights included
    prepare_seconds: float = 0.0                     # the driver preparing the notebooks (serial)
    record_seconds: float = 0.0                      # nbgrader recording the grades (serial, overlapped)
    where: str = ""


def run(root: Path, due: dict, settings: dict, *, workers: int | None = None, scheduler: str | None = None,
        progress: bool = True, log=print, on_exercise=None) -> Outcome:
    """Pre-flight and run every due notebook (``due``: {(student, exercise): notebook names}) in the
    workers; each executed notebook is written to ``<root>/.grader-results/<key>.json`` as soon as it
    comes back, where the autograding pass finds it. The pre-flights go first; the submissions are
    prepared and sent while they run (a worker writes nothing, so nothing is lost if one fails: the
    grades are written only after :func:`run`, and only if nothing was broken).

    ``on_exercise(exercise)`` is called once per exercise as soon as all its notebooks are back and
    every pre-flight passed (nothing broken so far): the driver records that exercise's grades while
    the workers run the next ones. The notebooks are sent exercise by exercise."""
    import threading

    from .execute import GradingSideError

    start = time.monotonic()
    out = Outcome()
    folder = root / RESULTS
    folder.mkdir(exist_ok=True)
    checked = _load(PREFLIGHT)
    prep = Preparer(root, settings)
    preflights = []
    for a in sorted({a for _, a in due}):
        for n in sorted(p.stem for p in (root / "source" / a).glob("*.ipynb")):
            text = (root / "source" / a / f"{n}.ipynb").read_text(encoding="utf-8")
            ref = preflight_key(text, settings, prep.execute.python)
            if ref not in checked:   # (a set of passes: other limits or code keep their own entries)
                preflights.append(Job("preflight", "reference", a, n, text, ref, settings))
    todo = [(s, a, n) for (s, a), names in sorted(due.items(), key=lambda kv: (kv[0][1], kv[0][0])) for n in names
            if (root / "submitted" / s / a / f"{n}.ipynb").is_file()]   # (nbgrader gives a missing one zero)
    left = {a: 0 for _, a in due}                # notebooks of each exercise not back yet
    for _, a, _ in todo:
        left[a] += 1
    waiting_preflights = len(preflights)
    announced: set[str] = set()
    engine = _Dask(scheduler) if scheduler else _Local(workers or default_workers(
        settings.get("memory_mb", 3072), settings.get("tmp_mb", 256)))
    out.where = engine.describe()
    log(f"autograde: {len(todo)} notebook(s) to run, {len(preflights)} reference solution(s) to check first, "
        f"on {out.where}")
    bar = _bar(len(todo) + len(preflights), progress)
    lock, pending = threading.Lock(), {}
    everything_sent = threading.Event()
    all_done = threading.Event()

    def announce():   # (under the lock) the exercises whose grades may be recorded now
        if out.broken or waiting_preflights or on_exercise is None:
            return
        for a in sorted(left):
            if left[a] == 0 and a not in announced:
                announced.add(a)
                on_exercise(a)

    def finished(future):
        nonlocal waiting_preflights
        with lock:
            job = pending.pop(future, None)
        if job is None:
            return
        try:
            res = future.result()
        except (GradingSideError, GraderMismatch) as e:
            out.broken = out.broken or f"{job.name}: {type(e).__name__}: {e}"
        except Exception as e:  # noqa: BLE001
            if job.kind == "preflight":
                out.broken = out.broken or f"the reference solution of {job.exercise} could not be run: " \
                                           f"{type(e).__name__}: {e}"
            else:   # the worker failed (not the submission): nbgrader runs this notebook itself
                out.unprepared.append((job.name, f"the worker failed: {type(e).__name__}: {str(e)[:200]}"))
        else:
            if job.kind == "preflight":
                if res["failures"]:
                    out.broken = out.broken or (f"the reference solution of {job.exercise} does not pass its own "
                                                f"tests when graded: " + "; ".join(res["failures"][:5]))
                else:
                    checked[job.key] = f"{job.exercise}/{job.notebook}"
            else:
                _write_result(folder, res)
                out.results[job.name] = {k: v for k, v in res.items() if k != "notebook"}
        with lock:
            bar.update(1)
            bar.set_postfix_str(job.name[-40:], refresh=False)
            if job.kind == "preflight":
                waiting_preflights -= 1
            else:
                left[job.exercise] -= 1
            announce()
            if everything_sent.is_set() and not pending:
                all_done.set()
        if hasattr(future, "release"):
            future.release()

    def send(job):
        f = engine.submit(job)
        with lock:
            pending[f] = job
        f.add_done_callback(finished)

    try:
        for job in preflights:
            send(job)
        for s, a, n in todo:
            if out.broken:
                break
            t = time.monotonic()
            try:
                text, key = prep.notebook(s, a, n)
            except Exception as e:  # noqa: BLE001 - nbgrader will fail on it too, and say why
                out.unprepared.append((f"{s}/{a}/{n}", f"{type(e).__name__}: {str(e)[:200]}"))
                with lock:
                    bar.update(1)
                    left[a] -= 1
                    announce()
                continue
            finally:
                out.prepare_seconds += time.monotonic() - t
            if (folder / f"{key}.json").is_file():      # (run already: an earlier run stopped before recording)
                with lock:
                    bar.update(1)
                    left[a] -= 1
                    announce()
                continue
            send(Job("grade", s, a, n, text, key, settings))
        with lock:
            everything_sent.set()
            announce()
            if not pending:
                all_done.set()
        while not all_done.wait(0.5):
            if out.broken:
                break
        if not out.broken:
            record_preflights(checked)
        return out
    finally:
        bar.close()
        with lock:   # (broken: what still runs would be thrown away)
            abandon = list(pending) if out.broken else []
        engine.close(abandon)
        out.seconds = time.monotonic() - start


def _write_result(folder: Path, res: dict) -> None:
    tmp = folder / f".{res['key']}.{os.getpid()}"
    tmp.write_text(res["notebook"], encoding="utf-8")
    os.replace(tmp, folder / f"{res['key']}.json")


def _bar(total: int, show: bool):
    from tqdm import tqdm

    return tqdm(total=total, unit="notebook", desc="grading", disable=not show or not total, file=sys.stderr,
                dynamic_ncols=True, mininterval=1.0)


def clear_results(root: Path) -> None:
    """Remove the executed notebooks once nbgrader has recorded them (the stamps stay)."""
    folder = root / RESULTS
    if folder.is_dir():
        for p in folder.glob("*.json"):
            if p.name != STATE:
                p.unlink(missing_ok=True)


def summary(outcome: Outcome, graded: int, todo: int, refused: list[str], failed: list, slowest: int = 5) -> list[str]:
    """The table an instructor reads at the end of a run."""
    lines = [f"{'graded':<10} {graded} of {todo} submission(s) due"]
    lines.append(f"{'refused':<10} {len(refused)}" + "".join(f"\n{'':<11}{r}" for r in refused[:20]))
    crashed = list(outcome.unprepared) + [(f"{s}/{a}", "could not be graded") for s, a in failed]
    lines.append(f"{'crashed':<10} {len(crashed)}" + "".join(f"\n{'':<11}{n}: {why}" for n, why in crashed[:20]))
    runs = sorted(outcome.results.values(), key=lambda r: -r.get("seconds", 0))
    if runs:
        lines.append(f"{'slowest':<10} " + f"\n{'':<11}".join(
            f"{r['name']}: {r['seconds']:.1f} s" + (f" ({r['cpu_seconds']:.1f} CPU-s)" if r.get("cpu_seconds")
                                                    else "") + f" on {r['worker']}" for r in runs[:slowest]))
        rate = 60 * len(runs) / outcome.seconds if outcome.seconds else 0
        cpu = [r["cpu_seconds"] for r in runs if r.get("cpu_seconds") is not None]
        lines.append(f"{'run':<10} {len(runs)} notebook(s) in {outcome.seconds:.0f} s on {outcome.where}: "
                     f"{rate:.1f} per minute" + (f", {sum(cpu) / len(cpu):.1f} CPU-s each in the sandboxes"
                                                 if cpu else ""))
        lines.append(f"{'driver':<10} preparing {outcome.prepare_seconds:.1f} s, recording (nbgrader) "
                     f"{outcome.record_seconds:.1f} s: {(outcome.prepare_seconds + outcome.record_seconds) / len(runs):.2f} "
                     f"s per notebook, one at a time while the workers run")
    return lines


