"""Fast style transfer (Johnson, Alahi & Fei-Fei 2016): train a network once per style, then
stylise any photo in one forward pass (lecture notebook 08).

Gatys's method (notebook 07) optimises the pixels of every new image: a hundred L-BFGS steps,
seconds to minutes each picture. Johnson et al. move the optimisation to training time. A
**transformer network** ``T_theta`` maps a photo ``c`` to a stylised image ``y = T_theta(c)``
and its weights are trained, on many photos, to minimise the *same* perceptual losses:

    theta* = argmin_theta  E_c [ L_content(T_theta(c), c) + beta L_style(T_theta(c), s)
                                 + gamma L_TV(T_theta(c)) ]

with ``L_content`` and ``L_style`` measured by a frozen **loss network** (here the course
model; VGG-16 in the paper) exactly as in :mod:`course_lib.style`. Afterwards stylising is
one forward pass of ``T_theta``: milliseconds instead of a minute.

Training is one more use of the course's optimisation core: :func:`course_lib.optimize.optimize`
maximises ``J = -(loss)`` over a *parameterisation*; here the parameterisation
(:class:`Stylised`) is the transformer network applied to a batch of photos, so the
optimiser changes the network's weights rather than pixels.

The network (Johnson et al. 2016, with two later fixes):

* reflection padding before every convolution (zero padding leaves dark borders);
* two stride-2 convolutions down, five residual blocks, two upsampling stages back up;
* upsampling by **resize + convolution**, not transposed convolution: a 3x3 transposed
  convolution with stride 2 lets some output pixels receive contributions from twice as many
  kernel taps as their neighbours (the kernel size is not a multiple of the stride), which
  prints a checkerboard on every output (Odena, Dumoulin & Olah 2016, *Deconvolution and
  checkerboard artifacts*). Nearest-neighbour resizing first, then an ordinary convolution,
  gives every output pixel the same number of taps;
* **instance normalisation** (Ulyanov, Vedaldi & Lempitsky 2016): each feature map of each
  image is normalised by its *own* mean and standard deviation, ``(x - mu_nc) / sigma_nc``,
  which removes the photo's contrast before the style is painted on. Batch normalisation
  (statistics over the batch, then fixed running averages at test time) is the selectable
  alternative for the lecture's comparison.
"""
from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from . import data as cdata
from . import optimize as opt
from . import records
from . import style as st
from .inputs import check_int, check_number, check_pixels, model_device
from .layers import eval_mode
from .models import DATA_DIR
from .timing import cpu_name, has_bf16_units, resolve_precision

#: The shipped networks live here: ``<style>_<norm>[_compact].pt`` and a JSON record beside each.
FAST_STYLE_DIR = DATA_DIR / "fast_style"
NORMS = ("instance", "batch")
#: Channels of the three resolutions and number of residual blocks: the paper's network, and a
#: compact one (half the channels, three blocks: about a ninth of the arithmetic).
VARIANTS = {"full": ((32, 64, 128), 5), "compact": ((16, 32, 64), 3)}
#: What a network's JSON record must hold for :func:`load_fast_style`.
RECORD_KEYS = ("style", "norm", "variant", "channels", "residual_blocks", "weights_sha256")
_RESTORE = "restore it from the repository, or retrain the network (python -m course_lib.fast_style train)"


# --------------------------------------------------------------------------- the network


def _norm(kind: str, channels: int) -> nn.Module:
    if kind == "instance":
        return nn.InstanceNorm2d(channels, affine=True)
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    raise ValueError(f"norm must be one of {', '.join(NORMS)}, not {kind!r}")


