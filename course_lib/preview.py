"""A live preview of an optimisation in a notebook: the current image and step, updated as it runs."""
from __future__ import annotations

import numpy as np
import torch
from PIL import Image


class LivePreview:
    """An ``ipywidgets.Image`` plus a label that an optimisation updates as it runs.

        preview = LivePreview()
        display(preview.widget)
        optimize(..., callback=preview.update, every=10)

    ``update(step, images, value)`` shows the first image of the batch (pixels in [0, 1]),
    enlarged ``scale`` times, and "step N: J = value".
    """

    def __init__(self, scale: int = 2):
        import ipywidgets as widgets

        self.scale = scale
        self.image = widgets.Image(format="png")
        self.label = widgets.Label("")
        self.widget = widgets.VBox([self.image, self.label])

    def update(self, step: int, images, value: float | None = None) -> None:
        import io

        a = images[0].detach().float().clamp(0, 1).permute(1, 2, 0).cpu().numpy() if isinstance(images, torch.Tensor) \
            else np.asarray(images)
        pil = Image.fromarray((a * 255).round().astype(np.uint8))
        pil = pil.resize((pil.width * self.scale, pil.height * self.scale), Image.NEAREST)
        buf = io.BytesIO()
        pil.save(buf, format="PNG")
        self.image.value = buf.getvalue()
        self.label.value = f"step {step + 1}" + ("" if value is None else f": objective {value:.3f}")
