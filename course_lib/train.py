"""Train the course's CNN from scratch on Imagenette, then ship it to ``data/``.

    python -m course_lib.train                 # the shipped model (about an hour on 2 CPU cores)
    python -m course_lib.train --resume        # carry on from the last epoch's checkpoint
    python -m course_lib.train --device cuda   # the same script on a GPU

Recipe: SGD with Nesterov momentum and a one-cycle learning rate, label smoothing 0.1,
weight decay on conv/linear weights, random-resized crops + horizontal flips, and
progressive resizing (small crops early, the model's 128 px input at the end).
Then a short **FixRes** stage (Touvron et al. 2019, *Fixing the train-test resolution
discrepancy*): random-resized crops show objects larger than the centre crops of test time,
so the last ``--fixres-epochs`` epochs fine-tune at a small, cosine-decaying learning rate
with gentler crops (at least 64% of the image), which matches the two.
With ``--precision bf16`` the forward and backward passes run in bfloat16 autocast (the
weights and the optimiser stay float32): on CPUs with AMX/AVX-512 bf16 units this is 2-3x
faster than float32; on a CPU without them bf16 is emulated and about 100x *slower*. The
default, ``auto``, picks bf16 only where it is fast (a GPU, or a CPU with those units) and
records the choice and the CPU in the JSON record.

``--cutmix P`` mixes a batch of the main stage with CutMix (Yun et al. 2019) with probability
``P``: a stronger augmentation for longer schedules (never during FixRes).

The defaults reproduce the shipped model (its JSON record lists every setting). Variants of
the architecture are flags: ``--conv1 8 2 3`` (an 8x8 stride-2 first conv), ``--pool blur``
(anti-aliased max-pooling, :class:`course_lib.models.BlurMaxPool2d`). For example, the
"v2" candidate measured for the course model's next version::

    python -m course_lib.train --conv1 8 2 3 --pool blur --epochs 60 --fixres-epochs 5 --precision bf16
The images are decoded once into a uint8 tensor cache (``data/cache/``,
:func:`course_lib.data.decode_split`) and the augmentations
(:func:`course_lib.data.random_resized_crop`, :func:`cutmix`) run batched on tensors, so two CPU
cores spend their time on the net.

After the last epoch the BatchNorms are folded into the convolutions
(:func:`course_lib.models.fold_batch_norm`), the plain model is evaluated on all of
Imagenette val with the course's own preprocessing, and the weights plus a JSON
record (accuracy, epochs, seed, time, data checksum) are written to ``data/``.
"""
from __future__ import annotations

import argparse
import json
import math
import platform
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from . import data as cdata
from .imaging import fit_to_square
from .timing import cpu_name, has_bf16_units, resolve_precision
from .models import (COURSE_BLOCKS, COURSE_CONV1, COURSE_INPUT_SIZE, COURSE_POOL, COURSE_WEIGHTS,
                     IMAGENET_MEAN, IMAGENET_STD, CourseNet, fold_batch_norm)


