"""course_lib: the tested implementations behind the course "Visualizing and Understanding CNNs".

One module per lecture topic; each method is one short function whose docstring states
its equation. The foundation:

- :mod:`course_lib.data`     -- every data file, its URL and checksum; Imagenette; images
- :mod:`course_lib.models`   -- ``load_model("course" | "vgg16" | ...)``, ``get_layer``, hooks
- :mod:`course_lib.imaging`  -- preprocess (pixels in [0, 1]), arrays for display, grids, heatmap overlays, plotting
- :mod:`course_lib.inputs`   -- the one image / class-target / number check every module uses
- :mod:`course_lib.train`    -- ``python -m course_lib.train``: the course model, from scratch

The lecture topics:

- :mod:`course_lib.weights`, :mod:`course_lib.neighbors`  -- notebook 01: filters, nearest neighbours
- :mod:`course_lib.patches`, :mod:`course_lib.occlusion`  -- notebook 02: receptive fields, top patches, occlusion
- :mod:`course_lib.saliency`, :mod:`course_lib.saliency_eval` -- notebook 03: gradients, guided backprop, GrabCut,
  deletion/insertion, randomisation checks
- :mod:`course_lib.cam`      -- notebook 04: CAM, Grad-CAM, Guided Grad-CAM
- :mod:`course_lib.optimize` -- the optimisation core of notebooks 05-08: objective x parameterisation
  x transforms, one loop (Adam, L-BFGS, sign and normalised steps)
- :mod:`course_lib.class_viz`, :mod:`course_lib.adversarial`, :mod:`course_lib.deepdream`,
  :mod:`course_lib.inversion` -- notebook 05: class visualisation, adversarial and universal
  perturbations, DeepDream, feature inversion
- :mod:`course_lib.style`    -- notebooks 06-07: Gram matrices, style and content losses, texture
  synthesis, Gatys style transfer (style scale, blending, colour preservation)
- :mod:`course_lib.fast_style` -- notebook 08: Johnson's transformer network (instance or batch norm),
  trained through the same core; ``python -m course_lib.fast_style train --style ...``
- :mod:`course_lib.grading`  -- helpers for the exercises' hidden tests

Around them: :mod:`course_lib.cache` (long results kept on disk), :mod:`course_lib.timing` (the
time estimates printed before long cells) and :mod:`course_lib.headless` (running notebooks with
``jupyter nbconvert --execute`` without lost replies).
"""
__version__ = "0.1.0"
