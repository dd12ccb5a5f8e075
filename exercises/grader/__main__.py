"""Command line of the grader (run it with the grader venv's Python, from anywhere):

    python -m grader check                      can a sandbox be started here?
    python -m grader validate NOTEBOOK...       nbgrader's Validator, run through the sandbox:
                                                a source notebook must pass every test cell,
    python -m grader validate --release NB...   a released one must fail every test cell.
    python -m grader collect FOLDER [DEST]      copy submissions (<student>/<exercise>/<files>) into
                                                DEST (default: exercises/submitted): regular files
                                                only, never through a link; prints what was refused.
    python -m grader scrub [FOLDER]             remove links and special files under FOLDER
                                                (default: exercises/submitted) before grading.

``nbgrader validate`` itself always exits 0; this exits 1 when a notebook does not validate,
and prints the failing cells. ``--json`` prints the Validator's result dictionaries instead.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
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
    """``{path: Validator result}`` for each notebook (an empty result means: as expected)."""
    from nbgrader.preprocessors import CheckCellMetadata, ClearOutput
    from nbgrader.validator import Validator

    from .executor import SandboxedExecute

    cfg = _config()
    for (section, name), value in (settings or {}).items():
        cfg[section][name] = value
    results = {}
    for p in paths:
        v = Validator(config=cfg, preprocessors=[CheckCellMetadata, ClearOutput, SandboxedExecute])
        v.invert = release
        # released notebooks carry checksums; the source ones do not
        results[str(p)] = v.validate(os.path.abspath(p))
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
    sc = sub.add_parser("scrub", help="remove links and special files from the submissions folder")
    sc.add_argument("folder", type=Path, nargs="?", default=HERE.parent / "submitted")
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
        from .executor import SandboxedExecute

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
