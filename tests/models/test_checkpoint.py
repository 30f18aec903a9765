"""load_init: round trips, containers, DDP prefixes, strict errors that list keys, reinit_head."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn as nn

from reldrop.models import build
from reldrop.models.checkpoint import CheckpointMismatchError, classifier_prefix, load_init, read_state_dict


def fresh(num_classes: int = 10, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return build("resnet8_cifar", num_classes=num_classes)


def same_state(a: nn.Module, b: nn.Module, skip: str = "\0") -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa if not k.startswith(skip))


@pytest.mark.parametrize("wrap", ["plain", "state_dict", "model", "model_state_dict", "ddp", "nested"])
def test_round_trip(tmp_path: Path, wrap: str) -> None:
    src, dst = fresh(seed=1), fresh(seed=2)
    with torch.no_grad():  # non-trivial BN buffers too
        src.bn1.running_mean.uniform_()
    assert not same_state(src, dst)
    sd = src.state_dict()
    obj: object = {
        "plain": sd,
        "state_dict": {"state_dict": sd, "epoch": 3},
        "model": {"model": sd, "optimizer": {"lr": torch.tensor(0.1)}},
        "model_state_dict": {"model_state_dict": sd, "epoch": 5},
        "ddp": {f"module.{k}": v for k, v in sd.items()},
        "nested": {"model": {"state_dict": {f"module.{k}": v for k, v in sd.items()}}},
    }[wrap]
    path = tmp_path / "ckpt.pth"
    torch.save(obj, path)
    report = load_init(dst, path)
    assert same_state(src, dst)
    assert report.loaded == sorted(sd) and not report.missing and not report.unexpected and not report.mismatched


def test_strict_error_lists_missing_unexpected_and_mismatched_keys(tmp_path: Path) -> None:
    sd = dict(fresh(num_classes=10).state_dict())
    del sd["layer1.0.conv1.weight"]
    sd["extra.weight"] = torch.zeros(3)
    path = tmp_path / "bad.pt"
    torch.save(sd, path)
    dst = fresh(num_classes=5, seed=3)
    before = {k: v.clone() for k, v in dst.state_dict().items()}
    with pytest.raises(CheckpointMismatchError) as info:
        load_init(dst, path)
    msg = str(info.value)
    assert str(path) in msg
    assert "layer1.0.conv1.weight" in msg and "missing" in msg
    assert "extra.weight" in msg and "unexpected" in msg
    assert "fc.weight" in msg and "fc.bias" in msg and "[10, 64]" in msg and "[5, 64]" in msg
    assert isinstance(info.value, ValueError)
    # nothing was loaded
    assert all(torch.equal(before[k], v) for k, v in dst.state_dict().items())


def test_non_strict_loads_what_matches(tmp_path: Path) -> None:
    src = fresh(num_classes=10, seed=1)
    path = tmp_path / "c.pt"
    torch.save(src.state_dict(), path)
    dst = fresh(num_classes=5, seed=2)
    fc_before = dst.fc.weight.detach().clone()
    report = load_init(dst, path, strict=False)
    assert [k for k, _, _ in report.mismatched] == ["fc.bias", "fc.weight"]
    assert torch.equal(dst.fc.weight, fc_before)
    assert torch.equal(dst.conv1.weight, src.conv1.weight)


def test_reinit_head_keeps_fresh_classifier(tmp_path: Path) -> None:
    src = fresh(num_classes=10, seed=1)
    path = tmp_path / "c.pt"
    torch.save({"state_dict": {f"module.{k}": v for k, v in src.state_dict().items()}}, path)
    dst = fresh(num_classes=3, seed=2)
    head_before = {k: v.clone() for k, v in dst.fc.state_dict().items()}
    report = load_init(dst, path, reinit_head=True)
    assert report.dropped_head == ["fc.bias", "fc.weight"]
    assert all(torch.equal(head_before[k], v) for k, v in dst.fc.state_dict().items())
    assert same_state(src, dst, skip="fc.")
    # same number of classes: reinit_head still re-initializes rather than loading the file's head
    dst2 = fresh(num_classes=10, seed=4)
    w = dst2.fc.weight.detach().clone()
    load_init(dst2, path, reinit_head=True)
    assert torch.equal(dst2.fc.weight, w) and not torch.equal(w, src.fc.weight)


def test_torchvision_resnet18_weights_into_timm_and_ours(tmp_path: Path) -> None:
    """A torchvision state dict (ImageNet, 1000 classes) finetuned to 10 classes."""
    torch.manual_seed(0)
    tv = build("resnet18", num_classes=1000)
    path = tmp_path / "resnet18.pth"
    torch.save(tv.state_dict(), path)
    ours = build("resnet18", num_classes=10)
    load_init(ours, path, reinit_head=True)
    assert torch.equal(ours.layer4[1].conv2.weight, tv.layer4[1].conv2.weight)
    # the CIFAR variant differs only in conv1 (3x3) and the head: strict names both
    cifar = build("resnet18_cifar", num_classes=10)
    with pytest.raises(CheckpointMismatchError, match="conv1.weight"):
        load_init(cifar, path, reinit_head=True)
    pytest.importorskip("timm")
    tm = build("timm_resnet18", num_classes=10)
    assert classifier_prefix(tm) == "fc"
    load_init(tm, path, reinit_head=True)
    assert torch.equal(tm.layer2[0].downsample[0].weight, tv.layer2[0].downsample[0].weight)


def test_missing_num_batches_tracked_is_not_an_error(tmp_path: Path) -> None:
    src = fresh(seed=1)
    sd = {k: v for k, v in src.state_dict().items() if not k.endswith("num_batches_tracked")}
    path = tmp_path / "old.pth"
    torch.save(sd, path)
    dst = fresh(seed=2)
    load_init(dst, path)
    assert torch.equal(dst.conv1.weight, src.conv1.weight)


def test_point_model_round_trip_and_head(tmp_path: Path) -> None:
    torch.manual_seed(0)
    src = build("pointnet2_ssg", num_classes=40, npoint=(8, 4))
    path = tmp_path / "p.pt"
    torch.save(src.state_dict(), path)
    dst = build("pointnet2_ssg", num_classes=10, npoint=(8, 4))
    assert classifier_prefix(dst) == "fc"
    load_init(dst, path, reinit_head=True)
    assert torch.equal(dst.sa2.mlp[0].weight, src.sa2.mlp[0].weight)
    assert torch.equal(dst.head[4].weight, src.head[4].weight)


def test_file_errors_name_the_file(tmp_path: Path) -> None:
    model = fresh()
    missing = tmp_path / "nope.pth"
    with pytest.raises(FileNotFoundError, match="nope.pth"):
        load_init(model, missing)
    corrupt = tmp_path / "corrupt.pth"
    corrupt.write_bytes(b"this is not a checkpoint")
    with pytest.raises(ValueError, match="corrupt.pth"):
        load_init(model, corrupt)
    not_sd = tmp_path / "list.pth"
    torch.save([torch.zeros(2)], not_sd)
    with pytest.raises(ValueError, match="list.pth"):
        read_state_dict(not_sd)


class _Custom:
    def __init__(self) -> None:
        self.x = 1


def test_weights_only_refuses_pickled_objects(tmp_path: Path) -> None:
    path = tmp_path / "evil.pth"
    torch.save({"state_dict": fresh().state_dict(), "obj": _Custom()}, path)
    with pytest.raises(ValueError, match="weights_only"):
        load_init(fresh(), path)


def test_bad_model_argument(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match="model"):
        load_init("resnet8_cifar", tmp_path / "x.pth")  # type: ignore[arg-type]


def _reference_names(sd: dict[str, torch.Tensor], variant: str) -> dict[str, torch.Tensor]:
    """Our PointNet++ state dict renamed/reshaped as the reference (yanx27) code saves it."""
    head = {"head.0": "fc1", "head.1": "bn1", "head.4": "fc2", "head.5": "bn2", "fc": "fc3"}
    out = {}
    for k, v in sd.items():
        parts = k.split(".")
        if parts[0].startswith("sa"):
            if variant == "ssg":  # sa1.mlp.<3j or 3j+1>.param
                j, r = divmod(int(parts[2]), 3)
                new = f"{parts[0]}.{'mlp_convs' if r == 0 else 'mlp_bns'}.{j}.{parts[3]}"
            else:  # sa1.mlps.i.<3j or 3j+1>.param ; sa3 is single-scale in both
                if parts[1] == "mlp":
                    j, r = divmod(int(parts[2]), 3)
                    new = f"{parts[0]}.{'mlp_convs' if r == 0 else 'mlp_bns'}.{j}.{parts[3]}"
                else:
                    j, r = divmod(int(parts[3]), 3)
                    new = f"{parts[0]}.{'conv_blocks' if r == 0 else 'bn_blocks'}.{parts[2]}.{j}.{parts[4]}"
            if r == 0 and parts[-1] == "weight":
                v = v[:, :, None, None]
        else:
            prefix = ".".join(parts[:-1])
            new = f"{head[prefix]}.{parts[-1]}"
        out[new] = v.contiguous()
    return out


@pytest.mark.parametrize("variant", ["ssg", "msg"])
def test_reference_pointnet2_checkpoint_loads(tmp_path: Path, variant: str) -> None:
    torch.manual_seed(0)
    src = build(f"pointnet2_{variant}", num_classes=40, npoint=(8, 4))
    ref_sd = _reference_names(src.state_dict(), variant)
    assert "sa1.mlp_convs.0.weight" in ref_sd or "sa1.conv_blocks.0.0.weight" in ref_sd
    assert "fc3.weight" in ref_sd and ref_sd["sa3.mlp_convs.2.weight"].shape == (1024, 512, 1, 1)
    path = tmp_path / "best_model.pth"
    torch.save({"epoch": 49, "instance_acc": 0.9, "model_state_dict": ref_sd,
                "optimizer_state_dict": {"state": {}, "param_groups": [{"lr": 0.001}]}}, path)
    for layout in ("rows", "conv2d"):
        dst = build(f"pointnet2_{variant}", num_classes=40, npoint=(8, 4), layout=layout)
        load_init(dst, path)
        x = torch.randn(2, 32, 3)
        with torch.no_grad():
            torch.testing.assert_close(dst.eval()(x), src.eval()(x), atol=1e-5, rtol=1e-5)
