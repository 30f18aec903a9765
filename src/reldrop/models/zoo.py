"""Any timm or torchvision classifier by name: ``timm/<name>`` and ``torchvision/<name>``.

:func:`build` (called by :func:`reldrop.models.build` for these prefixes) creates the model with
random weights and ``num_classes`` outputs; ``model.kwargs`` go to the library's constructor
(e.g. ``img_size`` for a timm ViT). Nothing is downloaded, ever: ``pretrained=False`` /
``weights=None`` always; pretrained weights come from a local file (``reldrop train --init PATH``,
config ``model.init``). ``in_channels`` (set from the dataset by the trainer) becomes timm's
``in_chans``; a torchvision model gets its first 3-channel convolution rebuilt for it.
"""
from __future__ import annotations

from typing import Any

import torch.nn as nn

__all__ = ["PREFIXES", "is_zoo_name", "build"]

PREFIXES = ("timm/", "torchvision/")
_PRETRAINED_KEYS = ("pretrained", "weights", "pretrained_cfg", "pretrained_cfg_overlay", "checkpoint_path",
                    "weights_backbone")


def is_zoo_name(name: Any) -> bool:
    """True for ``"timm/<name>"`` / ``"torchvision/<name>"``."""
    return isinstance(name, str) and name.startswith(PREFIXES)


def _refuse_pretrained(name: str, kwargs: dict[str, Any]) -> None:
    for key in _PRETRAINED_KEYS:
        if key in kwargs and kwargs[key] not in (None, False):
            raise ValueError(f"model {name!r}: {key}={kwargs[key]!r} is not supported - nothing is downloaded; "
                             "load pretrained weights from a local file with --init PATH (config model.init)")
        kwargs.pop(key, None)


def _timm(arch: str, num_classes: int, in_channels: int | None, kwargs: dict[str, Any]) -> nn.Module:
    try:
        import timm
    except ImportError as err:  # pragma: no cover - timm is a dependency
        raise ValueError(f"model 'timm/{arch}' needs timm (pip install timm)") from err
    if not timm.is_model(arch):
        close = timm.list_models(f"*{arch[:6]}*")[:8] if arch else []
        raise ValueError(f"unknown model 'timm/{arch}': timm has no model {arch!r}"
                         + (f" (similar: {', '.join(close)})" if close else ""))
    if in_channels is not None:
        kwargs.setdefault("in_chans", int(in_channels))
    return timm.create_model(arch, pretrained=False, num_classes=num_classes, **kwargs)


def _first_rgb_conv(model: nn.Module) -> tuple[nn.Module, str, nn.Conv2d] | None:
    for module in model.modules():
        for name, child in module.named_children():
            if isinstance(child, nn.Conv2d) and child.in_channels == 3:
                return module, name, child
    return None


def _torchvision(arch: str, num_classes: int, in_channels: int | None, kwargs: dict[str, Any]) -> nn.Module:
    import torchvision.models as tvm

    available = tvm.list_models(module=tvm)
    if arch not in available:
        close = [n for n in available if arch[:4] and n.startswith(arch[:4])][:8]
        raise ValueError(f"unknown model 'torchvision/{arch}': torchvision.models has no classifier {arch!r}"
                         + (f" (similar: {', '.join(close)})" if close else ""))
    if arch.startswith(("inception", "googlenet")):
        kwargs.setdefault("aux_logits", False)  # training takes logits, not (logits, aux) tuples
        kwargs.setdefault("init_weights", True)
    model = tvm.get_model(arch, weights=None, num_classes=num_classes, **kwargs)
    if in_channels is not None and int(in_channels) != 3:
        found = _first_rgb_conv(model)
        if found is None:
            raise ValueError(f"model 'torchvision/{arch}' takes 3-channel input; found no first 3-channel conv "
                             f"to rebuild for {in_channels} channels")
        parent, name, conv = found
        setattr(parent, name, nn.Conv2d(int(in_channels), conv.out_channels,
                                        conv.kernel_size, conv.stride,  # type: ignore[arg-type]  # stubs: tuple[int, ...]
                                        conv.padding, conv.dilation,  # type: ignore[arg-type]
                                        conv.groups, conv.bias is not None, conv.padding_mode))
    return model


def build(name: str, num_classes: int = 10, **kwargs: Any) -> nn.Module:
    """``timm/<arch>`` or ``torchvision/<arch>`` with random weights; ``ValueError`` (one line) for an
    unknown architecture or a request for pretrained weights."""
    kwargs = dict(kwargs)
    in_channels = kwargs.pop("in_channels", None)
    _refuse_pretrained(name, kwargs)
    lib, _, arch = name.partition("/")
    if not arch:
        raise ValueError(f"model {name!r}: give the architecture after the prefix, e.g. 'timm/resnet18'")
    if lib == "timm":
        return _timm(arch, num_classes, in_channels, kwargs)
    return _torchvision(arch, num_classes, in_channels, kwargs)
