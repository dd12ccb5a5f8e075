"""Time estimates printed before long cells (course_lib.timing)."""
import pytest
import torch

from course_lib import timing


def test_format_duration():
    assert timing.format_duration(0.3) == "under a second"
    assert timing.format_duration(40) == "40 s"
    assert timing.format_duration(210) == "3.5 min"
    assert timing.format_duration(6000) == "1.7 h"


def test_pass_seconds_is_measured_once_and_remembered(tiny_net, monkeypatch):
    t = timing.pass_seconds(tiny_net)
    assert t > 0
    calls = []
    monkeypatch.setattr(tiny_net, "forward", lambda x: calls.append(1) or x)
    assert timing.pass_seconds(tiny_net) == t and not calls          # remembered, not run again
    assert timing.pass_seconds(tiny_net, backward=True) > 0 and calls  # another kind: measured


def test_estimate_multiplies_the_measured_passes(tiny_net, monkeypatch):
    monkeypatch.setattr(timing, "pass_seconds", lambda m, size=None, backward=False: 0.5 if backward else 0.1)
    line = timing.estimate(tiny_net, "scanning 300 images", forward=300, backward=100)
    assert line == ("scanning 300 images: 300 forward passes and 100 forward+backward passes at 64 px, "
                    "about 80 s here")   # 300 * 0.1 + 100 * 0.5
    assert timing.estimate(tiny_net, "one step", backward=1, size=96) == ("one step: 1 forward+backward pass at 96 px, "
                                                                          "under a second here")


def test_a_bigger_image_takes_longer(tiny_net):
    assert timing.pass_seconds(tiny_net, 256) > timing.pass_seconds(tiny_net, 32)


def test_the_model_is_left_as_it_was(tiny_net):
    tiny_net.train()
    timing.pass_seconds(tiny_net, 48, backward=True)
    assert tiny_net.training and all(p.grad is None for p in tiny_net.parameters())
    with pytest.raises(ValueError):
        timing.estimate(tiny_net, "x", forward=-1)


def test_precision_follows_the_cpu(monkeypatch):
    """bf16 only where the CPU has bf16 units: elsewhere autocast is emulated, ~100x slower than float32."""
    monkeypatch.delenv("COURSE_CPU_BF16", raising=False)
    monkeypatch.setattr(timing, "cpu_flags", lambda: {"sse4_2", "avx2", "fma"})          # an AMD EPYC, say
    assert not timing.has_bf16_units() and timing.default_precision("cpu") == "fp32"
    assert timing.resolve_precision("auto") == "fp32" and timing.resolve_precision("bf16") == "bf16"
    monkeypatch.setattr(timing, "cpu_flags", lambda: {"avx2", "avx512f", "amx_bf16", "amx_tile"})  # a Xeon with AMX
    assert timing.has_bf16_units() and timing.resolve_precision("auto") == "bf16"
    monkeypatch.setenv("COURSE_CPU_BF16", "0")                                            # make test-isa
    assert not timing.has_bf16_units() and timing.resolve_precision("auto") == "fp32"
    with pytest.raises(ValueError, match="precision"):
        timing.resolve_precision("fp16")


def test_cpu_name_is_text():
    assert isinstance(timing.cpu_name(), str) and timing.cpu_name()
