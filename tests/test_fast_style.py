"""Tests for course_lib.fast_style: the transformer network keeps any input size and is
deterministic given its seed; training lowers the perceptual loss within 20 steps on a tiny
set and a resumed run ends with exactly the weights of an uninterrupted one; the perceptual
loss equals notebook 07's three terms; every shipped network loads, checks its sha256 and
moves its output's style loss far below the photo's; bad input gets a clear error."""
import json
import shutil

import pytest
import torch

from course_lib import data as D
from course_lib import fast_style as FS
from course_lib import style as ST


def _photos(n=12, size=48, seed=0):
    return (torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(seed)) * 255).to(torch.uint8)


@pytest.mark.parametrize("variant", ["full", "compact"])
@pytest.mark.parametrize("norm", ["instance", "batch"])
def test_output_has_the_input_size_and_valid_pixels(norm, variant):
    net = FS.make_net(norm, variant, seed=0)
    for h, w in [(33, 47), (64, 64), (17, 5), (101, 99)]:
        x = torch.rand(2, 3, h, w, generator=torch.Generator().manual_seed(h))
        y = FS.stylise(net, x)
        assert y.shape == x.shape
        assert 0 <= y.min() and y.max() <= 1
    assert net.training  # stylise put it in eval mode and back


def test_transposed_convolution_reaches_pixels_unevenly_and_resize_conv_evenly():
    t, r = FS.upsampling_taps("transposed", 6), FS.upsampling_taps("resize", 6)
    assert t.shape == r.shape == (12, 12)
    inner = t[:-1, :-1]  # the last row/column lose their overlap partner at the border
    assert set(inner.unique().tolist()) == {1.0, 2.0, 4.0}
    torch.testing.assert_close(inner[:2, :2], torch.tensor([[1.0, 2.0], [2.0, 4.0]]))
    torch.testing.assert_close(inner, inner[:2, :2].repeat(6, 6)[:11, :11])  # period 2: the checkerboard
    assert torch.equal(r, torch.full((12, 12), 9.0))
    with pytest.raises(ValueError, match="transposed"):
        FS.upsampling_taps("bilinear")


def test_architecture_table_follows_the_paper():
    rows = {r["stage"]: r for r in FS.architecture_table(FS.make_net(), 64)}
    assert rows["down3"]["output"] == [128, 16, 16] and rows["residual"]["output"] == [128, 16, 16]
    assert rows["out"]["output"] == [3, 64, 64]
    assert sum(r["parameters"] for r in rows.values()) == FS.parameter_count(FS.make_net())


def test_bfloat16_stylising_stays_close_to_float32():
    net = FS.make_net("instance", "compact", seed=1)
    x = torch.rand(1, 3, 40, 56, generator=torch.Generator().manual_seed(2))
    a, b = FS.stylise(net, x), FS.stylise(net, x, bf16=True)
    assert b.dtype == torch.float32 and b.shape == a.shape
    assert 0 < (a - b).abs().mean() < 0.01


