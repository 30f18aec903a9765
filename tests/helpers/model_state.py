"""Bit-for-bit snapshot of everything the model-state contract promises (shared by the safety tests).

``before = snapshot(model)`` ... ``assert_unchanged(before, model)``: parameters and buffers (same
objects, storage, bits), ``.grad`` (object and bits), ``requires_grad``, train/eval flags, every
kind of hook, the module tree and plain attributes (``eps``, ``detach_centre``, ``None`` slots).
A uniquely named module (``from model_state import ...``), like tests/point_models.py.
"""
from __future__ import annotations

import torch
import torch.nn as nn

HOOK_DICTS = (
    "_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks",
    "_forward_hooks_with_kwargs", "_forward_hooks_always_called", "_forward_pre_hooks_with_kwargs",
    "_state_dict_hooks", "_state_dict_pre_hooks", "_load_state_dict_pre_hooks", "_load_state_dict_post_hooks",
)


def _bits(t: torch.Tensor) -> torch.Tensor:
    t = t.detach()
    if t.is_floating_point():
        return t.contiguous().view({2: torch.int16, 4: torch.int32, 8: torch.int64}[t.element_size()]).clone()
    return t.clone()


def snapshot(model: nn.Module) -> dict:
    """Everything the contract promises, copied so later changes are visible."""
    return {
        "modules": [
            (name, m, m.training, {k: list(getattr(m, k).items()) for k in HOOK_DICTS if hasattr(m, k)},
             sorted(m.__dict__), {k: v for k, v in m.__dict__.items() if v is None or isinstance(v, (int, float, bool, str))},
             list(m._modules.items()), list(m._parameters.items()), list(m._buffers.items()))
            for name, m in model.named_modules()
        ],
        "params": [
            (n, p, p.data_ptr(), tuple(p.shape), p.stride(), _bits(p), p.requires_grad, p.grad,
             None if p.grad is None else _bits(p.grad), p._backward_hooks)
            for n, p in model.named_parameters()
        ],
        "buffers": [(n, b, b.data_ptr(), _bits(b)) for n, b in model.named_buffers()],
        "state_dict_keys": list(model.state_dict().keys()),
    }


def assert_unchanged(before: dict, model: nn.Module) -> None:
    after = snapshot(model)
    assert [m[0] for m in after["modules"]] == [m[0] for m in before["modules"]], "module tree changed"
    for b, a in zip(before["modules"], after["modules"]):
        assert a[1] is b[1], f"module {b[0]!r} replaced"
        assert a[2] == b[2], f"train/eval flag of {b[0]!r} changed"
        assert a[3] == b[3], f"hooks of {b[0]!r} changed"
        assert a[4] == b[4], f"instance attributes of {b[0]!r} changed"
        assert a[5] == b[5], f"plain attributes (eps, ...) of {b[0]!r} changed"
        for x, y in zip(a[6:], b[6:]):
            assert [k for k, _ in x] == [k for k, _ in y] and all(u is v for (_, u), (_, v) in zip(x, y)), b[0]
    assert len(after["params"]) == len(before["params"])
    for b, a in zip(before["params"], after["params"]):
        name = b[0]
        assert a[1] is b[1], f"parameter {name} replaced"
        assert a[2:5] == b[2:5], f"storage/shape/stride of {name} changed"
        assert torch.equal(a[5], b[5]), f"value of {name} changed"
        assert a[6] == b[6], f"requires_grad of {name} changed"
        assert a[7] is b[7], f".grad object of {name} changed"
        assert (a[8] is None and b[8] is None) or torch.equal(a[8], b[8]), f".grad value of {name} changed"
        assert a[9] is b[9], f"tensor hooks of {name} changed"
    for b, a in zip(before["buffers"], after["buffers"]):
        assert a[1] is b[1] and a[2] == b[2] and torch.equal(a[3], b[3]), f"buffer {b[0]} changed"
    assert after["state_dict_keys"] == before["state_dict_keys"]