class ConvBlock(nn.Sequential):
    """Reflection padding, a convolution, then (optionally) normalisation and ReLU."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int = 1, norm: str | None = "instance",
                 relu: bool = True):
        layers = [nn.ReflectionPad2d(kernel // 2), nn.Conv2d(cin, cout, kernel, stride)]
        if norm:
            layers.append(_norm(norm, cout))
        if relu:
            layers.append(nn.ReLU(inplace=True))
        super().__init__(*layers)


class ResidualBlock(nn.Module):
    """``x + conv-norm-ReLU-conv-norm(x)``: the block learns a change to its input."""

    def __init__(self, channels: int, norm: str):
        super().__init__()
        self.body = nn.Sequential(ConvBlock(channels, channels, 3, norm=norm),
                                  ConvBlock(channels, channels, 3, norm=norm, relu=False))

    def forward(self, x):
        return x + self.body(x)


class UpsampleConv(nn.Module):
    """Nearest-neighbour resize to ``size``, then a :class:`ConvBlock` (no transposed convolution:
    every output pixel gets the same number of kernel taps, so no checkerboard)."""

    def __init__(self, cin: int, cout: int, norm: str):
        super().__init__()
        self.conv = ConvBlock(cin, cout, 3, norm=norm)

    def forward(self, x, size):
        return self.conv(F.interpolate(x, size=size, mode="nearest"))


class TransformerNet(nn.Module):
    """Johnson et al.'s image transformation network: pixels ``[N, 3, H, W]`` in ``[0, 1]`` in,
    a stylised image of the same size (any ``H``, ``W``, odd ones too) in ``[0, 1]`` out.

    ``norm``: ``"instance"`` or ``"batch"``. ``channels`` ``(c1, c2, c3)``: 9x9 conv to ``c1``,
    two stride-2 3x3 convs to ``c2`` and ``c3``, ``residual_blocks`` blocks at ``c3``, two
    resize+conv stages back to ``c2``, ``c1``, and a 9x9 conv to RGB squashed by a sigmoid.
    The upsampling stages resize to the exact sizes of the encoder's maps, so the output
    always has the input's size.
    """

    def __init__(self, norm: str = "instance", channels=VARIANTS["full"][0], residual_blocks: int = VARIANTS["full"][1]):
        super().__init__()
        _norm(norm, 1)  # a clear error for an unknown norm
        if isinstance(channels, (str, bytes)) or len(channels) != 3:
            raise ValueError(f"channels must be three ints (c1, c2, c3), got {channels!r}")
        c1, c2, c3 = (check_int(c, "channels", low=1) for c in channels)
        residual_blocks = check_int(residual_blocks, "residual_blocks", low=0)
        self.norm, self.channels, self.residual_blocks = norm, tuple(channels), residual_blocks
        self.down1 = ConvBlock(3, c1, 9, norm=norm)
        self.down2 = ConvBlock(c1, c2, 3, stride=2, norm=norm)
        self.down3 = ConvBlock(c2, c3, 3, stride=2, norm=norm)
        self.residual = nn.Sequential(*[ResidualBlock(c3, norm) for _ in range(residual_blocks)])
        self.up1 = UpsampleConv(c3, c2, norm)
        self.up2 = UpsampleConv(c2, c1, norm)
        self.out = ConvBlock(c1, 3, 9, norm=None, relu=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4 or x.shape[1] != 3:
            raise ValueError(f"expected RGB images [N, 3, H, W], got shape {list(x.shape)}")
        if min(x.shape[-2:]) < 5:
            raise ValueError(f"the image is too small ({x.shape[-2]}x{x.shape[-1]}): at least 5x5 pixels")
        a1 = self.down1(x)
        a2 = self.down2(a1)
        y = self.residual(self.down3(a2))
        y = self.up1(y, a2.shape[-2:])
        y = self.up2(y, a1.shape[-2:])
        return torch.sigmoid(self.out(y))


def make_net(norm: str = "instance", variant: str = "full", seed: int = 0) -> TransformerNet:
    """A freshly initialised :class:`TransformerNet` (``variant``: ``"full"`` or ``"compact"``),
    its weights fixed by ``seed``."""
    if variant not in VARIANTS:
        raise ValueError(f"variant must be one of {', '.join(VARIANTS)}, not {variant!r}")
    channels, blocks = VARIANTS[variant]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(check_int(seed, "seed"))
        return TransformerNet(norm, channels, blocks)


def parameter_count(net: nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())


@torch.no_grad()
def architecture_table(net: TransformerNet, size: int = 256) -> list[dict]:
    """One row per stage for a ``size`` x ``size`` input: name, output shape ``[C, H, W]``, parameters."""
    size = check_int(size, "size", low=5)
    rows, handles = [], []
    for name, module in net.named_children():
        handles.append(module.register_forward_hook(
            lambda m, i, o, name=name: rows.append({"stage": name, "output": list(o.shape[1:]),
                                                    "parameters": parameter_count(m)})))
    try:
        with eval_mode(net):
            net(torch.zeros(1, 3, size, size, device=model_device(net)))
    finally:
        for h in handles:
            h.remove()
    return rows


def upsampling_taps(kind: str, size: int = 8) -> torch.Tensor:
    """How many kernel taps reach each output pixel when a ``size`` x ``size`` map is upsampled
    2x by a 3x3 layer with all weights 1 applied to an all-ones input: ``"transposed"``
    (stride-2 transposed convolution) or ``"resize"`` (nearest resize, then a 3x3 convolution
    with reflection padding, as in :class:`UpsampleConv`). Returns the ``[2 size, 2 size]`` map."""
    size = check_int(size, "size", low=1)
    ones = torch.ones(1, 1, size, size)
    w = torch.ones(1, 1, 3, 3)
    if kind == "transposed":
        return F.conv_transpose2d(ones, w, stride=2, padding=1, output_padding=1)[0, 0]
    if kind == "resize":
        up = F.interpolate(ones, scale_factor=2, mode="nearest")
        return F.conv2d(F.pad(up, (1, 1, 1, 1), mode="reflect"), w)[0, 0]
    raise ValueError(f"kind must be 'transposed' or 'resize', not {kind!r}")


# --------------------------------------------------------------------------- the losses


def perceptual_loss(loss_model, style_image: torch.Tensor, *, style_weight: float, tv_weight: float,
                    layers=None, content_layer: str | None = None) -> opt.Objective:
    """``J = -(L_content + beta L_style + gamma L_TV)`` for a batch ``[y; c]`` of ``n`` stylised
    images followed by their ``n`` photos (what :class:`Stylised` produces), one value per image:

        L_content(y_i) = |F_l(y_i) - F_l(c_i)|^2 / |F_l(c_i)|^2,   L_style, L_TV as in notebook 07.

    The loss network sees stylised images and photos in one forward pass. ``style_weight`` and
    ``tv_weight`` must be >= 0; ``style_image`` is one image.
    """
    style_weight, tv_weight = st._weights(style_weight, tv_weight)
    layers, content_layer = st.resolve_layers(loss_model, layers, content_layer)
    style_term = st.style_loss(st.style_targets(loss_model, style_image, layers=layers))
    tv = opt.total_variation()

    def f(a, x):
        n = x.shape[0] // 2
        y, c = a[content_layer][:n], a[content_layer][n:].detach()
        content = (y - c).pow(2).flatten(1).sum(1) / c.pow(2).flatten(1).sum(1).clamp_min(1e-12)
        first = {name: v[:n] for name, v in a.items()}
        return -content + style_weight * style_term(first, x[:n]) - tv_weight * tv(first, x[:n])

    return opt.Objective(tuple(dict.fromkeys(layers + (content_layer,))), f, "-(L_content + beta L_style + gamma L_TV)")


# --------------------------------------------------------------------------- training data


def photo_batches(photos_u8: torch.Tensor, size: int, batch_size: int, seed: int) -> Callable[[int], torch.Tensor]:
    """``batch(k)``: ``batch_size`` training photos for step ``k``, ``[B, 3, size, size]`` in ``[0, 1]``.

    ``photos_u8``: uint8 images ``[N, 3, H, W]``. Which photos, and their random crop (at least
    64% of the area) and flip, are drawn from a generator seeded by ``(seed, k)``: batch ``k`` is
    the same whenever it is asked for, so a resumed run sees exactly the photos it would have seen.
    """
    if photos_u8.dtype != torch.uint8 or photos_u8.ndim != 4 or photos_u8.shape[1] != 3 or not len(photos_u8):
        raise ValueError(f"photos must be uint8 [N, 3, H, W], N >= 1, got {photos_u8.dtype} {list(photos_u8.shape)}")
    size, batch_size = check_int(size, "size", low=5), check_int(batch_size, "batch_size", low=1)
    seed = check_int(seed, "seed")

    def batch(k: int) -> torch.Tensor:
        g = torch.Generator().manual_seed(seed * 1_000_003 + k)
        idx = torch.randint(len(photos_u8), (batch_size,), generator=g)
        crops = cdata.random_resized_crop(photos_u8[idx].float() / 255, size, g, scale=cdata.FIXRES_CROP_SCALE)
        return crops.clamp(0, 1)

    return batch


def photo_set(images, size: int) -> torch.Tensor:
    """PIL images as a uint8 tensor ``[N, 3, size, size]`` (each squashed to a square) for :func:`photo_batches`."""
    import numpy as np

    size = check_int(size, "size", low=1)
    if not len(images):
        raise ValueError("images is empty: give at least one PIL image")

    return torch.stack([torch.from_numpy(np.asarray(im.convert("RGB").resize((size, size))).copy()).permute(2, 0, 1)
                        for im in images])


class Stylised(nn.Module):
    """The parameterisation of fast style transfer: ``image() = [T_theta(c); c]`` for the current
    batch of photos ``c = photos(index)``. Optimising it trains the network's weights ``theta``;
    the photos ride along so the loss network sees both halves in one pass
    (:func:`perceptual_loss`). The projection :func:`next_batch` moves on to the next batch
    after every step."""

    def __init__(self, net: TransformerNet, photos: Callable[[int], torch.Tensor], index: int = 0, bf16: bool = False):
        super().__init__()
        self.net, self.photos, self.index, self.bf16 = net, photos, index, bf16

    def forward(self) -> torch.Tensor:
        c = self.photos(self.index).to(model_device(self.net))
        with torch.autocast(c.device.type, dtype=torch.bfloat16, enabled=self.bf16):
            y = self.net(c)
        return torch.cat([y.float(), c])


def next_batch(param: Stylised, step: int) -> None:
    """A projection for :func:`course_lib.optimize.optimize`: after each step, the next batch of photos."""
    param.index += 1


# --------------------------------------------------------------------------- training


def train(net: TransformerNet, loss_model, style_image: torch.Tensor, photos: Callable[[int], torch.Tensor],
          steps: int, style_weight: float = 1.0, tv_weight: float = 1.0, lr: float = 1e-3,
          checkpoint: Path | None = None, every: int = 50, bf16: bool = False, progress: bool = True,
          callback=None) -> list[float]:
    """Train ``net`` (in place) for fast style transfer; returns the loss of every step.

    Adam (``lr``) on the :func:`perceptual_loss` of the batches ``photos(0), photos(1), ...``,
    through :func:`course_lib.optimize.optimize` in pieces of ``every`` steps. With
    ``checkpoint``, the network, the optimiser's state and the losses so far are saved after
    each piece, and a run finding the file continues from it: the result is identical to an
    uninterrupted run. ``callback(step, losses)`` after each piece (e.g. to plot the curve).
    ``bf16``: run the transformer network in bfloat16 autocast (its weights stay float32;
    faster on CPUs with bfloat16 units). The loss network and the losses stay float32: Gram
    matrices in bfloat16 lose the small differences the style loss is made of.
    """
    from tqdm.auto import tqdm

    style_image = check_pixels(style_image, "style image", model=loss_model, batch=False)
    steps, every = check_int(steps, "steps", low=0), check_int(every, "every", low=1)
    lr = check_number(lr, "lr", low=0, hint="Adam's step size")
    device = model_device(net)
    objective = perceptual_loss(loss_model, style_image.to(device), style_weight=style_weight, tv_weight=tv_weight)
    adam = torch.optim.Adam(net.parameters(), lr=lr)
    losses: list[float] = []
    if checkpoint is not None and Path(checkpoint).exists():
        ck = torch.load(checkpoint, map_location=device, weights_only=True)
        net.load_state_dict(ck["net"])
        adam.load_state_dict(ck["adam"])
        losses = list(ck["losses"])
    param = Stylised(net, photos, index=len(losses), bf16=bf16)
    was_training = net.training
    net.train()
    try:
        with tqdm(total=steps, initial=min(len(losses), steps), desc="training", unit="step",
                  disable=not progress) as bar:
            while len(losses) < steps:
                n = min(every, steps - len(losses))
                images, history = opt.optimize(loss_model, objective, param, steps=n, step_rule=adam,
                                               projections=[next_batch], progress=False)
                losses += [-j / (images.shape[0] // 2) for j in history.objective]
                bar.update(n)
                bar.set_postfix(loss=f"{sum(losses[-n:]) / n:.3f}")
                if checkpoint is not None:
                    tmp = Path(checkpoint).with_suffix(".tmp")
                    torch.save({"net": net.state_dict(), "adam": adam.state_dict(), "losses": losses}, tmp)
                    tmp.replace(checkpoint)
                if callback is not None:
                    callback(len(losses), losses)
    finally:
        net.train(was_training)
    return losses


# --------------------------------------------------------------------------- using a trained network


@torch.no_grad()
def stylise(net: TransformerNet, photo: torch.Tensor, bf16: bool = False) -> torch.Tensor:
    """``T_theta(photo)``: one forward pass, in eval mode (restored after), pixels ``[N, 3, H, W]``
    in ``[0, 1]`` in and out, same size. ``bf16``: in bfloat16 autocast, as the shipped networks
    were trained (about 2.5x faster on CPUs with bfloat16 units such as AMX, much slower on
    CPUs without them; pixels change by about 0.002 on average)."""
    x = check_pixels(photo, "photo", model=net).to(model_device(net))
    with eval_mode(net), torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=bf16):
        return net(x).float()


def weights_path(style: str, norm: str = "instance", variant: str = "full", folder: Path = FAST_STYLE_DIR) -> Path:
    suffix = "" if variant == "full" else f"_{variant}"
    return Path(folder) / f"{style}_{norm}{suffix}.pt"


def read_record(path: Path) -> dict:
    """The JSON record of a shipped network. A file that is missing, not JSON, not an object, or lacks one
    of :data:`RECORD_KEYS` raises a :class:`course_lib.data.DataError` naming the file (and the keys)."""
    return records.read_record(path, RECORD_KEYS, _RESTORE)


def available(folder: Path = FAST_STYLE_DIR) -> list[dict]:
    """The records of the shipped networks (one dict per network: style, norm, variant, losses ...),
    each checked by :func:`read_record`."""
    return [read_record(p) for p in sorted(Path(folder).glob("*.json"))]


def load_fast_style(style: str, norm: str = "instance", variant: str = "full", folder: Path = FAST_STYLE_DIR,
                    device=None) -> TransformerNet:
    """A shipped network, in eval mode, its file checked against the sha256 in its JSON record."""
    path = weights_path(style, norm, variant, folder)
    record_path = path.with_suffix(".json")
    if not record_path.exists():
        have = sorted({(r["style"], r["norm"], r["variant"]) for r in available(folder)})
        listing = "; ".join(f"{s} ({n}{'' if v == 'full' else ', ' + v})" for s, n, v in have) or "none"
        raise ValueError(f"no fast-style network for style={style!r}, norm={norm!r}, variant={variant!r}. "
                         f"Shipped: {listing}. Train one with: python -m course_lib.fast_style train --style {style}")
    state, record = records.load_weights(path, RECORD_KEYS, _RESTORE)
    net = TransformerNet(record["norm"], record["channels"], record["residual_blocks"])
    net.load_state_dict(state)
    return net.to(device or "cpu").eval()


@torch.no_grad()
def held_out_losses(net: TransformerNet, loss_model, style_image: torch.Tensor, photos) -> dict:
    """Mean ``L_content`` and ``L_style`` of the stylised held-out ``photos`` (a list of
    ``[1, 3, H, W]``, or a batch ``[N, 3, H, W]``: each image on its own), and ``L_style`` of the
    photos themselves (what the network starts from)."""
    if not len(photos):
        raise ValueError("photos is empty: give at least one held-out photo [1, 3, H, W]")
    rows = []
    for c in photos:
        y = stylise(net, c)
        terms = st.transfer_losses(loss_model, y, c, style_image)
        rows.append((terms["content"], terms["style"], st.style_distance(loss_model, c, style_image)))
    n = len(rows)
    return {"content": sum(r[0] for r in rows) / n, "style": sum(r[1] for r in rows) / n,
            "style_of_photos": sum(r[2] for r in rows) / n, "images": n}


# --------------------------------------------------------------------------- the command


def _held_out_photos(n: int, size: int) -> list[torch.Tensor]:
    from .imaging import to_tensor

    val = cdata.imagenette("val")
    return [to_tensor(val[i][0].resize((size, size)))[None] for i in cdata.spread_indices(len(val), n)]


def _style_image(name: str, size: int) -> torch.Tensor:
    from .imaging import to_tensor

    if name not in cdata.IMAGES or cdata.IMAGES[name].folder != "styles":
        styles = [k for k, a in cdata.IMAGES.items() if a.folder == "styles"]
        raise ValueError(f"unknown style {name!r}; the course's styles are: {', '.join(styles)}")
    return to_tensor(cdata.load_image(name, size))[None]


def main(argv=None):
    from .models import load_model

    p = argparse.ArgumentParser(prog="python -m course_lib.fast_style", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    t = sub.add_parser("train", help="train a transformer network for one style and ship it to data/fast_style/")
    t.add_argument("--style", required=True, help="a course style image, e.g. starry_night")
    t.add_argument("--norm", choices=NORMS, default="instance")
    t.add_argument("--variant", choices=tuple(VARIANTS), default="full")
    t.add_argument("--loss-model", default="course", help="the loss network: course (default) or vgg16 (needs its weights)")
    t.add_argument("--steps", type=int, default=1000)
    t.add_argument("--batch-size", type=int, default=4)
    t.add_argument("--size", type=int, default=160, help="training crops, pixels (the style image's shorter side too)")
    t.add_argument("--style-weight", type=float, default=1.0, help="beta / alpha (notebook 07's default)")
    t.add_argument("--tv-weight", type=float, default=1.0, help="gamma / alpha")
    t.add_argument("--lr", type=float, default=1e-3)
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--precision", choices=("auto", "bf16", "fp32"), default="auto",
                   help="bfloat16 autocast for the transformer network (its weights, the loss network "
                        "and the losses stay float32), or float32 throughout; auto: bf16 on a GPU or a CPU "
                        "with bf16 units (AMX, AVX-512 BF16), else fp32 (emulated bf16 is ~100x slower)")
    t.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    t.add_argument("--resume", action="store_true", help="continue from the checkpoint in data/cache/")
    t.add_argument("--held-out", type=int, default=16, help="val images (256 px) for the final losses")
    t.add_argument("--out", type=Path, default=FAST_STYLE_DIR)
    args = p.parse_args(argv)

    torch.manual_seed(args.seed)
    device = torch.device(args.device)
    args.precision = resolve_precision(args.precision, device)
    style_image = _style_image(args.style, args.size)
    loss_model = load_model(args.loss_model, device=device)
    photos_u8, _ = cdata.decode_split("train", cdata.data_dir() / "cache")
    net = make_net(args.norm, args.variant, args.seed).to(device).to(memory_format=torch.channels_last)
    name = weights_path(args.style, args.norm, args.variant, args.out).stem
    ckpt = cdata.data_dir() / "cache" / f"fast_style_{name}_checkpoint.pt"
    ckpt.parent.mkdir(parents=True, exist_ok=True)
    if ckpt.exists() and not args.resume:
        ckpt.unlink()
    state_path = ckpt.with_suffix(".json")
    settings = {k: v for k, v in vars(args).items() if k not in ("resume", "device", "held_out", "out", "steps", "command")}
    elapsed = 0.0
    if args.resume and state_path.exists() and ckpt.exists():
        state = json.loads(state_path.read_text())
        if state.get("settings") != settings:
            raise SystemExit(f"{ckpt} was made with other settings ({state.get('settings')}); "
                             f"run without --resume to start again")
        elapsed = state["seconds"]
    t0 = time.time()

    def log(step, losses):
        state_path.write_text(json.dumps({"seconds": elapsed + time.time() - t0, "steps": step, "settings": settings}))
        if step % 200 == 0 or step == args.steps:
            print(json.dumps({"step": step, "loss": round(sum(losses[-50:]) / len(losses[-50:]), 4)}), flush=True)

    losses = train(net, loss_model, style_image, photo_batches(photos_u8, args.size, args.batch_size, args.seed),
                   args.steps, args.style_weight, args.tv_weight, args.lr, checkpoint=ckpt,
                   bf16=args.precision == "bf16", callback=log)
    seconds = elapsed + time.time() - t0
    net = net.cpu().eval()
    held = held_out_losses(net, loss_model.cpu(), _style_image(args.style, 256), _held_out_photos(args.held_out, 256))
    out = weights_path(args.style, args.norm, args.variant, args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    torch.save({k: v.contiguous() for k, v in net.state_dict().items()}, out)
    style_layers, content_layer = st.resolve_layers(loss_model)
    record = {
        "style": args.style, "norm": args.norm, "variant": args.variant, "channels": list(net.channels),
        "residual_blocks": net.residual_blocks, "parameters": parameter_count(net),
        "loss_model": args.loss_model, "style_layers": list(style_layers),
        "content_layer": content_layer, "style_weight": args.style_weight, "tv_weight": args.tv_weight,
        "steps": args.steps, "batch_size": args.batch_size, "size": args.size, "lr": args.lr, "seed": args.seed,
        "precision": args.precision,
        "train_seconds": round(seconds, 1), "device": str(device), "machine": platform.processor() or platform.machine(),
        "cpu": cpu_name(), "cpu_bf16_units": has_bf16_units(),
        "torch": torch.__version__, "train_loss_last_100": sum(losses[-100:]) / max(1, len(losses[-100:])),
        "held_out": held | {"size": 256, "note": "Imagenette val images, spread_indices(3925, n), squashed to 256x256; "
                                                  "losses against the style image at 256 px (shorter side)"},
        "weights_sha256": cdata.sha256_of(out),
    }
    out.with_suffix(".json").write_text(json.dumps(record, indent=1) + "\n")
    ckpt.unlink(missing_ok=True)
    state_path.unlink(missing_ok=True)
    print(f"held-out (256 px): L_content {held['content']:.3f}, L_style {held['style']:.3f} "
          f"(the photos themselves: {held['style_of_photos']:.3f}); wrote {out} in {seconds / 60:.1f} min", flush=True)


if __name__ == "__main__":
    main()