def cutmix(x: torch.Tensor, y: torch.Tensor, gen: torch.Generator):
    """CutMix (Yun et al. 2019): paste one random box of a shuffled partner image into every image.

    The box covers a share ``1 - lam`` of the image, ``lam ~ U(0, 1)`` (Beta(1, 1)), and the
    target is mixed in the same proportion:

        loss = lam * CE(f(x~), y) + (1 - lam) * CE(f(x~), y[partner])

    Returns ``(mixed images, y, y[partner], lam)`` with ``lam`` the exact kept area share after
    the box is clipped to the image. ``x`` is not modified.
    """
    n, _, h, w = x.shape
    cut = math.sqrt(1.0 - torch.rand(1, generator=gen).item())
    bh, bw = round(h * cut), round(w * cut)
    cy, cx = (torch.randint(0, s, (1,), generator=gen).item() for s in (h, w))
    y0, y1 = max(cy - bh // 2, 0), min(cy + bh - bh // 2, h)
    x0, x1 = max(cx - bw // 2, 0), min(cx + bw - bw // 2, w)
    partner = torch.randperm(n, generator=gen)
    mixed = x.clone()
    mixed[:, :, y0:y1, x0:x1] = x[partner, :, y0:y1, x0:x1]
    lam = 1.0 - (y1 - y0) * (x1 - x0) / (h * w)
    return mixed, y, y[partner], lam


def size_for_epoch(epoch: int, epochs: int, final: int = COURSE_INPUT_SIZE) -> int:
    """Progressive resizing: 96 px for the first 40% of epochs, 112 px up to 80%, then ``final``."""
    f = epoch / epochs
    return 96 if f < 0.4 else 112 if f < 0.8 else final


@torch.no_grad()
def evaluate(model, x_u8: torch.Tensor, y: torch.Tensor, device, size=COURSE_INPUT_SIZE, batch=256) -> float:
    """Top-1 accuracy with the course's test-time preprocessing (resize + centre crop to ``size``)."""
    model.eval()
    correct = 0
    for i in range(0, len(x_u8), batch):
        xb = fit_to_square(x_u8[i:i + batch].float().div_(255), size)
        xb = xb.to(device).contiguous(memory_format=torch.channels_last)   # pixels: the model normalises
        correct += (model(xb).argmax(1).cpu() == y[i:i + batch]).sum().item()
    return correct / len(x_u8)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=0.2, help="peak learning rate of the one-cycle schedule")
    p.add_argument("--fixres-epochs", type=int, default=0, help="epochs of the FixRes fine-tuning stage after --epochs")
    p.add_argument("--fixres-lr", type=float, default=0.01, help="its starting learning rate (cosine decay to 0)")
    p.add_argument("--weight-decay", type=float, default=5e-4)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--conv1", type=int, nargs=3, default=list(COURSE_CONV1), metavar=("KERNEL", "STRIDE", "PADDING"),
                   help="the first convolution")
    p.add_argument("--pool", choices=("max", "blur"), default=COURSE_POOL, help="plain or anti-aliased max-pooling")
    p.add_argument("--precision", choices=("auto", "bf16", "fp32"), default="auto",
                   help="autocast forward/backward to bfloat16 (weights stay float32), or plain float32; "
                        "auto: bf16 on a GPU or a CPU with bf16 units (AMX, AVX-512 BF16), else fp32")
    p.add_argument("--cutmix", type=float, default=0.0,
                   help="probability of CutMix for a batch of the main stage (0: never; never in FixRes)")
    p.add_argument("--threads", type=int, default=0, help="CPU threads (0: torch's default)")
    p.add_argument("--resume", action="store_true", help="continue from data/cache/train_checkpoint.pt")
    p.add_argument("--limit", type=int, default=0, help="use only this many training images (smoke tests)")
    p.add_argument("--out", type=Path, default=COURSE_WEIGHTS, help="where to write the shipped weights")
    args = p.parse_args(argv)

    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    device = torch.device(args.device)
    args.precision = resolve_precision(args.precision, device)
    print(f"precision: {args.precision} ({cpu_name()}; bf16 units: {'yes' if has_bf16_units() else 'no'})", flush=True)
    cache = cdata.data_dir() / "cache"
    ckpt_path = cache / "train_checkpoint.pt"

    xtr, ytr = cdata.decode_split("train", cache)
    xva, yva = cdata.decode_split("val", cache)
    if args.limit:
        keep = torch.randperm(len(xtr), generator=torch.Generator().manual_seed(args.seed))[:args.limit]
        xtr, ytr = xtr[keep], ytr[keep]
    manifest = cdata.IMAGENETTE_224_MANIFEST_SHA256

    model = CourseNet(num_classes=10, batch_norm=True, conv1=args.conv1, pool=args.pool).to(device).to(memory_format=torch.channels_last)
    decay = [p_ for n, p_ in model.named_parameters() if p_.ndim > 1]
    no_decay = [p_ for n, p_ in model.named_parameters() if p_.ndim <= 1]
    opt = torch.optim.SGD([{"params": decay, "weight_decay": args.weight_decay},
                           {"params": no_decay, "weight_decay": 0.0}],
                          lr=args.lr, momentum=0.9, nesterov=True)
    steps_per_epoch = math.ceil(len(xtr) / args.batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=args.lr, epochs=args.epochs,
                                                steps_per_epoch=steps_per_epoch, pct_start=0.25)
    opt_ft = torch.optim.SGD([{"params": decay, "weight_decay": args.weight_decay},
                              {"params": no_decay, "weight_decay": 0.0}],
                             lr=args.fixres_lr, momentum=0.9, nesterov=True)
    sched_ft = torch.optim.lr_scheduler.CosineAnnealingLR(opt_ft, T_max=max(1, args.fixres_epochs * steps_per_epoch))
    gen = torch.Generator().manual_seed(args.seed)
    start_epoch, history, elapsed = 0, [], 0.0
    if args.resume and ckpt_path.exists():
        ck = torch.load(ckpt_path, map_location=device, weights_only=False)
        model.load_state_dict(ck["model"])
        opt.load_state_dict(ck["opt"])
        sched.load_state_dict(ck["sched"])
        if "opt_ft" in ck:
            opt_ft.load_state_dict(ck["opt_ft"])
            sched_ft.load_state_dict(ck["sched_ft"])
        gen.set_state(ck["gen"])
        start_epoch, history, elapsed = ck["epoch"], ck["history"], ck["elapsed"]
        print(f"resumed after epoch {start_epoch}", flush=True)

    total_epochs = args.epochs + args.fixres_epochs
    for epoch in range(start_epoch, total_epochs):
        t0, c0 = time.time(), time.process_time()
        fixres = epoch >= args.epochs
        size = COURSE_INPUT_SIZE if fixres else size_for_epoch(epoch, args.epochs)
        optimizer, scheduler = (opt_ft, sched_ft) if fixres else (opt, sched)
        model.train()
        perm = torch.randperm(len(xtr), generator=gen)
        total, seen = 0.0, 0
        stage = "FixRes " if fixres else ""
        bar = tqdm(range(steps_per_epoch), desc=f"{stage}epoch {epoch + 1}/{total_epochs} @{size}px", unit="batch")
        for step in bar:
            idx = perm[step * args.batch_size:(step + 1) * args.batch_size]
            xb = cdata.random_resized_crop(xtr[idx].float().div_(255), size, gen,
                                           scale=cdata.FIXRES_CROP_SCALE if fixres else cdata.CROP_SCALE)
            xb = xb.to(device).contiguous(memory_format=torch.channels_last)   # pixels: the model normalises
            yb = ytr[idx].to(device)
            mix = not fixres and args.cutmix > 0 and torch.rand(1, generator=gen).item() < args.cutmix
            if mix:
                xb, ya, yb_, lam = cutmix(xb, yb, gen)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.precision == "bf16"):
                out = model(xb)
                if mix:
                    loss = (lam * F.cross_entropy(out, ya, label_smoothing=0.1)
                            + (1 - lam) * F.cross_entropy(out, yb_, label_smoothing=0.1))
                else:
                    loss = F.cross_entropy(out, yb, label_smoothing=0.1)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            total += loss.item() * len(idx)
            seen += len(idx)
            bar.set_postfix(loss=f"{total / seen:.3f}")
        elapsed += time.time() - t0
        cpu = time.process_time() - c0
        acc = evaluate(model, xva, yva, device) if (epoch + 1) % 10 == 0 or epoch >= total_epochs - 3 else None
        history.append({"epoch": epoch + 1, "size": size, "train_loss": total / seen, "val_top1": acc,
                        "seconds": round(time.time() - t0, 1), "cpu_seconds": round(cpu, 1)} | ({"stage": "fixres"} if fixres else {}))
        print(json.dumps(history[-1]), flush=True)
        cache.mkdir(parents=True, exist_ok=True)
        torch.save({"model": model.state_dict(), "opt": opt.state_dict(), "sched": sched.state_dict(),
                    "opt_ft": opt_ft.state_dict(), "sched_ft": sched_ft.state_dict(), "gen": gen.get_state(), "epoch": epoch + 1, "history": history, "elapsed": elapsed,
                    "args": vars(args) | {"out": str(args.out)}}, ckpt_path.with_suffix(".tmp"))
        ckpt_path.with_suffix(".tmp").replace(ckpt_path)

    # ---- export: fold BN, evaluate the plain model exactly as the course will use it
    plain = fold_batch_norm(model.cpu().eval())
    acc = evaluate(plain.to(memory_format=torch.channels_last), xva, yva, torch.device("cpu"))
    plain = plain.to(memory_format=torch.contiguous_format)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.contiguous() for k, v in plain.state_dict().items()}
    torch.save(state, args.out)
    record = {
        "architecture": "CourseNet", "blocks": [list(b) for b in COURSE_BLOCKS], "conv1": list(args.conv1),
        "pool": args.pool, "input_size": COURSE_INPUT_SIZE, "precision": args.precision,
        "mean": IMAGENET_MEAN, "std": IMAGENET_STD,
        "classes": [cdata.IMAGENETTE_CLASSES[w][0] for w in cdata.IMAGENETTE_CLASSES],
        "imagenet_indices": [cdata.IMAGENETTE_CLASSES[w][1] for w in cdata.IMAGENETTE_CLASSES],
        "val_top1": acc, "val_images": len(xva), "epochs": args.epochs, "fixres_epochs": args.fixres_epochs,
        "fixres_lr": args.fixres_lr, "cutmix": args.cutmix, "batch_size": args.batch_size,
        "lr": args.lr, "weight_decay": args.weight_decay, "seed": args.seed, "train_images": len(xtr),
        "train_seconds": round(elapsed, 1), "threads": torch.get_num_threads(),
        # CPU time of the whole process: unlike the wall clock, it does not grow when other work shares the
        # machine, so train_cpu_seconds / threads is what the run would take on an otherwise idle machine
        "train_cpu_seconds": round(sum(h.get("cpu_seconds", 0.0) for h in history), 1), "device": str(device), "machine": platform.processor() or platform.machine(),
        "cpu": cpu_name(), "cpu_bf16_units": has_bf16_units(),
        "torch": torch.__version__, "data": f"{cdata.IMAGENETTE_224} manifest sha256 {manifest}",
        "weights_sha256": cdata.sha256_of(args.out), "history": history,
    }
    out_json = args.out.with_suffix(".json")
    out_json.write_text(json.dumps(record, indent=1) + "\n")
    print(f"val top-1 of the shipped (BN-folded) model: {acc:.4f}; wrote {args.out} and {out_json}", flush=True)


if __name__ == "__main__":
    main()