def test_the_seed_fixes_the_network_and_another_seed_changes_it():
    a, b, c = FS.make_net(seed=3), FS.make_net(seed=3), FS.make_net(seed=4)
    x = torch.rand(1, 3, 40, 40, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(FS.stylise(a, x), FS.stylise(b, x), rtol=0, atol=0)
    assert not torch.allclose(FS.stylise(a, x), FS.stylise(c, x))
    # make_net leaves the global random state alone
    torch.manual_seed(0)
    before = torch.rand(1)
    torch.manual_seed(0)
    FS.make_net(seed=5)
    assert torch.equal(torch.rand(1), before)


def test_instance_norm_ignores_the_photos_contrast_and_batch_norm_does_not():
    """Instance norm divides every map by its own statistics: after the first conv and norm, a
    photo and the same photo at half contrast (plus a brightness shift) give the same features."""
    x = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    y = 0.5 * x + 0.2
    inst, batch = FS.make_net("instance"), FS.make_net("batch")
    inst.eval(), batch.eval()  # batch norm at test time: fixed running statistics, contrast passes through
    d_inst = (inst.down1(x) - inst.down1(y)).abs().max().item()
    d_batch = (batch.down1(x) - batch.down1(y)).abs().max().item()
    assert d_inst < 0.01 < d_batch  # (not exactly 0: the norm's epsilon 1e-5 in sqrt(var + eps))
    assert d_inst < 0.02 * d_batch


def test_perceptual_loss_is_notebook_07s_three_terms(tiny_net):
    style = torch.rand(1, 3, 48, 48, generator=torch.Generator().manual_seed(2))
    photos = torch.rand(2, 3, 40, 40, generator=torch.Generator().manual_seed(3))
    y = torch.rand(2, 3, 40, 40, generator=torch.Generator().manual_seed(4))
    layers, content_layer = ("relu1_1", "relu2_1"), "relu3_1"
    j = FS.perceptual_loss(tiny_net, style, style_weight=3.0, tv_weight=0.5, layers=layers, content_layer=content_layer)
    got = FS.opt.evaluate(tiny_net, j, torch.cat([y, photos]))
    assert got.shape == (2,)
    for i in range(2):
        terms = ST.transfer_losses(tiny_net, y[i:i + 1], photos[i:i + 1], style, layers=layers, content_layer=content_layer)
        want = -(terms["content"] + 3.0 * terms["style"] + 0.5 * terms["tv"])
        assert got[i].item() == pytest.approx(want, rel=1e-4)


def test_training_lowers_the_loss_within_20_steps(tiny_net):
    style = torch.rand(1, 3, 48, 48, generator=torch.Generator().manual_seed(5))
    net = FS.make_net("instance", "compact", seed=0)
    before = [p.requires_grad for p in tiny_net.parameters()]
    losses = FS.train(net, tiny_net, style, FS.photo_batches(_photos(), 40, 2, seed=0), steps=20, every=10,
                      progress=False)
    assert len(losses) == 20
    assert sum(losses[-5:]) / 5 < 0.7 * sum(losses[:5]) / 5
    assert [p.requires_grad for p in tiny_net.parameters()] == before  # the loss network is handed back as it was


@pytest.mark.parametrize("norm", ["instance", "batch"])
def test_a_resumed_run_ends_with_the_weights_of_an_uninterrupted_one(tiny_net, tmp_path, norm):
    style = torch.rand(1, 3, 48, 48, generator=torch.Generator().manual_seed(6))
    batches = FS.photo_batches(_photos(), 32, 2, seed=1)
    straight = FS.make_net(norm, "compact", seed=0)
    FS.train(straight, tiny_net, style, batches, steps=8, every=4, progress=False)

    ckpt = tmp_path / "ck.pt"
    first = FS.make_net(norm, "compact", seed=0)
    FS.train(first, tiny_net, style, batches, steps=4, every=4, checkpoint=ckpt, progress=False)
    resumed = FS.make_net(norm, "compact", seed=0)  # a new process: fresh weights, then the checkpoint
    losses = FS.train(resumed, tiny_net, style, batches, steps=8, every=4, checkpoint=ckpt, progress=False)
    assert len(losses) == 8
    for (name, a), b in zip(straight.state_dict().items(), resumed.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=0, atol=0, msg=name)


def test_photo_batches_are_a_function_of_the_step():
    batches = FS.photo_batches(_photos(), 24, 3, seed=0)
    assert batches(5).shape == (3, 3, 24, 24)
    assert torch.equal(batches(5), batches(5))
    assert not torch.equal(batches(5), batches(6))
    with pytest.raises(ValueError, match="uint8"):
        FS.photo_batches(torch.rand(4, 3, 8, 8), 8, 2, 0)


def test_bad_input_gets_a_clear_error(tmp_path):
    net = FS.make_net("instance", "compact")
    with pytest.raises(ValueError, match=r"\[N, 3, H, W\].*RGBA"):
        FS.stylise(net, torch.rand(1, 4, 32, 32))
    with pytest.raises(ValueError, match=r"\[N, 3, H, W\].*greyscale"):
        FS.stylise(net, torch.rand(1, 1, 32, 32))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        FS.stylise(net, torch.rand(1, 3, 32, 32) * 255)
    with pytest.raises(ValueError, match="norm must be one of instance, batch"):
        FS.make_net("layer")
    with pytest.raises(ValueError, match="variant"):
        FS.make_net("instance", "tiny")
    with pytest.raises(ValueError, match="unknown style 'mona_lisa'.*starry_night"):
        FS._style_image("mona_lisa", 64)
    with pytest.raises(ValueError, match="no fast-style network for style='mona_lisa'"):
        FS.load_fast_style("mona_lisa")
    # a corrupt weights file: its sha256 no longer matches the record
    record = next(p for p in sorted(FS.FAST_STYLE_DIR.glob("*.json")))
    for p in (record, record.with_suffix(".pt")):
        shutil.copy(p, tmp_path / p.name)
    meta = json.loads(record.read_text())
    with open(tmp_path / record.with_suffix(".pt").name, "r+b") as f:
        f.seek(200)
        f.write(b"\x00" * 16)
    with pytest.raises(D.ChecksumError, match="corrupt"):
        FS.load_fast_style(meta["style"], meta["norm"], meta["variant"], folder=tmp_path)
    (tmp_path / record.with_suffix(".pt").name).unlink()
    with pytest.raises(D.DataError, match="missing"):
        FS.load_fast_style(meta["style"], meta["norm"], meta["variant"], folder=tmp_path)


SHIPPED = [(r["style"], r["norm"], r["variant"]) for r in FS.available()]


def test_at_least_four_styles_and_both_norms_are_shipped():
    styles = {s for s, n, v in SHIPPED if n == "instance" and v == "full"}
    assert len(styles) >= 4, styles
    assert any(n == "batch" for s, n, v in SHIPPED)
    for s, n, v in SHIPPED:
        assert FS.weights_path(s, n, v).stat().st_size <= 8 * 2 ** 20


@pytest.mark.parametrize("style,norm,variant", SHIPPED)
def test_every_shipped_network_paints_its_style(style, norm, variant, course_model, val_set):
    """On held-out val photos (256 px, as in the records): the output's style loss is far below
    the photo's own, and the output is still that photo: nearer to it in content than a photo of
    another class is."""
    from course_lib.imaging import to_tensor

    net = FS.load_fast_style(style, norm, variant)
    record = json.loads(FS.weights_path(style, norm, variant).with_suffix(".json").read_text())
    assert record["parameters"] == FS.parameter_count(net)
    s = FS._style_image(style, 256)

    def photo(i):
        return to_tensor(val_set[i][0].resize((256, 256)))[None]

    for i in (7, 2000):
        c, other = photo(i), photo((i + 1500) % len(val_set))
        y = FS.stylise(net, c)
        assert ST.style_distance(course_model, y, s) < 0.5 * ST.style_distance(course_model, c, s)
        assert ST.transfer_losses(course_model, y, c, s)["content"] < ST.transfer_losses(course_model, other, c, s)["content"]


def test_the_train_command_writes_weights_and_a_record_that_load(tiny_net, tmp_path, monkeypatch):
    """``python -m course_lib.fast_style train`` end to end, on a tiny loss network and photo set."""
    import course_lib.models

    monkeypatch.setattr(course_lib.models, "load_model", lambda name, device=None: tiny_net)
    monkeypatch.setattr(D, "decode_split", lambda split, cache: (_photos(16, 40), torch.zeros(16)))
    monkeypatch.setattr(FS, "_held_out_photos", lambda n, size: [torch.rand(1, 3, 48, 48) for _ in range(n)])
    monkeypatch.setattr(FS, "_style_image", lambda name, size: torch.rand(1, 3, 48, 48))
    monkeypatch.setattr(D, "data_dir", lambda: tmp_path)
    FS.main(["train", "--style", "wave", "--variant", "compact", "--steps", "6", "--size", "32", "--batch-size", "2",
             "--held-out", "2", "--out", str(tmp_path / "nets")])
    record = json.loads((tmp_path / "nets" / "wave_instance_compact.json").read_text())
    for key in ("style_weight", "tv_weight", "steps", "seed", "train_seconds", "device", "held_out", "weights_sha256"):
        assert key in record
    assert record["steps"] == 6 and record["held_out"]["images"] == 2
    net = FS.load_fast_style("wave", "instance", "compact", folder=tmp_path / "nets")
    assert FS.parameter_count(net) == record["parameters"]
    assert not list((tmp_path / "cache").glob("*checkpoint*"))  # the checkpoint is gone once the weights are written


def test_vgg16_works_as_the_loss_network():
    """--loss-model vgg16: Gatys's VGG layers (relu1_1..relu5_1, content relu4_2) are used and training runs."""
    import torchvision

    from course_lib.models import prepare_model

    torch.manual_seed(0)
    vgg = prepare_model(torchvision.models.vgg16(), [str(i) for i in range(1000)], 224,
                        (0.485, 0.456, 0.406), (0.229, 0.224, 0.225), None)
    j = FS.perceptual_loss(vgg, torch.rand(1, 3, 48, 48), style_weight=1.0, tv_weight=1.0)
    assert set(j.layers) == {"relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1", "relu4_2"}
    net = FS.make_net("instance", "compact")
    losses = FS.train(net, vgg, torch.rand(1, 3, 48, 48), FS.photo_batches(_photos(), 32, 2, 0), steps=2,
                      every=2, progress=False)
    assert len(losses) == 2 and all(torch.isfinite(torch.tensor(losses)))
