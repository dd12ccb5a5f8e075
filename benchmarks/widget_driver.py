"""Inside a notebook's kernel: record its widgets, then drive each over its controls and time it.

``benchmarks/widget_latency.py`` runs a notebook with two cells added: :data:`RECORD` first (every
``ipywidgets.interact`` / ``interact_manual`` call is remembered: the function and its controls), and
at the end ``drive(RECORDED)``, which calls each function as the widget would and prints the timings.

* ``interact`` (the figure follows the controls): the function is called once per value of each
  control over its range (min, quartiles, max and the default of a slider; every option of a
  dropdown), the other controls at their defaults, plus every slider at its minimum at once and at its
  maximum at once. The time is from the call to its figures drawn as PNG (what the inline backend
  sends to the browser), as a change of a control costs.
* ``interact_manual`` (an optimisation started by a button, with a live preview): the function is
  called once with its defaults; the time is from the call to the first ``LivePreview.update`` (the
  first picture a student sees), or to its end when it has no preview.
"""
from __future__ import annotations

import io
import time

#: the first cell added to the notebook: it records the widgets the notebook makes
RECORD = """\
import ipywidgets as _wl_widgets
RECORDED = []
def _wl_wrap(kind, original):
    def wrapped(*args, **kwargs):
        if args and callable(args[0]):
            RECORDED.append((kind, args[0], dict(kwargs)))
        return original(*args, **kwargs)
    return wrapped
_wl_widgets.interact = _wl_wrap("interact", _wl_widgets.interact)
_wl_widgets.interact_manual = _wl_wrap("manual", _wl_widgets.interact_manual)
"""


class FirstPreview(Exception):
    """Raised by the patched ``LivePreview.update`` at its first call: the first picture is there."""


def _options(w) -> list:
    values = getattr(w, "_options_values", None)
    if values is None:
        values = [o[1] if isinstance(o, tuple) else o for o in w.options]
    return list(values)


def values_of(w) -> list:
    """The values a control is driven over (its default included)."""
    import ipywidgets as W
    import numpy as np

    if isinstance(w, (W.Dropdown, W.ToggleButtons, W.RadioButtons, W.Select, W.SelectionSlider)):
        return _options(w)
    if isinstance(w, W.Checkbox):
        return [False, True]
    if isinstance(w, W.FloatLogSlider):
        exps = np.linspace(w.min, w.max, 5)
        return sorted({float(w.base ** e) for e in exps} | {float(w.value)})
    if isinstance(w, (W.IntSlider, W.FloatSlider)):
        points = np.linspace(w.min, w.max, 5)
        step = w.step or 1
        snapped = {w.min + round((p - w.min) / step) * step for p in points}
        cast = int if isinstance(w, W.IntSlider) else float
        return sorted({cast(min(max(v, w.min), w.max)) for v in snapped} | {cast(w.value)})
    return [w.value]   # a text box, an upload button...: its default only


def _is_slider(w) -> bool:
    import ipywidgets as W

    return isinstance(w, (W.IntSlider, W.FloatSlider, W.FloatLogSlider))


def _extreme(w, which: str):
    import ipywidgets as W

    if isinstance(w, W.FloatLogSlider):
        return float(w.base ** (w.min if which == "min" else w.max))
    return w.min if which == "min" else w.max


def _timed_call(fn, kwargs) -> float:
    """Seconds from the call to every figure it made drawn as PNG (its output captured, not shown)."""
    import matplotlib.pyplot as plt
    from IPython.utils.capture import capture_output

    plt.close("all")
    t = time.perf_counter()
    with capture_output():
        fn(**kwargs)
        for num in plt.get_fignums():              # (figures it did not show itself)
            plt.figure(num).savefig(io.BytesIO(), format="png", bbox_inches="tight")
    seconds = time.perf_counter() - t
    plt.close("all")
    return seconds


def _first_preview(fn, kwargs) -> tuple[float, bool]:
    """Seconds from the call to the first live-preview picture (or to the end), and whether it was a preview."""
    import matplotlib.pyplot as plt
    from IPython.utils.capture import capture_output

    from course_lib.preview import LivePreview

    original = LivePreview.update

    def update(self, *args, **kwargs):
        original(self, *args, **kwargs)
        raise FirstPreview

    LivePreview.update = update
    t = time.perf_counter()
    try:
        with capture_output():
            fn(**kwargs)
        return time.perf_counter() - t, False
    except FirstPreview:
        return time.perf_counter() - t, True
    finally:
        LivePreview.update = original
        plt.close("all")


def drive(recorded, repeat: int = 1) -> list[dict]:
    """One row per (widget function, control): the values tried and each one's seconds."""
    rows = []
    for kind, fn, controls in recorded:
        widgets = {k: w for k, w in controls.items() if hasattr(w, "value")}
        defaults = {k: (w.value if k in widgets else w) for k, w in controls.items()}
        name = getattr(fn, "__name__", repr(fn))
        if kind == "manual":
            seconds, preview = _first_preview(fn, defaults)
            rows.append({"function": name, "kind": kind, "control": "(defaults)", "preview": preview,
                         "samples": [{"value": "defaults", "seconds": round(seconds, 3)}]})
            continue
        cases = [(k, v) for k, w in widgets.items() for v in values_of(w)]
        sliders = [k for k, w in widgets.items() if _is_slider(w)]
        if len(sliders) > 1:
            cases += [("(every slider)", which) for which in ("min", "max")]
        by_control: dict[str, list] = {}
        for control, value in cases:
            if control == "(every slider)":
                kwargs = {**defaults, **{k: _extreme(widgets[k], value) for k in sliders}}
            else:
                kwargs = {**defaults, control: value}
            seconds = min(_timed_call(fn, kwargs) for _ in range(repeat))
            by_control.setdefault(control, []).append({"value": repr(value)[:40], "seconds": round(seconds, 3)})
        rows += [{"function": name, "kind": kind, "control": c, "samples": s} for c, s in by_control.items()]
    return rows
