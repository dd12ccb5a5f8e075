"""Running a model on images: the top classes of one image, the class scores of a whole data set."""
from __future__ import annotations

import torch
from torch import nn
from tqdm.auto import tqdm

from .imaging import preprocess
from .inputs import check_int, model_device
from .layers import eval_mode


@torch.no_grad()
def predict_dataset(model: nn.Module, dataset, indices=None, batch_size: int = 64,
                    progress: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """Class scores for the images ``dataset[i]`` (PIL image, label) for ``i`` in ``indices`` (default: all).

    Returns ``(logits [N, classes], labels [N])``, batched, with a progress bar. The model runs
    in eval mode (dropout off, batch norm with its running statistics); afterwards every
    submodule gets its own training flag back.
    """
    batch_size = check_int(batch_size, "batch_size", low=1)
    idx = list(range(len(dataset))) if indices is None else list(indices)
    logits, labels = [], []
    device = model_device(model)
    with eval_mode(model):
        for s in tqdm(range(0, len(idx), batch_size), desc="predict", disable=not progress, unit="batch"):
            batch = [dataset[i] for i in idx[s:s + batch_size]]
            x = torch.cat([preprocess(img, model) for img, _ in batch]).to(device)
            logits.append(model(x).cpu())
            labels += [y for _, y in batch]
    return torch.cat(logits), torch.tensor(labels)


@torch.no_grad()
def classify(model: nn.Module, image, k: int = 5) -> list[tuple[str, float]]:
    """The ``k`` most probable classes of one image: ``[(class name, softmax probability), ...]``.

    ``image``: anything :func:`course_lib.imaging.preprocess` takes (an RGB PIL image, an
    ``H x W x 3`` array, a ``[3, H, W]`` tensor of pixels in [0, 1]); ``k``: an int >= 1 (all
    classes if the model has fewer). The model runs in eval mode, so the answer does not
    change from call to call; afterwards every submodule gets its own training flag back.
    """
    k = check_int(k, "k", low=1)
    x = preprocess(image, model)
    with eval_mode(model):
        probs = torch.softmax(model(x), dim=1)[0]
    top = probs.topk(min(k, probs.numel()))
    return [(model.class_names[i], p) for p, i in zip(top.values.tolist(), top.indices.tolist())]
