"""Fast style transfer (notebook 08) against Gatys's optimisation (notebook 07), in one run.

For one content photo at 256 px (shorter side) and one style, on this machine's CPU:

* **images/s** of the shipped transformer networks (full and compact; instance norm), batch 1
  (one photo at a time, as the notebook's widget does; median of 20 passes) and batch 8, in
  float32 and in bfloat16 autocast (fast only on CPUs with bfloat16 units, e.g. AMX);
* the **reference**: Gatys et al.'s optimisation with notebook 07's settings (100 L-BFGS
  steps from the photo, beta/alpha = the network's own style weight, the course model);
* for all three images, ``L_content`` and ``L_style`` against the same photo and style
  (style image at 256 px), so speed and quality are read together.

    .venv/bin/python benchmarks/fast_style.py [--style starry_night] [--content chicago] [--steps 100]
"""
import argparse
import json
import statistics
import time

import torch

from course_lib import fast_style as FS
from course_lib import style as ST
from course_lib.data import load_image
from course_lib.imaging import to_tensor
from course_lib.models import load_model


def images_per_second(net, x, repeats=20, bf16=False) -> float:
    """Images per second of ``net`` on batch ``x`` (median of ``repeats`` timed passes after 3 warm-ups)."""
    times = []
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        for i in range(repeats + 3):
            t = time.perf_counter()
            net(x)
            if i >= 3:
                times.append(time.perf_counter() - t)
    return len(x) / statistics.median(times)


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--style", default="starry_night")
    p.add_argument("--content", default="chicago")
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--steps", type=int, default=100, help="L-BFGS steps of the Gatys reference")
    args = p.parse_args()
    model = load_model("course")
    content = to_tensor(load_image(args.content, args.size))[None]
    style = to_tensor(load_image(args.style, args.size))[None]
    print(f"threads: {torch.get_num_threads()}, content {args.content} {tuple(content.shape[-2:])}, style {args.style}")

    square = torch.rand(8, 3, args.size, args.size, generator=torch.Generator().manual_seed(0))
    rows = []
    for variant in ("full", "compact"):
        net = FS.load_fast_style(args.style, "instance", variant)
        record = json.loads(FS.weights_path(args.style, "instance", variant).with_suffix(".json").read_text())
        for bf16 in (False, True):
            one = images_per_second(net, square[:1], bf16=bf16)
            eight = images_per_second(net, square, repeats=5, bf16=bf16)
            FS.stylise(net, content, bf16=bf16)  # warm-up at this size
            t = time.perf_counter()
            y = FS.stylise(net, content, bf16=bf16)
            seconds = time.perf_counter() - t
            rows.append((f"fast, {variant} ({FS.parameter_count(net) / 1e6:.2f} M), {'bf16' if bf16 else 'fp32'}",
                         seconds, ST.transfer_losses(model, y, content, style), one, eight))
        weight = record["style_weight"], record["tv_weight"]
    t = time.perf_counter()
    x = ST.style_transfer(model, content, style, style_weight=weight[0], tv_weight=weight[1], steps=args.steps,
                          progress=False).image
    gatys = time.perf_counter() - t
    rows.append((f"Gatys, {args.steps} L-BFGS steps", gatys, ST.transfer_losses(model, x, content, style),
                 1 / gatys, float("nan")))
    photo = ST.transfer_losses(model, content, content, style)
    print(f"style weight {weight[0]:g}, TV weight {weight[1]:g} (the networks' training weights)")
    print(f"{'method':38s} {'s/image':>8s} {'x Gatys':>8s} {'img/s 256px':>11s} {'img/s b=8':>9s} "
          f"{'L_content':>9s} {'L_style':>8s}")
    for name, sec, L, one, eight in rows:
        print(f"{name:38s} {sec:8.3f} {gatys / sec:8.0f} {one:11.1f} {eight:9.1f} {L['content']:9.3f} {L['style']:8.3f}")
    print(f"{'the photo itself':38s} {'':8s} {'':8s} {'':11s} {'':9s} {photo['content']:9.3f} {photo['style']:8.3f}")
