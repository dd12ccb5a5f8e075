"""Throughput of grading a class (issue 28): gradings per minute and CPU-seconds per grading.

A synthetic class is built from the exercises themselves: for each of the 8 exercises, students
hand in the reference solution, a partial one (a known small bug, where the tests have one), the
released notebook untouched, or a broken one (the first answer cell raises). The same class is
graded once per setting, each time in a fresh copy of the course:

* ``--workers 0`` -- the reference: every notebook run inside nbgrader, one at a time (the grader
  before issue 28);
* ``--workers N`` for each N asked for (default 1, 2, 4): N worker processes side by side.

For each: the wall-clock time, gradings per minute, the machine's busy CPU-seconds per grading
(from ``/proc/stat``: sandboxes, workers and the driver together; run it on an otherwise idle
machine), the part spent in the sandboxes (their cgroups, as root), and the driver's serial
seconds (preparing the notebooks and nbgrader recording the grades, one at a time). From these,
a projection to a machine with more cores from the marginal costs (Amdahl: the driver's serial part
does not shrink; it records exercise by exercise while the workers go on, so the two overlap; the
pre-flights and nbgrader's start per exercise are paid once). Every pooled row pays its pre-flights
(one reference solution per exercise), which a small class feels and a large one does not.

Run it from the repository root with the course's Python (it starts the grader's itself); it needs
``make grader-setup`` and takes a while (students x 8 gradings per setting, 10-20 CPU-s each)::

    .venv/bin/python benchmarks/grading.py --students 4 --workers 1 2 4
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parents[1]
EXERCISES = ROOT / "exercises"
GRADER_BIN = EXERCISES / ".venv-grader" / "bin"
sys.path.insert(0, str(ROOT / "tests"))
from test_exercises import LIMITS, PARTIAL_GRAD_CAM_BUG, PARTIALS, _answers, _grade_id, limits  # noqa: E402

KINDS = ("reference", "partial", "untouched", "broken")


def _env() -> dict:
    env = dict(os.environ, PATH=f"{GRADER_BIN}{os.pathsep}{os.environ.get('PATH', '')}", OMP_NUM_THREADS="1")
    env.pop("PYTHONPATH", None)
    return env


def _nbgrader(course: Path, *args: str) -> None:
    subprocess.run([str(GRADER_BIN / "nbgrader"), *args, f"--CourseDirectory.root={course}"], cwd=EXERCISES,
                   env=_env(), check=True, capture_output=True)


def build_class(course: Path, students: int) -> int:
    """A course folder with ``students`` submissions of every exercise; returns how many notebooks."""
    exercises = sorted(p.name for p in (EXERCISES / "source").iterdir() if (p / f"{p.name}.ipynb").exists())
    for ex in exercises:
        shutil.copytree(EXERCISES / "source" / ex, course / "source" / ex)
    _nbgrader(course, "generate_assignment", "*", "--force")
    n = 0
    for ex in exercises:
        source = nbformat.read(course / "source" / ex / f"{ex}.ipynb", as_version=4)
        ref = _answers(source)
        for i in range(students):
            kind = KINDS[i % len(KINDS)]
            answers = dict(ref)
            if kind == "partial":
                cell, old, new = PARTIALS[ex][:3] if ex in PARTIALS else ("grad_cam", *PARTIAL_GRAD_CAM_BUG)
                if cell in answers and old in answers[cell]:
                    answers[cell] = answers[cell].replace(old, new)
            elif kind == "broken":
                first = next(iter(answers))
                answers[first] = "raise RuntimeError('broken on purpose')\n"
            nb = nbformat.read(course / "release" / ex / f"{ex}.ipynb", as_version=4)
            if kind != "untouched":
                for cell in nb.cells:
                    if _grade_id(cell) in answers:
                        cell.source = answers[_grade_id(cell)]
            folder = course / "submitted" / f"s{i:03d}" / ex
            folder.mkdir(parents=True)
            nbformat.write(nb, folder / f"{ex}.ipynb")
            n += 1
    return n


def _busy_cpu_seconds() -> float:
    """CPU-seconds the whole machine spent busy since boot (every core; idle and iowait left out)."""
    with open("/proc/stat") as f:
        fields = [int(v) for v in f.readline().split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def grade(template: Path, workdir: Path, workers: int) -> dict:
    course = workdir / f"workers{workers}"
    shutil.copytree(template, course, symlinks=True)
    shutil.rmtree(EXERCISES / ".grader-results", ignore_errors=True)   # (pre-flights run again, every time)
    cmd = [str(GRADER_BIN / "python"), "-m", "grader", "autograde", "*", f"--CourseDirectory.root={course}",
           "--workers", str(workers), "--no-progress", *limits(LIMITS)]
    cpu, t = _busy_cpu_seconds(), time.monotonic()
    proc = subprocess.run(cmd, cwd=EXERCISES, env=_env(), capture_output=True, text=True)
    wall, cpu = time.monotonic() - t, _busy_cpu_seconds() - cpu
    if proc.returncode != 0:
        raise SystemExit(f"workers={workers}: autograde failed:\n{(proc.stdout + proc.stderr)[-4000:]}")
    fixed = None
    if workers:   # nbgrader's own start, per exercise: one more run with nothing due (every submission skipped)
        t = time.monotonic()
        _nbgrader(course, "autograde", "ex01_filters" if (course / "source" / "ex01_filters").is_dir() else "*")
        fixed = time.monotonic() - t
    graded = re.search(r"autograde: (\d+) of (\d+) submissions have a grade", proc.stdout)
    preflights = re.search(r"(\d+) reference solution\(s\) to check first", proc.stdout)
    sandbox = re.search(r"([\d.]+) CPU-s each in the sandboxes", proc.stdout)
    driver = re.search(r"driver +preparing ([\d.]+) s, recording \(nbgrader\) ([\d.]+) s", proc.stdout)
    return {"workers": workers, "gradings": int(graded.group(1)), "seconds": round(wall, 1),
            "busy_cpu_seconds": round(cpu, 1), "sandbox_cpu_per_grading": float(sandbox.group(1)) if sandbox else None,
            "driver_serial_seconds": round(float(driver.group(1)) + float(driver.group(2)), 1) if driver else None,
            "preflights": int(preflights.group(1)) if preflights else 0,
            "nbgrader_fixed_seconds": round(fixed, 1) if fixed else None,
            "exercises": len(list((course / "source").iterdir()))}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--students", type=int, default=4, help="students per exercise (default 4: 32 gradings)")
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4])
    ap.add_argument("--project-cores", type=int, default=16)
    ap.add_argument("--no-reference", action="store_true",
                    help="skip the one-at-a-time run (its ratios are then left out): for measuring how the pooled "
                         "runs scale with the class size, e.g. --students 2 and then 6")
    ap.add_argument("--json", type=Path, help="also write the results here")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="grading-bench-") as tmp:
        template = Path(tmp) / "template"
        n = build_class(template, args.students)
        cpu = platform.processor() or platform.machine()
        try:
            cpu = next(ln.split(":", 1)[1].strip() for ln in open("/proc/cpuinfo") if ln.startswith("model name"))
        except (OSError, StopIteration):
            pass
        print(f"{n} gradings ({args.students} students x {n // args.students} exercises) on {cpu}, "
              f"{len(os.sched_getaffinity(0))} cores")
        rows = [grade(template, Path(tmp), w) for w in ([] if args.no_reference else [0]) + args.workers]
    ref = rows[0] if rows[0]["workers"] == 0 else None
    print("\n| workers | wall s | gradings/min | vs workers 0 | busy CPU-s per grading (machine) | of which in the "
          "sandboxes | driver's serial s per grading |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for r in rows:
        r["per_minute"] = round(60 * r["gradings"] / r["seconds"], 1)
        r["cpu_per_grading"] = round(r["busy_cpu_seconds"] / r["gradings"], 2)
        r["serial_per_grading"] = round(r["driver_serial_seconds"] / r["gradings"], 2) if r["driver_serial_seconds"] \
            is not None else None
        name = "0 (inside nbgrader: the reference)" if r["workers"] == 0 else str(r["workers"])
        speedup = f"{ref['seconds'] / r['seconds']:.2f}x" if ref else "-"
        print(f"| {name} | {r['seconds']:.0f} | {r['per_minute']:.1f} | {speedup} | "
              f"{r['cpu_per_grading']:.1f} | {r['sandbox_cpu_per_grading'] or '-'} | {r['serial_per_grading'] or '-'} |")
    pooled = [r for r in rows if r["workers"] > 0 and r["serial_per_grading"] is not None]
    if pooled:
        # at scale, from the marginal costs: each grading takes its sandboxes' CPU-s on one of k - 1 cores (one
        # is the driver's), and the driver's serial seconds, less nbgrader's start (once per exercise);
        # the two overlap (the driver records exercise by exercise while the workers go on). Fixed, once: the
        # pre-flights (one grading per exercise), nbgrader's start per exercise.
        r = max(pooled, key=lambda r: r["workers"])
        k, n, ex = args.project_cores, 2400, r["exercises"]
        sandbox, fixed = r["sandbox_cpu_per_grading"], r["nbgrader_fixed_seconds"]
        serial = max(0.0, r["driver_serial_seconds"] - ex * fixed) / r["gradings"]
        total = max(n * sandbox / (k - 1), n * serial) + ex * (sandbox + fixed)
        print(f"\nmarginal costs (workers {r['workers']} run): {sandbox:.1f} CPU-s per grading in the sandboxes; "
              f"{serial:.2f} s per grading in the driver (preparing and recording; nbgrader's start, {fixed:.1f} s, "
              f"once per exercise)")
        print(f"projection to {k} cores, 300 students x 8 exercises: {total / 60:.0f} min "
              f"({60 * n / total:.0f} gradings per minute); workers-bound: {k - 1} cores x 60 s / {sandbox:.1f} CPU-s "
              f"= {60 * (k - 1) / sandbox:.0f} per minute, driver-bound: 60 s / {serial:.2f} s = "
              f"{60 / serial if serial else float('inf'):.0f} per minute")
    if args.json:
        args.json.write_text(json.dumps({"cpu": cpu, "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
