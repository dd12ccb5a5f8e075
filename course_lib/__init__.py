"""course_lib: the tested implementations behind the course "Visualizing and Understanding CNNs".

One module per lecture topic; each method is one short function whose docstring states
its equation. Every method follows the same conventions:

- **Images are pixels** in [0, 1], float32, ``[N, 3, H, W]`` (or ``[3, H, W]`` for one image); every
  model normalises its own input (its first module, ``normalize``). Inputs are never modified.
- **One calling convention**: ``method(model, x, target=None, *, layer=None, channel=None, ...)``.
  ``target`` is a class index (None: the class the model predicts); ``layer``, ``channel`` and every
  option are keyword-only, so ``grad_cam(model, x, 3)`` can only mean class 3.
- **Maps have the input's size**: a method that explains one image returns an ``[H, W]`` map (or an
  ``[3, H, W]`` attribution, e.g. a gradient); occlusion, which takes a batch, returns ``[N, H, W]``.
  ``size=False`` (CAM, Grad-CAM) keeps a layer's own ``h x w`` instead, and says so.
- **An optimisation returns** ``Optimized(image, history)`` (class visualisation, DeepDream, inversion,
  texture synthesis, style transfer: ``x, history = ...``); an attack returns its images only.

The foundation:

- :mod:`course_lib.data`     -- every data file, its URL and checksum; Imagenette; images
- :mod:`course_lib.models`   -- the networks and how to get them: ``load_model("course" | "vgg16" | ...)``,
  the ``Normalize`` first layer, ``with_normalization`` and ``prepare_model`` for a network of your own
- :mod:`course_lib.layers`   -- finding and looking inside layers: lecture names, ``get_layer``, hooks, and
  one ``Architecture`` per model family (conv stages, style layers, ...)
- :mod:`course_lib.predict`  -- running a model on images: ``classify``, ``predict_dataset``
- :mod:`course_lib.records`  -- a shipped weights file read with its JSON record, checked by sha256
- :mod:`course_lib.imaging`  -- conversions, pixels in [0, 1]: images to tensors (``preprocess``), tensors to
  arrays, grids
- :mod:`course_lib.figures`  -- matplotlib figures: images, prediction titles, heatmaps and their colour scales
- :mod:`course_lib.preview`  -- ``LivePreview``: an optimisation's current image in a notebook
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
  :mod:`course_lib.inversion` -- notebook 05: class and feature (one unit's) visualisation, adversarial
  and universal perturbations, DeepDream, feature inversion
- :mod:`course_lib.texture`  -- notebook 06: texture synthesis before CNNs: Efros-Leung, image quilting
  (minimum-error boundary cut), Heeger-Bergen (histograms of an oriented filter bank)
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
