"""How long will this cell take? Estimates printed before the notebooks' long cells.

A cell's cost is mostly passes through the network: a forward pass per image scanned or occluded,
a forward and a backward pass per optimisation step. This module times one pass of *this* model on
*this* machine, once, and multiplies:

    t  ~  n_forward * t_forward(size)  +  n_backward * t_forward+backward(size)

where ``size`` is the side of the (square) image. A 224 px ImageNet model is 10 to 30 times slower
than the 128 px course model, so with ``MODEL_NAME = "vgg16"`` a cell that takes seconds can take
many minutes: the estimate says so before it starts. It is a rough guide (batching makes scans
faster, L-BFGS makes a step cost more than one pass), right within a factor of about two.
"""
from __future__ import annotations

import os
import platform
import time
import weakref
from pathlib import Path

import torch
from torch import nn

from .inputs import check_int, model_device, model_dtype
from .layers import eval_mode

_measured: "weakref.WeakKeyDictionary[nn.Module, dict]" = weakref.WeakKeyDictionary()


def pass_seconds(model: nn.Module, size: int | None = None, backward: bool = False) -> float:
    """Seconds of one pass of one ``size`` x ``size`` image (default: the model's input size) through
    ``model``: forward only, or forward and backward to the input (``backward=True``). Measured once
    per model, size and kind (the faster of two runs after a warm-up), then remembered."""
    size = check_int(size if size is not None else getattr(model, "input_size", 224), "size", low=8)
    seen = _measured.setdefault(model, {})
    if (size, backward) not in seen:
        x = torch.rand(1, 3, size, size, device=model_device(model), dtype=model_dtype(model))
        runs = []
        with eval_mode(model), torch.set_grad_enabled(backward):
            for _ in range(3):
                xi = x.clone().requires_grad_(backward)
                t = time.perf_counter()
                out = model(xi)
                if backward:
                    out.float().sum().backward()
                runs.append(time.perf_counter() - t)
        seen[size, backward] = min(runs[1:])
    return seen[size, backward]


def format_duration(seconds: float) -> str:
    """``seconds`` as a person says it: ``"under a second"``, ``"40 s"``, ``"3.5 min"``, ``"1.2 h"``."""
    if seconds < 1:
        return "under a second"
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def estimate(model: nn.Module, what: str, forward: int = 0, backward: int = 0, size: int | None = None) -> str:
    """One line for the notebook: about how long ``what`` takes with ``forward`` forward passes and
    ``backward`` forward+backward passes of ``size`` px images (default: the model's input size).

        print(estimate(model, "scanning 1000 images", forward=1000))
        # scanning 1000 images: 1000 forward passes at 224 px, about 3.1 min here
    """
    forward, backward = check_int(forward, "forward", low=0), check_int(backward, "backward", low=0)
    seconds = 0.0
    if forward:
        seconds += forward * pass_seconds(model, size)
    if backward:
        seconds += backward * pass_seconds(model, size, backward=True)
    size = size if size is not None else getattr(model, "input_size", 224)
    passes = " and ".join(f"{n} {kind} pass{'es' if n != 1 else ''}" for n, kind in
                          ((forward, "forward"), (backward, "forward+backward")) if n)
    about = "about " if seconds >= 1 else ""
    return f"{what}: {passes or 'no passes'} at {size} px, {about}{format_duration(seconds)} here"


# ---- what this CPU can do fast ---------------------------------------------------------------

#: CPU flags (``/proc/cpuinfo``) of units that compute bfloat16 natively: Intel AMX and AVX-512 BF16.
BF16_FLAGS = ("amx_bf16", "avx512_bf16")


def _cpuinfo(field: str) -> str | None:
    """The value of ``field`` for this machine's first CPU in ``/proc/cpuinfo`` (None where there is none)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return None
    for line in text.splitlines():
        if line.split(":", 1)[0].strip() == field:
            return line.split(":", 1)[1].strip()
    return None


def cpu_flags() -> set[str]:
    """The flags of this machine's first CPU in ``/proc/cpuinfo`` (empty where there is none)."""
    return set((_cpuinfo("flags") or "").split())


def cpu_name() -> str:
    """The CPU's model name, e.g. ``"Intel(R) Xeon(R) Processor"`` (``platform.processor()`` elsewhere)."""
    return _cpuinfo("model name") or platform.processor() or platform.machine()


def has_bf16_units() -> bool:
    """Does this CPU compute bfloat16 in hardware (AMX or AVX-512 BF16)? Without such units PyTorch
    emulates bf16 autocast, about two orders of magnitude slower than float32.

    ``COURSE_CPU_BF16=0`` in the environment answers no whatever the CPU (``make test-isa`` uses it
    to run as a CPU without those units would); ``=1`` answers yes."""
    forced = os.environ.get("COURSE_CPU_BF16", "").strip()
    if forced in ("0", "1"):
        return forced == "1"
    return bool(cpu_flags() & set(BF16_FLAGS))


def default_precision(device: str | torch.device = "cpu") -> str:
    """``"bf16"`` where it is fast (a CUDA device, or a CPU with bf16 units), else ``"fp32"``."""
    device = torch.device(device)
    if device.type == "cuda":
        return "bf16"
    return "bf16" if device.type == "cpu" and has_bf16_units() else "fp32"


def resolve_precision(precision: str, device: str | torch.device = "cpu") -> str:
    """``"auto"`` -> :func:`default_precision`; ``"bf16"``/``"fp32"`` as given."""
    if precision not in ("auto", "bf16", "fp32"):
        raise ValueError(f"precision must be 'auto', 'bf16' or 'fp32', not {precision!r}")
    return default_precision(device) if precision == "auto" else precision
