"""Occlusion saliency: course_lib.occlusion.occlusion against captum's Occlusion, same input, same run.

The course model on one 128x128 Imagenette validation image (a random image if the data
set is not available), for two settings: k=16, s=8 (windows tile the image exactly) and
k=24, s=10 (the last window is cropped). References:

* captum ``Occlusion`` with ``perturbations_per_eval=1`` (its default: one forward pass per window);
* captum with its best ``perturbations_per_eval`` among 16, 64, 256 (batched like ours).

Each time is the best of ``REPEATS`` rounds in which the methods take turns. Prints seconds and the ratios captum time / ours
(> 1: ours is faster), and checks that both give the same map.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/occlusion_vs_captum.py
"""
import os
import platform
import time

import torch
from captum.attr import Occlusion

from course_lib.imaging import preprocess
from course_lib.models import load_model, mean_colour
from course_lib.occlusion import number_of_windows, occlusion

REPEATS = 5
CONFIGS = [(16, 8), (24, 10)]
PER_EVAL = (16, 64, 256)
BATCH_SIZE = 16  # ours: occlusion's default


def best_times(methods, repeats=REPEATS):
    """Best time of each method over ``repeats`` rounds; the methods take turns within a round,
    so a slow spell on a busy machine hits them all alike."""
    times = {name: [] for name in methods}
    outs = {}
    for _ in range(repeats):
        for name, fn in methods.items():
            t = time.perf_counter()
            outs[name] = fn()
            times[name].append(time.perf_counter() - t)
    return {name: min(ts) for name, ts in times.items()}, outs


def main():
    model = load_model("course")
    try:
        from course_lib.data import imagenette

        image = imagenette("val")[2000][0]
        x = preprocess(image, model)
        what = "Imagenette val image 2000"
    except Exception as err:  # no data set: the timing does not depend on the pixels
        torch.manual_seed(0)
        x = torch.rand(1, 3, model.input_size, model.input_size)   # pixels in [0, 1]
        what = f"a random image ({type(err).__name__}: data set unavailable)"
    with torch.no_grad():
        target = int(model(x).argmax())
    captum = Occlusion(lambda z: model(z).softmax(1))
    mean_image = torch.tensor(mean_colour(model)).view(1, 3, 1, 1).expand_as(x)   # ours: fill="mean", in pixels

    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
          f"torch {torch.__version__}, threads {torch.get_num_threads()}")
    print(f"input: {what}, {x.shape[-1]}px, course model, target class {model.class_names[target]!r}")
    for k, s in CONFIGS:
        n = number_of_windows(x.shape[-1], k, s)

        def run_captum(per_eval):
            with torch.no_grad():
                return captum.attribute(x, sliding_window_shapes=(3, k, k), strides=(3, s, s), baselines=mean_image,
                                        target=target, perturbations_per_eval=per_eval)[:, 0]

        methods = {"ours": lambda: occlusion(model, x, target, patch=k, stride=s, batch_size=BATCH_SIZE, progress=False)}
        methods.update({p: (lambda p=p: run_captum(p)) for p in (1,) + PER_EVAL})
        times, outs = best_times(methods)
        ours_t = times["ours"]
        batched = {p: times[p] for p in PER_EVAL}
        best_p = min(batched, key=batched.get)
        diff = max((outs["ours"] - outs[p]).abs().max().item() for p in (1,) + PER_EVAL)
        print(f"\nk={k} s={s}: {n} windows (forward passes); max |ours - captum| = {diff:.1e}")
        print(f"  {f'ours (batch_size={BATCH_SIZE})':40s} {ours_t:7.3f} s")
        for p in (1,) + PER_EVAL:
            note = "   <- captum's best batched setting" if p == best_p else ""
            print(f"  {f'captum perturbations_per_eval={p}':40s} {times[p]:7.3f} s   "
                  f"ratio captum/ours {times[p] / ours_t:5.2f}{note}")

if __name__ == "__main__":
    main()
