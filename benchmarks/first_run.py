"""A student's first Run All: each notebook alone, real settings, nothing cached (issue 30).

    .venv/bin/python benchmarks/first_run.py                 # every notebook, one after the other
    .venv/bin/python benchmarks/first_run.py notebooks/05_optimization.ipynb --json out.json
    .venv/bin/python benchmarks/first_run.py notebooks/05_optimization.ipynb --keep build/first_run   # and keep what it printed

Each notebook runs as ``make book`` runs it (``tools/book.py``: nbclient with the course's kernel
manager), with ``COURSE_FAST`` unset and ``COURSE_CACHE=0`` (the results cache off: what a student's
first run computes), alone on the machine with all its cores. Printed per notebook: its seconds
against the goal (4 minutes) and its slowest cells, from the kernel's own timestamps
(``metadata.execution``). The reference measured in the same run: one forward + backward pass of the
course model on one image (``course_lib.timing.pass_seconds``), so that runs on different machines can
be compared as multiples of it.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
GOAL = 240.0   # seconds: issue 30's "each notebook's first Run All, alone, real settings, empty cache"


def reference_pass() -> float:
    """The reference of a run, measured and printed with the machine: one forward + backward pass of the
    course model on one image (``course_lib.timing.pass_seconds``), in seconds."""
    from course_lib.models import load_model
    from course_lib.timing import cpu_name, has_bf16_units, pass_seconds

    reference = pass_seconds(load_model("course"), backward=True)
    print(f"CPU: {cpu_name()} ({os.cpu_count()} cores, bf16 units: {'yes' if has_bf16_units() else 'no'}); "
          f"reference: one forward + backward of the course model, one image, {reference * 1000:.1f} ms", flush=True)
    return reference


def write_json(path: Path, rows_name: str, rows: list, reference: float) -> None:
    """The results of a run, with the machine and its reference pass."""
    from course_lib.timing import cpu_name

    path.write_text(json.dumps({"cpu": cpu_name(), "cores": os.cpu_count(), "reference_seconds": reference,
                                rows_name: rows}, indent=1))


def cell_seconds(nb) -> list[tuple[float, int, str]]:
    """``(seconds, cell index, first line)`` of every executed code cell, slowest first."""
    out = []
    for i, cell in enumerate(nb.cells):
        ex = cell.get("metadata", {}).get("execution", {})
        start, end = ex.get("iopub.execute_input"), ex.get("shell.execute_reply")
        if cell.cell_type != "code" or not (start and end):
            continue
        seconds = (datetime.fromisoformat(end.replace("Z", "+00:00"))
                   - datetime.fromisoformat(start.replace("Z", "+00:00"))).total_seconds()
        first = next((ln for ln in cell.source.splitlines() if ln.strip() and not ln.startswith("%")), "")
        out.append((seconds, i, first[:70]))
    return sorted(out, reverse=True)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("notebooks", nargs="*", type=Path,
                   default=sorted((REPO / "notebooks").glob("[0-9][0-9]_*.ipynb")))
    p.add_argument("--cells", type=int, default=3, help="slowest cells shown per notebook")
    p.add_argument("--json", type=Path, help="also write the results here")
    p.add_argument("--keep", type=Path, help="keep the executed notebooks and their HTML in this folder (to read "
                   "the numbers and look at the figures the prose describes)")
    args = p.parse_args(argv)

    os.environ.pop("COURSE_FAST", None)
    os.environ["COURSE_CACHE"] = "0"
    sys.path.insert(0, str(REPO / "tools"))
    import nbformat
    from book import run_one

    reference = reference_pass()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        out = args.keep or Path(tmp)
        (out / "executed").mkdir(parents=True, exist_ok=True)
        (out / "html").mkdir(exist_ok=True)
        for path in args.notebooks:
            seconds = run_one(path.resolve(), out, cell_timeout=3600)
            cells = cell_seconds(nbformat.read(out / "executed" / path.name, as_version=4))
            rows.append({"notebook": path.name, "seconds": round(seconds, 1), "in_references": round(seconds / reference),
                         "slowest_cells": [{"seconds": round(s, 1), "cell": i, "code": c} for s, i, c in cells[:args.cells]],
                         "finished": time.strftime("%H:%M:%S")})
            print(f"{path.name}: {seconds:.0f} s ({'within' if seconds <= GOAL else 'over'} the {GOAL:.0f} s goal); "
                  + "; ".join(f"cell {i} {s:.0f} s `{c}`" for s, i, c in cells[:args.cells]), flush=True)
    print("\n| notebook | first run, s | goal 240 s | slowest cells (s) |\n| --- | --- | --- | --- |")
    for r in rows:
        cells = ", ".join(f"{c['seconds']:.0f} (cell {c['cell']})" for c in r["slowest_cells"])
        print(f"| {r['notebook']} | {r['seconds']:.0f} | {'yes' if r['seconds'] <= GOAL else 'no'} | {cells} |")
    total = sum(r["seconds"] for r in rows)
    print(f"| all, one after the other | {total:.0f} | | |")
    if args.json:
        write_json(args.json, "notebooks", rows, reference)
    return 0


if __name__ == "__main__":
    sys.exit(main())
