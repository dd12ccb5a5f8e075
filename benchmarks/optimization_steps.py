"""Cost of one optimisation step of each method of notebook 05, as a ratio to the floor.

The floor is one forward + backward pass of the course model on the same batch of pixels at the
same size (``x.requires_grad_(); model(x).sum().backward()``: the model normalises its input
itself), measured in the same run: a step can hardly be cheaper, so the ratio is the overhead
of the method (objective, transforms, projections, optimiser). Methods whose objective stops at
an early layer can be *below* 1: the forward pass stops after the deepest layer the objective needs.

    .venv/bin/python benchmarks/optimization_steps.py
"""
import time

import torch

from course_lib import adversarial as A
from course_lib import class_viz as CV
from course_lib import deepdream as DD
from course_lib import inversion as INV
from course_lib.models import load_model


def best_of(fn, repeats=5):
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def floor(model, batch, size):
    x = torch.rand(batch, 3, size, size)

    def run():
        xi = x.clone().requires_grad_(True)
        model(xi).sum().backward()
    return best_of(run)


def per_step(fn, steps):
    return best_of(fn, repeats=3) / steps


if __name__ == "__main__":
    torch.manual_seed(0)
    model = load_model("course")
    S = model.input_size
    photo = torch.rand(1, 3, S, S)
    batch = torch.rand(32, 3, S, S)
    y = torch.randint(0, 10, (32,))
    steps = 10
    rows = [
        ("class visualisation, all regularisers", 1, S, per_step(lambda: CV.class_visualization(
            model, 3, steps=steps, norm_percentile=10, contribution_percentile=10, progress=False), steps)),
        ("PGD, batch 32", 32, S, per_step(lambda: A.pgd(model, batch, y, eps=4 / 255, steps=steps), steps)),
        ("universal perturbation, batch 32", 32, S, per_step(lambda: A.universal_perturbation(
            model, batch, xi=10 / 255, epochs=steps, batch_size=32, progress=False), steps)),
        ("DeepDream relu4_2, 1 octave", 1, 2 * S, per_step(lambda: DD.deepdream(
            model, torch.rand(1, 3, 2 * S, 2 * S), layer="relu4_2", octaves=1, steps=steps, progress=False), steps)),
        ("feature inversion conv4_2", 1, S, per_step(lambda: INV.invert(model, photo, layer="conv4_2", steps=steps,
                                                                         progress=False), steps)),
        ("feature inversion conv2_1 (stops early)", 1, S, per_step(lambda: INV.invert(
            model, photo, layer="conv2_1", steps=steps, progress=False), steps)),
    ]
    print(f"threads: {torch.get_num_threads()}")
    print(f"{'method':42s} {'batch':>5s} {'px':>4s} {'ms/step':>8s} {'floor ms':>8s} {'ratio':>6s}")
    floors = {}
    for name, b, size, t in rows:
        if (b, size) not in floors:
            floors[(b, size)] = floor(model, b, size)
        f = floors[(b, size)]
        print(f"{name:42s} {b:5d} {size:4d} {1000 * t:8.1f} {1000 * f:8.1f} {t / f:6.2f}")
