"""A TORCH_HOME with *random* weights under torchvision's file names, to try ImageNet models offline.

    python tools/fake_torch_home.py DIR [MODEL ...]     # default: every ImageNet model of the course
    TORCH_HOME=DIR jupyter lab                          # MODEL_NAME = "vgg16" now loads (random) weights

``course_lib.models.load_torchvision_model`` looks for ``$TORCH_HOME/hub/checkpoints/<file>``, where
``<file>`` is the last part of the weights' URL (e.g. ``vgg16-397923af.pth``). This writes a freshly
initialised model's ``state_dict`` there, so every notebook can run with that model without the
internet: the shapes, layers and code paths are the real ones, the pictures and numbers are noise.
make test-models uses it (tools/switch_model.py); never use such a folder for anything you want to look at.
"""
import argparse
import os
import sys
from pathlib import Path

import torch
import torchvision

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from course_lib.models import TORCHVISION_MODELS  # noqa: E402

sys.path.pop(0)


def checkpoint_path(torch_home: Path, name: str) -> Path:
    """Where torchvision looks for ``name``'s default ImageNet weights under ``torch_home``."""
    url = torchvision.models.get_model_weights(name).DEFAULT.url
    return Path(torch_home) / "hub" / "checkpoints" / os.path.basename(url)


def fake_torch_home(torch_home: Path, names=TORCHVISION_MODELS, seed: int = 0) -> dict[str, Path]:
    """Write random weights for each model in ``names`` (skipping files already there); their paths."""
    paths = {}
    for name in names:
        path = checkpoint_path(torch_home, name)
        if not path.exists():
            torch.manual_seed(seed)
            state = torchvision.models.get_model(name, weights=None).state_dict()
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".part")
            torch.save(state, tmp)
            tmp.replace(path)
        paths[name] = path
    return paths


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("torch_home", type=Path)
    parser.add_argument("models", nargs="*", help=f"some of {', '.join(TORCHVISION_MODELS)} (default: all)")
    args = parser.parse_args()
    unknown = set(args.models) - set(TORCHVISION_MODELS)
    if unknown:
        parser.error(f"unknown model(s) {', '.join(sorted(unknown))}; choose from {', '.join(TORCHVISION_MODELS)}")
    for name, path in fake_torch_home(args.torch_home, args.models or TORCHVISION_MODELS).items():
        print(f"{name}: {path} ({path.stat().st_size / 2**20:.0f} MiB, random weights)")
