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
