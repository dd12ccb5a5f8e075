"""The grading processes' own logic, without a sandbox (issue 27, classes 1 and 2).

* The test process's two phases: every visible part before any hidden one, and a hidden failure
  told by one fixed phrase (run here, with plain functions standing for the student's).
* The student process notices a call that replaced the grader's reporting functions (run in a
  subprocess, since the forgery patches that module)."""
from __future__ import annotations

import builtins
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "exercises"))
from grader.judge import HIDDEN_FAILURE, run_tests, split_hidden  # noqa: E402

CELL = """x = f("visible {n}")
assert x == "ok", "visible check of cell {n}: " + x
### BEGIN HIDDEN TESTS
print("hidden output 12345")
y = f("hidden {n}")
assert y == "ok", "hidden check of cell {n}: " + y
### END HIDDEN TESTS"""


def _grade(cells, answer):
    calls, results = [], {}

    def f(what):
        calls.append(what)
        return answer(what, calls)

    base = {"__name__": "__main__", "__builtins__": builtins, "f": f}
    run_tests([{"id": str(n), "source": src} for n, src in enumerate(cells)], base,
              lambda cell, outputs, seconds: results.setdefault(cell, outputs))
    return calls, results


def test_split_keeps_the_cells_line_numbers():
    visible, hidden = split_hidden(CELL.format(n=0))
    assert visible.splitlines() == CELL.format(n=0).splitlines()[:2]
    assert hidden.splitlines()[4] == 'y = f("hidden 0")'                 # line 5 of the cell, as in the source
    assert split_hidden("a = 1") == ("a = 1", None)
    inside = "for i in range(2):\n    a = i\n    ### BEGIN HIDDEN TESTS\n    b = i\n### END HIDDEN TESTS"
    assert split_hidden(inside) == ("", inside)                           # a marker inside a block: all hidden


def test_every_visible_part_runs_before_any_hidden_part():
    calls, results = _grade([CELL.format(n=n) for n in range(3)], lambda what, calls: "ok")
    assert calls == ["visible 0", "visible 1", "visible 2", "hidden 0", "hidden 1", "hidden 2"]
    assert all(outputs == [] for outputs in results.values())            # passed; hidden prints not shown


def test_what_hidden_calls_saw_cannot_reach_a_message():
    def answer(what, calls):    # repeats, in every answer, what earlier calls were given
        return "ok" if what.startswith("visible") else "saw " + ", ".join(calls[:-1])

    _, results = _grade([CELL.format(n=n) for n in range(2)], answer)
    for outputs in results.values():
        assert [(o["ename"], o["evalue"]) for o in outputs] == [("HiddenTestFailed", HIDDEN_FAILURE)]
        assert "12345" not in str(outputs) and "hidden 0" not in str(outputs)


def test_a_visible_failure_is_shown_and_its_hidden_part_skipped():
    calls, results = _grade([CELL.format(n=0)], lambda what, calls: "wrong")
    assert calls == ["visible 0"]
    (error,) = results["0"]
    assert error["ename"] == "AssertionError" and "visible check of cell 0: wrong" in error["evalue"]
    assert "(line 2 of the test cell)" in error["traceback"][0]


def test_only_the_end_of_a_cell_is_its_result():
    # the visible part ends with an expression that has a value: were it the cell's result, nbgrader would
    # read it as full marks before the hidden part's failure (it grades by the first such output)
    cell = 'x = f("visible 0")\nx\n### BEGIN HIDDEN TESTS\nassert f("hidden 0") == "ok"\n### END HIDDEN TESTS'
    _, results = _grade([cell], lambda what, calls: "ok" if what.startswith("visible") else "wrong")
    assert [o["output_type"] for o in results["0"]] == ["error"]
    _, results = _grade(['x = f("visible 0")\nx'], lambda what, calls: "ok")      # no hidden part: its end is
    assert [o["output_type"] for o in results["0"]] == ["execute_result"]           # the cell's end


FORGERY = """
import sys, torch
from grader import protocol, student

def forge(x):
    frame = sys._getframe(1)
    while frame is not None:
        if "_state_of_arguments" in frame.f_globals:
            frame.f_globals["_state_of_arguments"] = lambda a, k: []
        frame = frame.f_back
    x.add_(1)                                     # a side effect the forged report would hide
    return x

def honest(x):
    return x + 1

for fn in (honest, forge):
    request = protocol.dumps({"id": "1", "name": "f", "args": (torch.zeros(2),), "kwargs": {}, "report": True})
    answer = protocol.loads_untrusted(student._answer({"f": fn}, request))
    print(answer["ok"], answer.get("error", {}).get("type"), answer.get("error", {}).get("message", "")[:80])
"""


def test_a_call_that_replaces_the_reporting_function_is_not_graded():
    exercises = Path(__file__).resolve().parents[1] / "exercises"
    proc = subprocess.run([sys.executable, "-c", FORGERY], cwd=exercises, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    honest, forged = proc.stdout.splitlines()
    assert honest == "True None "
    assert forged.startswith("False GradingTampered during this call your code changed the grader's own functions")
