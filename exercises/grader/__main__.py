"""Command line of the grader (run it with the grader venv's Python, from anywhere):

    python -m grader check                      can a sandbox be started here?
    python -m grader validate NOTEBOOK...       nbgrader's Validator, run through the sandbox:
                                                a source notebook must pass every test cell,
    python -m grader validate --release NB...   a released one must fail every test cell.
    python -m grader collect FOLDER [DEST]      copy submissions (<student>/<exercise>/<files>) into
                                                DEST (default: exercises/submitted): of each, the
                                                notebook (also found as "<ex> (1).ipynb", one folder
                                                down...; at most 64 MiB) and timestamp.txt only,
                                                regular files, never through a link; prints what
                                                was refused (the feedback says it too).
    python -m grader scrub [FOLDER]             before grading FOLDER (default: exercises/submitted):
                                                remove links and special files, move folders with
                                                unsafe ids into refused/, leave exactly the notebook
                                                and timestamp.txt in each submission (the rest goes
                                                to refused/, within a cap; beyond it, deleted), set
                                                aside unreadable timestamps (notes for the feedback).
    python -m grader autograde ASSIGNMENT [nbgrader options]
                                                scrub, nbgrader autograde, then check that every
                                                submission has a grade; one nbgrader failed on is
                                                set aside and graded as an empty notebook, with
                                                the reason in its feedback (exit 1 if any is left).

``nbgrader validate`` itself always exits 0; this exits 1 when a notebook does not validate,
and prints the failing cells. ``--json`` prints the Validator's result dictionaries instead.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def _config():
    from traitlets.config.loader import PyFileConfigLoader

    return PyFileConfigLoader("nbgrader_config.py", path=str(HERE.parent)).load_config()


def _settings(pairs) -> dict:
    """``["SandboxedExecute.timeout=60", ...]`` as ``{("SandboxedExecute", "timeout"): 60}``."""
    import ast

    out = {}
    for pair in pairs or ():
        key, _, value = pair.partition("=")
        section, _, name = key.lstrip("-").partition(".")
        try:
            out[(section, name)] = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            out[(section, name)] = value
    return out


def validate(paths, release: bool = False, settings=None):
    """``{path: Validator result}`` for each notebook (an empty result means: as expected).

    A source notebook that validates is a reference solution that passes its own tests in the sandbox,
    with these limits: what ``autograde``'s pre-flight checks. It is recorded as such
    (:func:`grader.pool.record_preflights`), so the next ``autograde`` with the same limits, code and
    Python does not run it again."""
    from nbgrader.preprocessors import CheckCellMetadata, ClearOutput
    from nbgrader.validator import Validator

    from .execute import SandboxedExecute
    from .pool import preflight_key, record_preflights, reference_failures

    class Recording(SandboxedExecute):   # keeps the executed notebook, for the pre-flight record
        executed = None

        def preprocess(self, nb, resources):
            nb, resources = super().preprocess(nb, resources)
            Recording.executed = nb
            return nb, resources

    cfg = _config()
    for (section, name), value in (settings or {}).items():
        cfg[section][name] = value
    limits = {name: value for (section, name), value in (settings or {}).items() if section == "SandboxedExecute"}
    python = SandboxedExecute(config=cfg).python
    results, passed = {}, {}
    for p in paths:
        v = Validator(config=cfg, preprocessors=[CheckCellMetadata, ClearOutput, Recording])
        v.invert = release
        Recording.executed = None
        # released notebooks carry checksums; the source ones do not
        results[str(p)] = v.validate(os.path.abspath(p))
        if not release and not results[str(p)] and Recording.executed is not None \
                and not reference_failures(Recording.executed):   # autograde's pre-flight, passed
            text = Path(p).read_text(encoding="utf-8")
            passed[preflight_key(text, limits, python)] = f"{Path(p).parent.name}/{Path(p).stem}"
    record_preflights(passed)
    return results


def _report(command: str, run) -> int:
    """Run ``run() -> (report lines, summary or None)`` and print them prefixed by ``command``;
    a ValueError (a source we refuse) goes to stderr with exit status 2."""
    try:
        lines, summary = run()
    except ValueError as err:
        print(f"{command}: {err}", file=sys.stderr)
        return 2
    for line in lines + ([summary] if summary else []):
        print(f"{command}: {line}")
    return 0


# --------------------------------------------------------------------------- autograde

_STUDENT_KEYS = ("--student", "--CourseDirectory.student_id")
_ASSIGNMENT_KEYS = ("--assignment", "--CourseDirectory.assignment_id")
_EXCLUDE_KEY = "--CourseDirectory.student_id_exclude"


def _split_args(args):
    """``nbgrader autograde`` arguments as (assignment, student pattern, excluded ids, course root, the rest).
    Options take their value as ``--Class.trait=value`` (or ``--student X``)."""
    assignment, student, exclude, root, rest = None, "*", set(), None, []
    i = 0
    while i < len(args):
        arg = args[i]
        key, eq, value = arg.partition("=")
        if key in _STUDENT_KEYS + _ASSIGNMENT_KEYS + (_EXCLUDE_KEY, "--CourseDirectory.root"):
            if not eq and i + 1 < len(args):
                i, value = i + 1, args[i + 1]
            if key in _STUDENT_KEYS:
                student = value
            elif key in _ASSIGNMENT_KEYS:
                assignment = value
            elif key == _EXCLUDE_KEY:
                exclude |= {s for s in value.split(",") if s}
                rest.append(f"{key}={value}")
            else:
                root = value
                rest.append(f"{key}={value}")
        elif not arg.startswith("-") and assignment is None:
            assignment = arg
        else:
            rest.append(arg)
        i += 1
    root = Path(root or os.environ.get("COURSE_EXERCISES_ROOT") or HERE.parent).absolute()
    return assignment, student, exclude, root, rest


def _submissions(root: Path, assignment: str, student: str, exclude) -> dict[tuple[str, str], list[str]]:
    """{(student, exercise): the exercise's notebooks} for every safe submission folder nbgrader will grade."""
    from fnmatch import fnmatchcase

    from .collect import SAFE_NAME

    sub, found = root / "submitted", {}
    for s in sorted(os.listdir(sub)) if sub.is_dir() else ():
        if not SAFE_NAME.match(s) or s in exclude or not fnmatchcase(s, student) or not (sub / s).is_dir():
            continue
        for a in sorted(os.listdir(sub / s)):
            src = root / "source" / a
            if SAFE_NAME.match(a) and fnmatchcase(a, assignment) and (sub / s / a).is_dir() and src.is_dir():
                found[(s, a)] = sorted(p.stem for p in src.glob("*.ipynb"))
    return found


def _in_gradebook(root: Path) -> set[tuple[str, str]] | None:
    """The (student, exercise) pairs with a submission in the gradebook, read at once (None: outside the
    grader venv, where the files are the record)."""
    try:
        from nbgrader.api import Gradebook
    except ImportError:
        return None
    if not (root / "gradebook.db").exists():
        return set()
    with Gradebook(f"sqlite:///{root / 'gradebook.db'}") as gb:
        return {(sub.student_id, assignment.name) for assignment in gb.assignments for sub in assignment.submissions}


def _recorded(root: Path, s: str, a: str, notebooks, known=False) -> bool:
    """Is there a grade for this submission: an autograded notebook for every notebook submitted (nbgrader
    gives zero to the missing ones itself, but only when at least one was there), and a gradebook entry?
    ``known``: :func:`_in_gradebook`, read once for many submissions (default: read here)."""
    submitted = [n for n in notebooks if os.path.lexists(root / "submitted" / s / a / f"{n}.ipynb")]
    if not submitted or not all((root / "autograded" / s / a / f"{n}.ipynb").is_file() for n in submitted):
        return False
    known = _in_gradebook(root) if known is False else known
    return known is None or (s, a) in known


def _failures(log: str) -> dict[tuple[str, str], str]:
    """{(student, exercise): the exception} for each submission nbgrader's log says it failed on."""
    import re

    found = {}
    for m in re.finditer(r"There was an error processing assignment: (\S+)\n"
                         r"(?:\[\w+ \| \w+\] )?(Traceback.*\n(?:(?!\[\w+ \| ).*\n?)*)?", log):
        parts = Path(m.group(1)).parts
        lines = [ln.strip() for ln in (m.group(2) or "").splitlines() if ln.strip()]
        found[(parts[-2], parts[-1])] = lines[-1][:300] if lines else "no reason given"
    for m in re.finditer(r"There was an error processing assignment '([^']*)' for student '([^']*)'", log):
        found.setdefault((m.group(2), m.group(1)), "no reason given")
    return found


def _run_nbgrader(nbgrader, args) -> tuple[int, str]:
    """Run nbgrader, echoing its output, and return (exit status, output)."""
    import subprocess

    print("autograde: running nbgrader", " ".join(args), flush=True)
    proc = subprocess.Popen([*nbgrader, *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            errors="replace")
    out = []
    for line in proc.stdout:
        sys.stdout.write(line)
        out.append(line)
    return proc.wait(), "".join(out)


def _regrade(nbgrader, root, pairs, rest, log: list[str]) -> None:
    """Grade these submissions again (--force), one nbgrader run per exercise, the others excluded."""
    everyone = sorted(p.name for p in (root / "submitted").iterdir() if p.is_dir())
    for a in sorted({a for _, a in pairs}):
        students = sorted(s for s, x in pairs if x == a)
        select = ([f"--CourseDirectory.student_id={students[0]}"] if len(students) == 1 else
                  [f"{_EXCLUDE_KEY}={','.join(s for s in everyone if s not in students)}"])
        rest_a = [r for r in rest if not r.startswith(_EXCLUDE_KEY + "=")] if len(students) > 1 else rest
        log.append(_run_nbgrader(nbgrader, ["autograde", a, "--force", *rest_a, *select])[1])


_POOL_KEYS = ("--workers", "--scheduler")


def _pool_args(args):
    """(workers, scheduler, progress, the other arguments): this driver's own options, taken out of
    ``nbgrader autograde``'s."""
    workers, scheduler, progress, rest = None, None, True, []
    i = 0
    while i < len(args):
        key, eq, value = args[i].partition("=")
        if key in _POOL_KEYS:
            if not eq:
                if i + 1 >= len(args):
                    raise ValueError(f"{key} needs a value")
                i, value = i + 1, args[i + 1]
            if key == "--workers":
                if not value.isdigit():
                    raise ValueError(f"--workers takes a number (0: run every notebook inside nbgrader), not {value!r}")
                workers = int(value)
            else:
                scheduler = value
        elif args[i] == "--no-progress":
            progress = False
        else:
            rest.append(args[i])
        i += 1
    if workers is None and os.environ.get("WORKERS", "").strip():
        value = os.environ["WORKERS"].strip()
        if not value.isdigit():
            raise ValueError(f"WORKERS takes a number, not {value!r}")
        workers = int(value)
    return workers, scheduler, progress, rest


def _execute_settings(rest) -> dict:
    """The ``--SandboxedExecute.NAME=VALUE`` options (limits), which the workers must use too."""
    return {name: value for (section, name), value in _settings(
        [r for r in rest if r.startswith("--SandboxedExecute.") and "=" in r]).items()}


def autograde(args, nbgrader=None) -> int:
    """``python -m grader autograde [ASSIGNMENT] [--workers N | --scheduler ADDRESS] [--no-progress]
    [nbgrader autograde options]`` (what ``make autograde`` runs):

    1. ``scrub`` the submissions folder (links, unsafe ids, unreadable timestamps, everything beside
       the notebook, a notebook under another obvious name or missing; see :func:`collect.scrub`);
    2. choose what is due: new submissions, those changed since they were graded (their files, the
       exercise, the limits or the grading code: :func:`pool.stamp`), and all with ``--force``;
    3. pre-flight, then run the due notebooks side by side (:mod:`grader.pool`): ``--workers N``
       processes on this machine (default: ``WORKERS``, else what its cores and memory allow;
       ``0``: inside nbgrader, one at a time, with no pre-flight), or the workers of a Dask cluster
       (``--scheduler tcp://HOST:8786``). If the grading side cannot grade, stop here: exit 2,
       nothing written;
    4. ``nbgrader autograde`` with these arguments, in this one process: it records every grade,
       taking each notebook's run from step 3;
    5. check that every due submission has its grade (an autograded notebook and a gradebook
       entry). Those that do not are graded again on their own (a run that ended early for another
       student's sake); those that still fail -- nbgrader itself failed on them -- are set aside
       into ``refused/<student>/<exercise>/``, replaced by an empty notebook and graded again, with
       a note in the feedback saying why: every submission gets a grade and a reason. If even the
       empty notebook cannot be graded, the problem is not the submission: it is put back, and
       this exits 1;
    6. print a table: graded, refused (with reasons), crashed, the slowest submissions, the time.
    """
    from . import pool
    from .collect import EMPTY_NOTEBOOK, quarantine, quote, rebind_notes, scrub, set_note, sha256_file

    started = time.monotonic()
    try:
        workers, scheduler, progress, args = _pool_args(list(args))
    except ValueError as err:
        print(f"autograde: {err}", file=sys.stderr)
        return 2
    assignment, student, exclude, root, rest = _split_args(args)
    if not assignment:
        print("autograde: name the exercise(s) to grade, e.g. \"*\" or ex04_cam", file=sys.stderr)
        return 2
    sub = root / "submitted"
    refused = []
    if sub.is_dir() or sub.is_symlink():
        try:
            lines = scrub(sub)
        except ValueError as err:
            print(f"autograde: {err}", file=sys.stderr)
            return 2
        for line in lines:
            print(f"scrub: {line}")
        refused += lines
    todo = _submissions(root, assignment, student, exclude)
    if not todo:
        print(f"autograde: nothing to grade in {sub} (exercise {assignment!r}, student {student!r})", file=sys.stderr)
        return 1
    settings = _execute_settings(rest)
    broken = _grading_side_problem(settings) if workers != 0 or scheduler else None
    if broken:
        print(f"autograde: the grading side cannot grade: {broken}\nautograde: nothing was graded", file=sys.stderr)
        return 2
    force = "--force" in rest or "-f" in rest
    state = pool.load_state(root)
    stamps = {p: pool.stamp(root, *p, nbs, settings) for p, nbs in todo.items()}
    graded_before, known = state.get("graded", {}), _in_gradebook(root)
    due = {p: nbs for p, nbs in todo.items()
           if force or graded_before.get("/".join(p)) != stamps[p] or not _recorded(root, *p, nbs, known)}
    if not due:
        print(f"autograde: all {len(todo)} submission(s) are graded and unchanged since (--force grades them again)")
        return 0
    if len(due) < len(todo):
        print(f"autograde: {len(todo) - len(due)} submission(s) unchanged since they were graded; grading {len(due)}")
    for s, a in due:   # (nbgrader regrades only newer timestamps by itself: a changed notebook is graded again)
        done = root / "autograded" / s / a
        if not force and done.is_dir() and not done.is_symlink():
            shutil.rmtree(done)
    nbgrader = list(nbgrader or [str(Path(sys.executable).parent / "nbgrader")])
    select = [f"--CourseDirectory.student_id={student}"] if student != "*" else []
    if workers != 0 or scheduler:   # the workers run the notebooks; this process records each exercise when done
        rest = [*rest, f"--SandboxedExecute.results={root / pool.RESULTS}"]
        recorder = _Recorder(nbgrader, rest, select)
        try:
            outcome = pool.run(root, due, settings, workers=workers, scheduler=scheduler, progress=progress,
                               on_exercise=recorder.add)
        except (OSError, TimeoutError) as e:   # (the scheduler cannot be reached, a pool cannot start)
            recorder.finish()
            print(f"autograde: the workers cannot be reached: {type(e).__name__}: {e}\nautograde: no grade was "
                  f"written", file=sys.stderr)
            return 2
        status, logs = recorder.finish()
        outcome.record_seconds = recorder.seconds
        if outcome.broken:
            print(f"autograde: the grading side cannot grade: {outcome.broken}\nautograde: "
                  + (f"grades were written for {', '.join(recorder.done)} only" if recorder.done else
                     "no grade was written") + "; fix it and run again", file=sys.stderr)
            return 2
    else:
        outcome = pool.Outcome()
        status, first = _run_nbgrader(nbgrader, ["autograde", assignment, *rest, *select])
        logs = [first]
    broken = next(filter(None, map(_grading_side_failure, logs)), None)
    if broken:
        print(f"autograde: the grading side failed: {broken}", file=sys.stderr)
        return 2
    known = _in_gradebook(root)
    missing = [p for p, nbs in due.items() if not _recorded(root, *p, nbs, known)]
    if missing:  # graded again on their own: nbgrader may have stopped early because of another one
        print(f"autograde: no grade yet for {', '.join('/'.join(p) for p in missing)}: grading again alone")
        _regrade(nbgrader, root, missing, rest, logs)
        missing = [p for p in missing if not _recorded(root, *p, todo[p])]
    failures = {}
    for log in logs:
        failures.update(_failures(log))
    if len(missing) > 1 and len(missing) == len(due):  # nothing could be graded: not the submissions' fault
        print(f"autograde: none of the {len(due)} submissions could be graded (nbgrader exited with status "
              f"{status}): a problem on the grading side, see above", file=sys.stderr)
        return 1
    set_aside = {}
    for s, a in missing:
        folder = sub / s / a
        present = [n for n in todo[(s, a)] if os.path.lexists(folder / f"{n}.ipynb")]
        if present:
            reason = failures.get((s, a), "no reason given")
            note = (f"The grading program failed on your notebook ({quote(reason, 200)}); your notebook was set "
                    f"aside for your instructor, and your submission was graded as an empty notebook.")
        else:
            others = sorted(p.name for p in folder.iterdir())[:5]
            reason = f"no {' or '.join(n + '.ipynb' for n in todo[(s, a)])} in it"
            note = (f"Your submission has no notebook named {', '.join(n + '.ipynb' for n in todo[(s, a)])} "
                    f"(it has {len(others)} other file(s)); it was graded as an empty notebook.")
        refused.append(f"{s}/{a}: {reason}")
        lines: list[str] = []
        moved = {n: quarantine(folder / f"{n}.ipynb", root / "refused" / s / a, f"{s}/{a}:",
                               f"nbgrader failed on it ({reason})", lines) for n in present}
        for line in lines:
            print(f"autograde: {line}")
        hashes = {}
        for n in todo[(s, a)]:  # (the notes about the original, e.g. its timestamp, stay)
            hashes[n] = sha256_file(moved[n]) if n in moved else None
            (folder / f"{n}.ipynb").write_bytes(EMPTY_NOTEBOOK)
            rebind_notes(root, s, a, f"{n}.ipynb", hashes[n], sha256_file(folder / f"{n}.ipynb"))
        set_note(root, s, a, "driver", note,
                 {f"{n}.ipynb": sha256_file(folder / f"{n}.ipynb") for n in todo[(s, a)]})
        set_aside[(s, a)] = (moved, hashes)
    if set_aside:
        _regrade(nbgrader, root, list(set_aside), rest, logs)
    failed = []
    for (s, a), (moved, hashes) in set_aside.items():
        if _recorded(root, s, a, todo[(s, a)]):
            print(f"autograde: {s}/{a}: graded as an empty notebook, with the reason in its feedback")
            continue
        failed.append((s, a))  # even an empty notebook fails: not the submission's fault; undo
        set_note(root, s, a, "driver", None)
        for n in todo[(s, a)]:
            empty = sub / s / a / f"{n}.ipynb"
            rebind_notes(root, s, a, f"{n}.ipynb", sha256_file(empty), hashes[n])
            os.unlink(empty)
        for n, target in moved.items():
            os.replace(target, sub / s / a / f"{n}.ipynb")
            os.unlink(f"{target}.txt")
        print(f"autograde: {s}/{a}: could not be graded even as an empty notebook (a problem on the grading "
              f"side); the submission was put back", file=sys.stderr)
    state = pool.load_state(root)   # (the stamps of what is now graded: a second run skips them)
    graded, known = state.setdefault("graded", {}), _in_gradebook(root)
    for p in due:
        if p not in set_aside and _recorded(root, *p, todo[p], known):
            graded["/".join(p)] = stamps[p]     # (what was read when it was chosen: a later change is due next time)
        else:
            graded.pop("/".join(p), None)
    pool.save_state(root, state)
    pool.clear_results(root)
    done = len(due) - len(failed)
    outcome.seconds = outcome.seconds or 0.0
    for line in pool.summary(outcome, done, len(due), refused, failed):
        print(f"autograde: {line}")
    print(f"autograde: {done} of {len(due)} submissions have a grade, in {time.monotonic() - started:.0f} s"
          + (f" (nbgrader exited with status {status}; see above)" if status and not failed else ""))
    return 1 if failed else 0


class _Recorder:
    """Runs ``nbgrader autograde EXERCISE`` for each exercise handed to :meth:`add`, one at a time, in a
    thread of this process (the only one that writes the gradebook), while the workers go on."""

    def __init__(self, nbgrader, rest, select):
        import queue
        import threading

        self.nbgrader, self.rest, self.select = nbgrader, rest, select
        self.queue: queue.Queue = queue.Queue()
        self.status, self.logs, self.done, self.seconds = 0, [], [], 0.0
        self.thread = threading.Thread(target=self._work, daemon=True)
        self.thread.start()

    def add(self, exercise: str) -> None:
        self.queue.put(exercise)

    def _work(self) -> None:
        while (exercise := self.queue.get()) is not None:
            t = time.monotonic()
            status, log = _run_nbgrader(self.nbgrader, ["autograde", exercise, *self.rest, *self.select])
            self.seconds += time.monotonic() - t
            self.status, self.logs = max(self.status, status), self.logs + [log]
            self.done.append(exercise)

    def finish(self) -> tuple[int, list[str]]:
        self.queue.put(None)
        self.thread.join()
        return self.status, self.logs


def _grading_side_problem(settings) -> str | None:
    """Why no sandbox can run here (None: one can): checked before anything is graded."""
    from . import sandbox
    from .pool import _sandboxed_execute

    try:
        sandbox.check(_sandboxed_execute(settings).python)
    except (sandbox.SandboxUnavailable, OSError, subprocess.SubprocessError) as e:
        return str(e)
    return None


def _grading_side_failure(log: str) -> str | None:
    """The first GradingSideError in nbgrader's log (None: there was none)."""
    import re

    m = re.search(r"GradingSideError: (.*)", log)
    return m.group(1)[:800] if m else None


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m grader", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    sub.add_parser("check", help="check that a sandbox can be started")
    v = sub.add_parser("validate", help="validate notebooks (source: all tests pass; --release: all fail)")
    v.add_argument("notebooks", nargs="+")
    v.add_argument("--release", action="store_true")
    v.add_argument("--json", action="store_true")
    v.add_argument("--set", action="append", metavar="Class.trait=value",
                   help="override a setting, e.g. --set SandboxedExecute.timeout=60")
    c = sub.add_parser("collect", help="copy submissions safely (regular files only, no links)")
    c.add_argument("folder", type=Path)
    c.add_argument("dest", type=Path, nargs="?", default=HERE.parent / "submitted")
    sc = sub.add_parser("scrub", help="remove links and special files, quarantine unsafe ids, before grading")
    sc.add_argument("folder", type=Path, nargs="?", default=HERE.parent / "submitted")
    sub.add_parser("autograde", add_help=False,
                   help="scrub, nbgrader autograde, then make sure every submission has a grade and a reason")
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["autograde"]:  # everything after it is nbgrader's
        return autograde(argv[1:])
    args = ap.parse_args(argv)
    if args.cmd == "scrub":
        from .collect import scrub

        if not args.folder.exists():
            return 0
        return _report("scrub", lambda: (scrub(args.folder), None))
    if args.cmd == "collect":
        from .collect import collect

        def run():
            copied, report = collect(args.folder, args.dest)
            return report, f"{copied} files copied into {args.dest}"
        return _report("collect", run)
    if args.cmd == "check":
        from . import sandbox
        from .execute import SandboxedExecute

        python = SandboxedExecute(config=_config()).python
        sandbox.check(python)
        print(f"sandbox: ok ({python})")
        return 0
    results = validate(args.notebooks, release=args.release, settings=_settings(args.set))
    if args.json:
        print(json.dumps(results, indent=1))
    ok = True
    for path, res in results.items():
        if not res:
            if not args.json:
                print(f"ok: {path}")
            continue
        ok = False
        if not args.json:
            print(f"FAILED: {path}")
            for kind, cells in res.items():
                for c in cells:
                    print(f"  [{kind}] {c.get('source', '')[:300]!r}")
                    if c.get("raw_error"):
                        print("    " + c["raw_error"][-1500:].replace("\n", "\n    "))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
