"""course_lib: the tested implementations behind the course "Visualizing and Understanding CNNs".

One module per lecture topic; each method is one short function whose docstring states
its equation. The foundation:

- :mod:`course_lib.data`     -- every data file, its URL and checksum; Imagenette; images
- :mod:`course_lib.models`   -- ``load_model("course" | "vgg16" | ...)``, ``get_layer``, hooks
- :mod:`course_lib.imaging`  -- preprocess / deprocess, grids, heatmap overlays, plotting
- :mod:`course_lib.train`    -- ``python -m course_lib.train``: the course model, from scratch
"""
__version__ = "0.1.0"
