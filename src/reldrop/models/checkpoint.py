"""Initialize a model from a user-supplied checkpoint (torchvision / timm / our own state dicts).

:func:`load_init` reads the file with ``torch.load(..., weights_only=True)`` (no pickled code,
no download), unwraps ``{'state_dict': ...}`` / ``{'model': ...}`` / ``{'model_state_dict': ...}``
containers, strips DDP ``module.`` (and ``torch.compile`` ``_orig_mod.``) prefixes, and loads it
strictly by default: any missing, unexpected or shape-mismatched key is an error that lists them.
``reinit_head=True`` drops the classifier weights from the file and keeps the model's freshly
initialized classifier (finetuning to a different number of classes).
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Mapping

import torch
import torch.nn as nn

__all__ = ["load_init", "read_state_dict", "strip_wrapper_prefixes", "classifier_prefix", "InitReport", "CheckpointMismatchError"]

_CONTAINER_KEYS = ("state_dict", "model", "model_state_dict", "module")
_STRIP_PREFIXES = ("module.", "_orig_mod.")
_HEAD_NAMES = ("fc", "head", "classifier", "last_linear")
_MAX_LISTED = 30


class CheckpointMismatchError(ValueError):
    """The checkpoint's keys or shapes do not match the model (strict loading)."""


@dataclass
class InitReport:
    """What :func:`load_init` did: keys loaded, and keys it skipped or could not fill."""

    loaded: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)  # in the model, not in the file
    unexpected: list[str] = field(default_factory=list)  # in the file, not in the model
    mismatched: list[tuple[str, tuple[int, ...], tuple[int, ...]]] = field(default_factory=list)  # key, file, model
    dropped_head: list[str] = field(default_factory=list)  # classifier keys dropped by reinit_head


def strip_wrapper_prefixes(state: Mapping[str, Any]) -> dict[str, Any]:
    """``state`` with DDP ``module.`` and ``torch.compile`` ``_orig_mod.`` prefixes removed from every key
    (repeatedly, so ``module._orig_mod.fc.weight`` becomes ``fc.weight``)."""
    return {_strip(str(k)): v for k, v in state.items()}


def _strip(key: str) -> str:
    changed = True
    while changed:
        changed = False
        for p in _STRIP_PREFIXES:
            if key.startswith(p):
                key = key[len(p) :]
                changed = True
    return key


def read_state_dict(path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """Read a checkpoint file into a flat ``{name: tensor}`` dict (containers unwrapped, prefixes stripped).

    Raises FileNotFoundError / ValueError naming the file when it is missing, unreadable or not a state dict.
    """
    from reldrop.runs import load_checkpoint

    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"checkpoint file not found: {path}")
    # weights_only=True: corrupt files and pickled objects are refused with an error naming the file;
    # reldrop's own last.pt/best.pt load (their 'model' entry is unwrapped below)
    obj: Any = load_checkpoint(path)
    for _ in range(3):  # nested containers, e.g. {'model': {'state_dict': ...}}
        if isinstance(obj, Mapping) and not _is_state_dict(obj):
            inner = next((obj[k] for k in _CONTAINER_KEYS if k in obj and isinstance(obj[k], Mapping)), None)
            if inner is None:
                break
            obj = inner
    if not isinstance(obj, Mapping) or not _is_state_dict(obj):
        raise ValueError(
            f"checkpoint {path} is not a state dict (a mapping of parameter names to tensors, possibly "
            f"under one of the keys {list(_CONTAINER_KEYS)}); got {type(obj).__name__}"
            + (f" with keys {list(obj)[:10]}" if isinstance(obj, Mapping) else "")
        )
    return strip_wrapper_prefixes(obj)


def _is_state_dict(obj: Mapping[Any, Any]) -> bool:
    return len(obj) > 0 and all(isinstance(v, torch.Tensor) for v in obj.values())


def classifier_prefix(model: nn.Module) -> str:
    """Name of the model's final classifier module (``fc`` for torchvision/our models, timm's
    ``pretrained_cfg['classifier']`` for timm models, else ``head`` / ``classifier`` / ``last_linear``)."""
    cfg = getattr(model, "pretrained_cfg", None) or getattr(model, "default_cfg", None)
    if isinstance(cfg, Mapping) and isinstance(cfg.get("classifier"), str):
        return cfg["classifier"]
    modules = dict(model.named_modules())
    for name in _HEAD_NAMES:
        if name in modules and name:
            return name
    raise ValueError(
        f"cannot find the classifier of {type(model).__name__} (looked for {list(_HEAD_NAMES)}); "
        "pass head='<module name>'"
    )


