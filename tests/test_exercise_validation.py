"""Every exercise through nbgrader's Validator, in the sandbox (``python -m grader validate``): each
source notebook passes all its tests, each released notebook fails all of them (no test that cannot
fail), and a source notebook that passes is recorded as ``autograde``'s pre-flight for those limits.

The notebooks are the committed ones (``test_exercises.py`` checks that ``exercises/release/`` is what
``make release`` makes from ``exercises/source/``). This file runs early in ``make test``: the
pre-flights it records are the ones the grading tests after it would otherwise run again (they all
grade with ``LIMITS``).
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

from test_exercises import (  # noqa: F401 - grader_ready is a fixture
    ASSIGNMENTS, EXERCISES, LIMITS, grader_python, grader_ready)

sys.path.insert(0, str(EXERCISES))


def _validate(paths, release=False) -> dict:
    settings = [f"--set=SandboxedExecute.{k}={v}" for k, v in LIMITS.items()]
    proc = grader_python("-m", "grader", "validate", "--json", *settings, *(["--release"] if release else []),
                         *map(str, paths))
    assert proc.returncode in (0, 1), proc.stderr[-4000:]
    return json.loads(proc.stdout[proc.stdout.index("{"):])


def _preflight_keys(paths) -> dict:
    """{source notebook: the key of its pre-flight with LIMITS}, as ``autograde`` computes it (in the
    grader's Python, with the environment it grades in)."""
    code = ("import json, sys\n"
            "from grader.pool import _sandboxed_execute, preflight_key\n"
            f"limits, paths = {LIMITS!r}, {[str(p) for p in paths]!r}\n"
            "python = _sandboxed_execute(limits).python\n"
            "print(json.dumps({p: preflight_key(open(p, encoding='utf-8').read(), limits, python) for p in paths}))")
    proc = grader_python("-c", code)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return {Path(p): key for p, key in json.loads(proc.stdout).items()}


def test_source_notebooks_pass_their_own_tests_and_count_as_checked(grader_ready):
    """With the solutions, every test cell passes; each passing reference is recorded as checked."""
    from grader.pool import PREFLIGHT

    paths = [EXERCISES / "source" / a / f"{a}.ipynb" for a in ASSIGNMENTS]
    results = _validate(paths)
    assert results == {str(p): {} for p in paths}, json.dumps(results, indent=1)[:6000]
    recorded = json.loads(PREFLIGHT.read_text())
    for path, key in _preflight_keys(paths).items():
        assert recorded.get(key) == f"{path.parent.name}/{path.stem}", (path, key)


def test_released_notebooks_fail_every_test(grader_ready):
    """Without solutions, no test cell passes (no test that cannot fail), and the checksums are intact."""
    paths = [EXERCISES / "release" / a / f"{a}.ipynb" for a in ASSIGNMENTS]
    results = _validate(paths, release=True)
    assert results == {str(p): {} for p in paths}, json.dumps(results, indent=1)[:6000]
