"""The training command, end to end on a tiny random data set: it trains, exports a
BN-folded model with its record, and resuming after an interruption gives exactly the
weights of an uninterrupted run."""
import json

import pytest
import torch

from course_lib import data, train
from course_lib.models import load_course_model
from course_lib.timing import has_bf16_units, resolve_precision


@pytest.fixture
def tiny_data(monkeypatch, tmp_path):
    monkeypatch.setenv("COURSE_DATA_DIR", str(tmp_path / "data"))
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (24, 3, 224, 224), generator=g, dtype=torch.uint8)
    y = torch.arange(24) % 10

    def fake_decode(split, cache_dir):
        return (x, y) if split == "train" else (x[:12], y[:12])

    monkeypatch.setattr(data, "decode_split", fake_decode)
    monkeypatch.setattr(train, "size_for_epoch", lambda epoch, epochs, final=128: 64)
    return tmp_path


ARGS = ["--epochs", "2", "--batch-size", "8", "--lr", "0.05", "--threads", "2"]


def test_cutmix_pastes_one_box_and_mixes_the_labels_by_its_area():
    g = torch.Generator().manual_seed(3)
    x = torch.arange(4.0)[:, None, None, None].expand(4, 3, 20, 30).clone()  # image i is constant i
    y = torch.tensor([0, 1, 2, 3])
    before = x.clone()
    for _ in range(20):
        mixed, ya, yb, lam = train.cutmix(x, y, g)
        assert torch.equal(x, before) and torch.equal(ya, y)
        for i in range(4):
            own = (mixed[i, 0] == i).float().mean().item()
            if yb[i] == y[i]:
                assert own == 1.0  # paired with itself: unchanged
            else:
                assert abs(own - lam) < 1e-6  # the kept share of pixels is lam ...
                assert ((mixed[i, 0] == float(yb[i])) | (mixed[i, 0] == i)).all()  # ... the rest is the partner's
        assert 0.0 <= lam <= 1.0


def test_progressive_sizes_end_at_the_input_size():
    sizes = [train.size_for_epoch(e, 30) for e in range(30)]
    assert sizes[0] == 96 and sizes[-1] == 128 and sizes == sorted(sizes)


def test_train_exports_a_loadable_folded_model(tiny_data):
    out = tiny_data / "model.pt"
    train.main(ARGS + ["--cutmix", "0.5", "--out", str(out)])
    rec = json.loads(out.with_suffix(".json").read_text())
    assert rec["epochs"] == 2 and rec["seed"] == 0 and len(rec["history"]) == 2 and rec["cutmix"] == 0.5
    model = load_course_model(out)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())
    assert model.record["val_top1"] == rec["val_top1"]


def test_resume_gives_the_same_weights(tiny_data, monkeypatch):
    full = tiny_data / "full.pt"
    train.main(ARGS + ["--out", str(full)])
    reference = torch.load(full)

    # a fresh cache, interrupted after the first epoch, then resumed
    monkeypatch.setenv("COURSE_DATA_DIR", str(tiny_data / "data2"))
    calls = []

    def interrupt_second_epoch(epoch, epochs, final=128):
        calls.append(epoch)
        if epoch == 1 and len(calls) == 2:
            raise KeyboardInterrupt
        return 64

    monkeypatch.setattr(train, "size_for_epoch", interrupt_second_epoch)
    resumed = tiny_data / "resumed.pt"
    with pytest.raises(KeyboardInterrupt):
        train.main(ARGS + ["--out", str(resumed)])
    assert not resumed.exists()
    train.main(ARGS + ["--out", str(resumed), "--resume"])
    got = torch.load(resumed)
    for k in reference:
        torch.testing.assert_close(got[k], reference[k], rtol=0, atol=0)


def test_the_v2_variant_flags_train_and_load(tiny_data):
    """The architecture variants and the FixRes stage: recorded, and the record rebuilds the network."""
    out = tiny_data / "v2.pt"
    train.main(ARGS + ["--out", str(out), "--conv1", "8", "2", "3", "--pool", "blur", "--fixres-epochs", "1"])
    rec = json.loads(out.with_suffix(".json").read_text())
    assert rec["conv1"] == [8, 2, 3] and rec["pool"] == "blur"
    # the precision follows the CPU (bf16 only with bf16 units: emulated, it is ~100x slower), and is recorded
    assert rec["precision"] == resolve_precision("auto") and rec["cpu_bf16_units"] == has_bf16_units()
    assert [h.get("stage") for h in rec["history"]] == [None, None, "fixres"] and rec["history"][-1]["size"] == 128
    model = load_course_model(out)
    from course_lib.models import BlurMaxPool2d
    assert model.features.conv1_1.kernel_size == (8, 8) and isinstance(model.features.pool1, BlurMaxPool2d)
    assert model.record["val_top1"] == rec["val_top1"]
