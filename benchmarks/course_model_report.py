"""The course model's report card (issue: course model v2), for any weights file.

    .venv/bin/python benchmarks/course_model_report.py                        # the shipped model
    .venv/bin/python benchmarks/course_model_report.py --weights old.pt ...   # several, side by side

For each weights file (its JSON record beside it) it measures, on this machine:

1. **top-1** on all 3,925 Imagenette val images, with the course's preprocessing;
2. **edge-like first layer**: :func:`course_lib.weights.edge_like_share` of ``conv1_1``;
3. **saliency that follows the object**: on the 50 val images of notebook 03
   (``spread_indices(3925, 50)``), the deletion AUC of the plain gradient and of the centre
   prior (16 steps, mean substrate), and the mean :func:`course_lib.saliency_eval.grid_energy`
   of the gradient maps;
4. **forward cost**: one image at the model's input size, median time, as a ratio to one
   ResNet-18 forward at 224 px measured in the same run, in its faster memory layout (see
   ``forward_time.py``).
"""
import argparse
import json
from pathlib import Path

import numpy as np
import torch

from course_lib.data import imagenette, spread_indices
from course_lib.models import COURSE_WEIGHTS, load_course_model
from course_lib.predict import predict_dataset
from course_lib.saliency import compute_saliency
from course_lib.saliency_eval import evaluate_saliency, grid_energy, saliency_methods
from course_lib.imaging import preprocess
from course_lib.weights import edge_like_share
from forward_time import median_ms, reference_ms  # this folder's forward benchmark: the same timing rule


def report(weights: Path, val, reference_ms: float) -> dict:
    model = load_course_model(weights)
    logits, labels = predict_dataset(model, val, progress=False)
    top1 = (logits.argmax(1) == labels).float().mean().item()
    share, _ = edge_like_share(model, "conv1_1", progress=False)
    images = [val[i][0] for i in spread_indices(len(val), 50)]
    methods = {k: v for k, v in saliency_methods().items() if k in ("gradient", "centre")}
    res = evaluate_saliency(model, images, methods, steps=16, progress=False)
    grids = [grid_energy(compute_saliency(model, preprocess(im, model), t, method="gradient"))
             for im, t in zip(images, res["targets"])]
    return {"weights": str(weights), "val_top1": top1, "edge_like_share": share,
            "deletion_auc_gradient": float(np.mean(res["auc"]["gradient"]["deletion"])),
            "deletion_auc_centre": float(np.mean(res["auc"]["centre"]["deletion"])),
            "grid_energy_gradient": float(np.mean(grids)),
            "forward_ratio_vs_resnet18": median_ms(model, model.input_size) / reference_ms}


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--weights", type=Path, nargs="+", default=[COURSE_WEIGHTS])
    p.add_argument("--json", type=Path, help="also write the rows here")
    args = p.parse_args()
    val = imagenette("val")
    ref_ms = reference_ms()[0]
    rows = [report(w, val, ref_ms) for w in args.weights]
    keys = list(rows[0])[1:]
    print(f"threads: {torch.get_num_threads()}, resnet18 224px: {ref_ms:.2f} ms")
    print(f"{'measure':28s}" + "".join(f"{Path(r['weights']).parent.name + '/' + Path(r['weights']).name:>34s}" for r in rows))
    for k in keys:
        print(f"{k:28s}" + "".join(f"{r[k]:34.4f}" for r in rows))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1) + "\n")
