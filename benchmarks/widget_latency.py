"""How long a student waits for a widget (issue 30): each control's change to its new figure.

    .venv/bin/python benchmarks/widget_latency.py                          # notebooks 00-04
    .venv/bin/python benchmarks/widget_latency.py notebooks/05_optimization.ipynb --json out.json

Each notebook runs as ``make book`` runs it (nbclient, the course's kernel manager, real settings;
the results cache as a student has it), with two cells added (``benchmarks/widget_driver.py``): one
first that records every ``interact`` / ``interact_manual`` the notebook makes, one last that drives
them. An ``interact`` widget is called over each control's range (the other controls at their
defaults, and every slider at its minimum, then at its maximum, at once), timed from the call to its
figures drawn as PNG; an ``interact_manual`` optimisation is timed to its first live preview.

Goals (issue 30): every widget of notebooks 00-04 answers within 1 s (p95 over each control's range);
the widgets of 05-08 show their first picture within 2 s. The reference measured in the same run is
one forward + backward pass of the course model on one image (``course_lib.timing.pass_seconds``).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
MARK = "WIDGET_LATENCY "


def goal_of(notebook: str) -> float:
    return 1.0 if notebook[:2] < "05" else 2.0


def run_notebook(path: Path) -> list[dict]:
    """Run the notebook with the recording and driving cells; the driver's rows."""
    import nbformat
    from nbclient import NotebookClient

    from course_lib.headless import KernelManager

    nb = nbformat.read(path, as_version=4)
    sys.path.insert(0, str(REPO / "benchmarks"))
    from widget_driver import RECORD

    nb.cells.insert(0, nbformat.v4.new_code_cell(RECORD))
    nb.cells.append(nbformat.v4.new_code_cell(
        f"import json, sys\nsys.path.insert(0, {str(REPO / 'benchmarks')!r})\nfrom widget_driver import drive\n"
        f"print({MARK!r} + json.dumps(drive(RECORDED)))"))
    os.environ.pop("MPLBACKEND", None)   # the kernel draws inline, as in JupyterLab
    NotebookClient(nb, timeout=3600, kernel_name="python3", kernel_manager_class=KernelManager,
                   resources={"metadata": {"path": str(path.parent)}}).execute()
    text = "".join(o.get("text", "") for o in nb.cells[-1].outputs if o.get("output_type") == "stream")
    line = next(ln for ln in text.splitlines() if ln.startswith(MARK))
    return json.loads(line[len(MARK):])


def summarise(notebook: str, rows: list[dict]) -> list[dict]:
    import numpy as np

    out = []
    for r in rows:
        seconds = np.array([s["seconds"] for s in r["samples"]])
        worst = r["samples"][int(seconds.argmax())]
        out.append({"notebook": notebook, "function": r["function"], "kind": r["kind"], "control": r["control"],
                    "n": len(seconds), "median": float(np.median(seconds)),
                    "p95": float(np.percentile(seconds, 95)), "max": float(seconds.max()), "at": worst["value"],
                    "goal": goal_of(notebook), "preview": r.get("preview")})
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("notebooks", nargs="*", type=Path,
                   default=sorted((REPO / "notebooks").glob("0[0-4]_*.ipynb")))
    p.add_argument("--json", type=Path, help="also write the results here")
    args = p.parse_args(argv)
    os.environ.pop("COURSE_FAST", None)

    sys.path.insert(0, str(REPO / "benchmarks"))
    from first_run import reference_pass, write_json

    reference = reference_pass()
    table = []
    for path in args.notebooks:
        t = time.time()
        try:
            rows = summarise(path.name, run_notebook(path.resolve()))
        except Exception as e:  # noqa: BLE001 - the other notebooks still run
            print(f"{path.name}: failed: {type(e).__name__}: {str(e)[-2000:]}", flush=True)
            continue
        table += rows
        print(f"{path.name}: {len(rows)} control(s), run and driven in {time.time() - t:.0f} s", flush=True)
    print("\n| notebook | widget | control | values | median s | p95 s | slowest (at) | goal met |\n"
          "| --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in table:
        what = "first preview" if r["preview"] else ("run" if r["kind"] == "manual" else "")
        print(f"| {r['notebook'][:2]} | `{r['function']}` | {r['control']} {what} | {r['n']} | {r['median']:.2f} | "
              f"{r['p95']:.2f} | {r['max']:.2f} ({r['at']}) | {'yes' if r['p95'] <= r['goal'] else 'no'} |")
    if args.json:
        write_json(args.json, "rows", table, reference)
    return 0


if __name__ == "__main__":
    sys.exit(main())
