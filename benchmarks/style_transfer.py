"""How fast Gatys style transfer converges on this machine's CPU (notebook 07).

Measured in one run, course model, Chicago + The Starry Night, 256 px content:

* the **floor**: one forward + backward pass of the style/content objective (best of 5);
* one **L-BFGS evaluation** inside a real run (total time / number of evaluations), as a
  ratio to the floor: what the optimiser adds on top of the network;
* the **time to converge**: until the total loss is within 1% (and 5%) of its value after
  500 L-BFGS iterations.

    .venv/bin/python benchmarks/style_transfer.py [--steps 500] [--style-weight 1]
"""
import argparse
import time

import torch

from course_lib import optimize as O
from course_lib import style as ST
from course_lib.data import load_image
from course_lib.imaging import to_tensor
from course_lib.models import load_model


def floor_seconds(model, objective, x, repeats=5) -> float:
    """Best time of one forward + backward pass of ``objective`` at ``x``."""
    best = float("inf")
    stack, acts = O._recording(model, objective)
    with O.eval_mode(model), stack:
        for _ in range(repeats + 1):
            y = x.clone().requires_grad_(True)
            t = time.perf_counter()
            O._forward(model, objective, y, acts)
            objective(acts, y).sum().backward()
            best = min(best, time.perf_counter() - t)
    return best


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=500)
    p.add_argument("--style-weight", type=float, default=1.0)
    p.add_argument("--size", type=int, default=256)
    args = p.parse_args()
    model = load_model("course")
    content = to_tensor(load_image("chicago", args.size))[None]
    style = to_tensor(load_image("starry_night", args.size))[None]
    layers, content_layer = ST.default_layers(model)
    targets = ST.blended_targets(model, [style], None, layers=layers)
    objective = ST.transfer_objective(model, content, targets, style_weight=args.style_weight, tv_weight=0.0,
                                      content_layer=content_layer)
    floor = floor_seconds(model, objective, content)

    stamps = []
    t0 = time.perf_counter()
    _, history = ST.style_transfer(model, content, style, style_weight=args.style_weight, steps=args.steps, every=1,
                                   callback=lambda step, img, j: stamps.append(time.perf_counter() - t0), progress=False)
    total = time.perf_counter() - t0
    losses = [-j for j in history.objective]
    evals = history.evaluations
    final = losses[-1]

    def time_within(frac):
        for t, loss in zip(stamps, losses):
            if loss <= final * (1 + frac):
                return t
        return float("nan")

    per_eval = total / evals[-1]
    print(f"threads: {torch.get_num_threads()}, content {tuple(content.shape[-2:])}, style weight {args.style_weight:g}")
    print(f"floor (one forward + backward): {1000 * floor:.1f} ms")
    print(f"{args.steps} L-BFGS steps: {evals[-1]} evaluations in {total:.1f} s, "
          f"{1000 * per_eval:.1f} ms per evaluation = {per_eval / floor:.2f} x the floor")
    for frac in (0.05, 0.01):
        t = time_within(frac)
        step = next(i for i, s in enumerate(stamps) if s >= t) + 1
        print(f"within {100 * frac:g}% of the {args.steps}-step loss ({final:.4f}): {t:.1f} s "
              f"(step {step}, {evals[step - 1]} evaluations)")
    print("loss after steps 10/25/50/100/200:",
          ", ".join(f"{losses[i - 1]:.4f}" for i in (10, 25, 50, 100, 200) if i <= len(losses)))
