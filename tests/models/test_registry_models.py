"""Every registered model builds and forwards; shapes, parameter counts, stems."""
from __future__ import annotations

import sys

import pytest
import torch
import torch.nn as nn
from torchvision.models.resnet import BasicBlock, Bottleneck

from reldrop.models import build, names

IMAGE_MODELS = {
    "resnet8_cifar", "resnet14_cifar", "resnet20_cifar", "resnet32_cifar", "resnet44_cifar", "resnet56_cifar",
    "resnet18_cifar", "resnet34_cifar", "resnet50_cifar", "resnet101_cifar",
    "resnet18", "resnet34", "resnet50", "resnet101", "timm_resnet18", "timm_resnet50", "small_cnn",
}
POINT_MODELS = {"pointnet", "pointnet2_ssg", "pointnet2_msg"}


def n_params(m: nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


def test_all_expected_names_registered() -> None:
    assert IMAGE_MODELS | POINT_MODELS <= set(names())


@pytest.mark.parametrize("name", sorted(IMAGE_MODELS))
def test_image_models_build_and_forward(name: str) -> None:
    if name.startswith("timm_"):
        pytest.importorskip("timm")
    torch.manual_seed(0)
    model = build(name, num_classes=7).eval()
    size = 16 if name in ("resnet18", "resnet34", "resnet50", "resnet101") or name.startswith("timm_") else 8
    with torch.no_grad():
        out = model(torch.randn(2, 3, size, size))
    assert out.shape == (2, 7)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("name", ["resnet20_cifar", "resnet18_cifar", "resnet18", "small_cnn", "timm_resnet18"])
def test_in_channels(name: str) -> None:
    if name.startswith("timm_"):
        pytest.importorskip("timm")
    model = build(name, num_classes=4, in_channels=1).eval()
    with torch.no_grad():
        assert model(torch.randn(2, 1, 16, 16)).shape == (2, 4)
        with pytest.raises(RuntimeError):
            model(torch.randn(2, 3, 16, 16))


@pytest.mark.parametrize("name", sorted(POINT_MODELS))
@pytest.mark.parametrize("d", [3, 6])
def test_point_models_build_and_forward(name: str, d: int) -> None:
    torch.manual_seed(0)
    kw = {"npoint": (16, 8)} if name.startswith("pointnet2") else {}  # small clouds, small cost
    model = build(name, num_classes=5, in_channels=d, **kw)
    x = torch.randn(3, 48, d)
    model.train()
    out = model(x)
    assert out.shape == (3, 5)
    model.eval()
    with torch.no_grad():
        out = model(x)
    assert out.shape == (3, 5) and torch.isfinite(out).all()


@pytest.mark.parametrize("name", ["pointnet2_ssg", "pointnet2_msg"])
def test_pointnet2_default_config_forward(name: str) -> None:
    torch.manual_seed(0)
    model = build(name, num_classes=40).eval()
    with torch.no_grad():
        out = model(torch.randn(2, 64, 3))  # fewer points than the 512 centres: points repeat
    assert out.shape == (2, 40) and torch.isfinite(out).all()


@pytest.mark.parametrize("name", sorted(POINT_MODELS))
def test_point_models_reject_wrong_channels(name: str) -> None:
    model = build(name, num_classes=5, in_channels=3).eval()
    with pytest.raises(ValueError, match="points"):
        model(torch.randn(2, 32, 6))
    with pytest.raises(ValueError, match="points"):
        model(torch.randn(2, 3))
    with pytest.raises(TypeError, match="points"):
        model(torch.zeros(2, 32, 3, dtype=torch.long))
    with pytest.raises(ValueError, match="in_channels"):
        build(name, num_classes=5, in_channels=2)


def test_pointnet2_parameter_counts_match_reference() -> None:
    # yanx27/Pointnet_Pointnet2_pytorch, 40 classes, normal_channel=False
    assert n_params(build("pointnet2_ssg", num_classes=40)) == 1_475_688
    assert n_params(build("pointnet2_msg", num_classes=40)) == 1_747_368
    # the straightforward layout has the same parameters
    assert n_params(build("pointnet2_ssg", num_classes=40, layout="conv2d")) == 1_475_688
    assert n_params(build("pointnet2_msg", num_classes=40, layout="conv2d")) == 1_747_368
    # normals add 3 input channels to the first MLP layer of each branch: 64 (SSG), 32+64+64 (MSG)
    assert n_params(build("pointnet2_ssg", num_classes=40, in_channels=6)) == 1_475_688 + 3 * 64
    assert n_params(build("pointnet2_msg", num_classes=40, in_channels=6)) == 1_747_368 + 3 * (32 + 64 + 64)


def test_pointnet_parameter_count() -> None:
    # conv 3-64-128-1024 (+BN), fc 1024-512-256 (+BN), fc 256-40
    mlp = (3 * 64 + 64 + 128) + (64 * 128 + 128 + 256) + (128 * 1024 + 1024 + 2048)
    head = (1024 * 512 + 512 + 1024) + (512 * 256 + 256 + 512) + (256 * 40 + 40)
    assert n_params(build("pointnet", num_classes=40)) == mlp + head
    assert n_params(build("pointnet", num_classes=40, tnet=True)) > mlp + head


def test_resnet20_size_and_blocks() -> None:
    model = build("resnet20_cifar", num_classes=10)
    assert 0.26e6 < n_params(model) < 0.28e6
    blocks = [m for m in model.modules() if isinstance(m, BasicBlock)]
    assert len(blocks) == 9
    # option B: 1x1 conv + BN projection where the shape changes
    assert isinstance(model.layer2[0].downsample[0], nn.Conv2d)
    assert model.layer2[0].downsample[0].kernel_size == (1, 1)
    assert model.layer1[0].downsample is None
    assert len([m for m in build("resnet8_cifar").modules() if isinstance(m, BasicBlock)]) == 3
    assert len([m for m in build("resnet56_cifar").modules() if isinstance(m, BasicBlock)]) == 27


@pytest.mark.parametrize(
    "name,block,count",
    [("resnet18_cifar", BasicBlock, 8), ("resnet34_cifar", BasicBlock, 16),
     ("resnet50_cifar", Bottleneck, 16), ("resnet101_cifar", Bottleneck, 33)],
)
def test_cifar_resnets_stem(name: str, block: type, count: int) -> None:
    model = build(name, num_classes=10)
    assert isinstance(model.maxpool, nn.Identity)
    assert model.conv1.kernel_size == (3, 3) and model.conv1.stride == (1, 1) and model.conv1.padding == (1, 1)
    assert model.conv1.in_channels == 3 and model.conv1.out_channels == 64 and model.conv1.bias is None
    assert len([m for m in model.modules() if isinstance(m, block)]) == count
    # the 32x32 input is kept at full resolution by the stem (torchvision's ImageNet stem would give 8x8)
    feats = model.conv1(torch.zeros(1, 3, 32, 32))
    assert model.maxpool(feats).shape[-2:] == (32, 32)


def test_imagenet_stem_is_torchvision() -> None:
    model = build("resnet18", num_classes=10)
    assert model.conv1.kernel_size == (7, 7) and model.conv1.stride == (2, 2)
    assert isinstance(model.maxpool, nn.MaxPool2d)
    assert n_params(model) == 11_181_642  # torchvision resnet18 with a 10-class fc


def test_timm_missing_gives_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "timm", None)  # makes `import timm` raise ImportError
    with pytest.raises(ImportError, match="timm"):
        build("timm_resnet18", num_classes=10)


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="in_channels"):
        build("resnet20_cifar", num_classes=10, in_channels=0)
    with pytest.raises(TypeError, match="width"):
        build("resnet20_cifar", num_classes=10, width=1.5)
    with pytest.raises(ValueError, match="variant|layout"):
        build("pointnet2_ssg", num_classes=10, layout="nchw")


