"""Copies of every course notebook with their one-line model switch made, for nbval (`make test-models`).

    python tools/switch_model.py OUT course resnet18 vgg16

Each notebook's parameters cell says ``MODEL_NAME = "course"``; a student changes that one line to
``"resnet18"`` or ``"vgg16"``. This makes that edit on a copy of every notebook, in ``OUT/<model>/``,
and writes torchvision's weight files for the ImageNet models into ``OUT/torch_home`` (random weights
under the real file names, ``tools/fake_torch_home.py``), so nothing is downloaded: the pictures are
noise, but every layer name and code path is the real model's. In the smoke setting the copies run an
ImageNet model at 112 px instead of 224 (two lines added after the notebook loads it: the same layers and
code, a quarter of the pixels). Then

    COURSE_FAST=smoke TORCH_HOME=OUT/torch_home pytest --nbval-lax -n 2 --dist loadfile OUT

runs every copy cell by cell and fails on any error output, interactive widgets' included (nbval reads
the kernel's messages itself, so the lost wake-up of jupyter/nbclient#312 does not arise). In the copies
of notebooks that fall back to the course model when a model is unavailable, a last cell checks that
no fallback happened. ``COURSE_FAST=smoke`` is fast mode with fewer images and steps still (each
parameters cell lists what it cuts): the runs check that the code runs with each model's layers, not
the numbers.
"""
from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import nbformat

REPO = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((REPO / "notebooks").glob("[0-9][0-9]_*.ipynb"))
LINE = re.compile(r'^MODEL_NAME = "course"', re.M)
FALLBACK = "uses the course model instead"
LOAD = re.compile(r"^( *)model = load_model\(MODEL_NAME\).*$", re.M)
SMOKE_SIZE = 112
SMALLER = ("if os.environ.get('COURSE_FAST') == 'smoke':  # added by tools/switch_model.py: smaller images, same code\n"
           "    model.input_size = min(model.input_size, {size})")
#: the class a notebook's ``model`` has when the switch worked
CLASS = {"course": "CourseNet", "resnet18": "ResNet", "vgg16": "VGG", "vgg19": "VGG", "alexnet": "AlexNet",
         "squeezenet1_1": "SqueezeNet"}


def switched(path: Path, model: str, smoke_size: int | None = SMOKE_SIZE) -> nbformat.NotebookNode:
    """The notebook with its parameters cell's MODEL_NAME line changed to ``model``, as a student would.

    For an ImageNet model, the copy also runs it at ``smoke_size`` pixels instead of its own 224 in the smoke
    setting (two lines after the one that loads ``model``): the same layers and code paths, a quarter of the
    work (vgg16 at 224 px was most of ``make test-models``). ``None``: at the model's own size."""
    nb = nbformat.read(path, as_version=4)
    cell = next(c for c in nb.cells if "parameters" in c.metadata.get("tags", []))
    cell.source, n = LINE.subn(f'MODEL_NAME = "{model}"', cell.source)
    if n != 1:
        raise ValueError(f"{path.name}: its parameters cell has no line starting 'MODEL_NAME = \"course\"'")
    if model != "course" and smoke_size:
        loads = [c for c in nb.cells if c.cell_type == "code" and LOAD.search(c.source)]
        if len(loads) != 1:
            raise ValueError(f"{path.name}: {len(loads)} cells load the model with `model = load_model(MODEL_NAME)`")
        loads[0].source = LOAD.sub(lambda m: m.group(0) + "".join(
            "\n" + m.group(1) + line for line in SMALLER.format(size=smoke_size).splitlines()), loads[0].source, count=1)
    if any(FALLBACK in c.source for c in nb.cells if c.cell_type == "code"):
        check = (f"# added by tools/switch_model.py: the notebook used {model}, not the course model as a fallback\n"
                 f"assert type(model).__name__ == {CLASS[model]!r}, f'fell back to {{type(model).__name__}}'")
        nb.cells.append(nbformat.v4.new_code_cell(check))
    return nb


def write_copies(out: Path, models: list[str]) -> list[Path]:
    """Write ``out/<model>/<notebook>`` for every model and notebook, and the fake ``out/torch_home``."""
    sys.path.insert(0, str(REPO / "tools"))
    from fake_torch_home import fake_torch_home

    sys.path.pop(0)
    unknown = [m for m in models if m not in CLASS]
    if unknown:
        raise SystemExit(f"unknown model(s) {unknown}; choose from {sorted(CLASS)}")
    imagenet = [m for m in models if m != "course"]
    if imagenet:
        fake_torch_home(out / "torch_home", imagenet)
    written = []
    for model in models:
        folder = out / model
        folder.mkdir(parents=True, exist_ok=True)
        for path in NOTEBOOKS:
            target = folder / path.name
            nbformat.write(switched(path, model), target)
            written.append(target)
    return written


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("models", nargs="+")
    args = parser.parse_args()
    paths = write_copies(args.out, args.models)
    print(f"wrote {len(paths)} notebooks into {args.out}/ ({', '.join(args.models)})")