def _under(key: str, prefix: str) -> bool:
    return key == prefix or key.startswith(prefix + ".")


def load_init(
    model: nn.Module,
    path: str | os.PathLike[str],
    *,
    strict: bool = True,
    reinit_head: bool = False,
    head: str | None = None,
) -> InitReport:
    """Load the weights in ``path`` into ``model`` (in place) and return an :class:`InitReport`.

    Args:
        model: the freshly built model.
        path: a ``.pt``/``.pth`` file holding a state dict (plain, or under ``state_dict``/``model``/
            ``model_state_dict``; ``module.`` prefixes are stripped).
        strict: every model key must be in the file with the same shape and the file must hold no
            other keys; otherwise :class:`CheckpointMismatchError` (a ValueError) lists the missing,
            unexpected and shape-mismatched keys and nothing is loaded. ``strict=False`` loads the
            matching keys and reports the rest. Missing BatchNorm ``num_batches_tracked`` counters
            (absent from old torchvision files) are never an error.
        reinit_head: drop the classifier's weights from the file and keep the model's freshly
            initialized classifier (for a different ``num_classes``).
        head: name of the classifier module; default :func:`classifier_prefix`.

    A model may define ``convert_state_dict(sd) -> sd`` to accept other naming schemes; it is
    applied to the file's state dict first (PointNet++ uses it to read reference checkpoints).
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    sd = read_state_dict(path)
    convert = getattr(model, "convert_state_dict", None)
    if callable(convert):  # model-specific renaming, e.g. reference PointNet++ checkpoints
        sd = convert(sd)
    report = InitReport()
    if reinit_head:
        prefix = head if head is not None else classifier_prefix(model)
        report.dropped_head = sorted(k for k in sd if _under(k, prefix))
        sd = {k: v for k, v in sd.items() if not _under(k, prefix)}
        own_skip = {k for k in model.state_dict() if _under(k, prefix)}
    else:
        own_skip = set()
    own = {k: v for k, v in model.state_dict().items() if k not in own_skip}
    report.missing = sorted(k for k in own if k not in sd and not k.endswith("num_batches_tracked"))
    report.unexpected = sorted(k for k in sd if k not in own)
    report.mismatched = sorted(
        (k, tuple(sd[k].shape), tuple(own[k].shape)) for k in own if k in sd and sd[k].shape != own[k].shape
    )
    if strict and (report.missing or report.unexpected or report.mismatched):
        raise CheckpointMismatchError(_describe(os.fspath(path), report, reinit_head))
    bad = {k for k, _, _ in report.mismatched}
    to_load = {k: v for k, v in sd.items() if k in own and k not in bad}
    model.load_state_dict(to_load, strict=False)
    report.loaded = sorted(to_load)
    return report


def _listing(keys: list[str]) -> str:
    shown = ", ".join(keys[:_MAX_LISTED])
    return shown + (f", … ({len(keys) - _MAX_LISTED} more)" if len(keys) > _MAX_LISTED else "")


def _describe(path: str, r: InitReport, reinit_head: bool) -> str:
    lines = [f"checkpoint {path} does not match the model (strict=True):"]
    if r.missing:
        lines.append(f"  missing in the checkpoint ({len(r.missing)}): {_listing(r.missing)}")
    if r.unexpected:
        lines.append(f"  unexpected in the checkpoint ({len(r.unexpected)}): {_listing(r.unexpected)}")
    if r.mismatched:
        shown = [f"{k} (checkpoint {list(a)} vs model {list(b)})" for k, a, b in r.mismatched]
        lines.append(f"  shape mismatch ({len(shown)}): {_listing(shown)}")
    hint = "use strict=False to load the matching keys"
    if not reinit_head and r.mismatched:
        hint += ", or reinit_head=True (--reinit-head) if only the classifier differs"
    lines.append(f"  ({hint})")
    return "\n".join(lines)