def test_small_cnn_on_digits_shape() -> None:
    model = build("small_cnn", num_classes=10, in_channels=1).eval()
    with torch.no_grad():
        assert model(torch.randn(5, 1, 8, 8)).shape == (5, 10)


def test_modules_in_forward_order_for_bn_merge() -> None:
    """Every BatchNorm directly follows (in module registration order) the Linear/Conv it normalizes."""
    for name in ["resnet20_cifar", "small_cnn", "pointnet", "pointnet2_ssg", "pointnet2_msg"]:
        model = build(name, num_classes=10)
        leaves = [m for m in model.modules() if not list(m.children())]
        for prev, cur in zip(leaves, leaves[1:]):
            if isinstance(cur, nn.modules.batchnorm._BatchNorm):
                assert isinstance(prev, (nn.Linear, nn.Conv1d, nn.Conv2d)), (name, prev, cur)
                out = prev.out_features if isinstance(prev, nn.Linear) else prev.out_channels
                assert out == cur.num_features


@pytest.mark.parametrize(
    "name,x,n_bn",
    [("pointnet2_ssg", (2, 64, 3), 11), ("pointnet2_msg", (2, 64, 6), 23), ("pointnet", (2, 64, 3), 5),
     ("small_cnn", (2, 3, 8, 8), 2), ("resnet8_cifar", (2, 3, 8, 8), 9)],
)
def test_zennit_sequential_bn_merge_pairs_every_batchnorm(name: str, x: tuple[int, ...], n_bn: int) -> None:
    from zennit.canonizers import SequentialMergeBatchNorm

    torch.manual_seed(0)
    kw = {"npoint": (16, 8)} if name.startswith("pointnet2") else {}
    in_ch = {"in_channels": x[-1]} if name.startswith("pointnet") else {}
    model = build(name, num_classes=5, **kw, **in_ch)
    inp = torch.randn(*x)
    with torch.no_grad():
        model.train()(inp)  # non-trivial running statistics
        model.eval()
        before = model(inp)
        instances = SequentialMergeBatchNorm().apply(model)
        try:
            assert len(instances) == n_bn == sum(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())
            torch.testing.assert_close(model(inp), before, atol=1e-4, rtol=1e-4)
        finally:
            for inst in instances:
                inst.remove()
        assert torch.equal(model(inp), before)
