"""How long one forward pass of the course model takes on this machine's CPU.

Reference measured in the same run: torchvision's ResNet-18 (random weights, 224x224),
the smallest of the course's ImageNet models in compute, in whichever memory layout is faster
for it (the course model is loaded with channels-last weights). Prints milliseconds per
single-image forward (median of many runs) and the ratio course / reference.

    .venv/bin/python benchmarks/forward_time.py
"""
import statistics
import time

import torch
import torchvision

from course_lib.models import load_model


def median_ms(model, size, repeats=50):
    x = torch.randn(1, 3, size, size)
    with torch.no_grad():
        for _ in range(5):
            model(x)
        times = []
        for _ in range(repeats):
            t = time.perf_counter()
            model(x)
            times.append(time.perf_counter() - t)
    return 1000 * statistics.median(times)


def reference_ms(repeats=50):
    """ResNet-18 (random weights, 224 px) in its faster memory layout: the course model is loaded
    channels-last (``load_course_model``), so the reference gets the same chance."""
    ref = torchvision.models.resnet18().eval()
    plain = median_ms(ref, 224, repeats)
    nhwc = median_ms(ref.to(memory_format=torch.channels_last), 224, repeats)
    return min(plain, nhwc), plain, nhwc


if __name__ == "__main__":
    course = load_model("course")
    c = median_ms(course, course.input_size)
    r, plain, nhwc = reference_ms()
    print(f"threads: {torch.get_num_threads()}")
    print(f"course model (channels-last weights), 1 image {course.input_size}px: {c:.2f} ms")
    print(f"resnet18 (reference), 1 image 224px: {plain:.2f} ms, channels-last {nhwc:.2f} ms")
    print(f"ratio course / resnet18 (its faster layout): {c / r:.3f}")
