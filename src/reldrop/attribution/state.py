"""The safety contract: an attribution call leaves the model exactly as it found it.

:func:`preserve_model_state` is a context manager. On exit - normal or by an exception raised
anywhere inside - it puts back, for the model and every submodule:

* the module tree and each module's instance attributes (``forward`` overrides and ``canonizer_sum``
  modules added by canonizers are removed; ``eps`` and other plain attributes are restored),
* the contents and order of every internal dict/set (``_parameters``, ``_buffers``, ``_modules``
  and all hook dicts: forward, forward-pre, backward, full-backward, backward-pre, state-dict,
  load-state-dict hooks, with-kwargs/always-called flags),
* the train/eval flag of every module,
* for every parameter and buffer: the same tensor object holding the same storage
  (``.data`` swaps are undone), ``requires_grad``, the same ``.grad`` object (``None`` stays
  ``None``), and tensor-level hooks,
* buffer *values*: buffers are small (BN statistics), so they are copied on entry and written
  back on exit when their version counter moved (e.g. a BN that ran in train mode),
* parameter values: tracked by version counter; with ``copy_parameters=True`` they are also
  copied on entry and written back when modified in place; without it an in-place change of a
  parameter raises ``RuntimeError`` on exit (it cannot be undone, and our code never does it),
* torch's global module hooks.

It never writes to a parameter, buffer or gradient that nothing changed, so it adds no
host-device synchronization and costs one walk over the modules per call.
"""
from __future__ import annotations

import threading
import weakref
from contextlib import contextmanager
from typing import Any, Iterator

import torch
import torch.nn as nn
from torch.nn.modules import module as _torch_module

__all__ = ["preserve_model_state", "ModelStateSnapshot", "model_lock"]

_MISSING = object()
_GLOBAL_HOOK_DICTS = (
    "_global_backward_pre_hooks",
    "_global_backward_hooks",
    "_global_forward_pre_hooks",
    "_global_forward_hooks",
    "_global_forward_hooks_always_called",
    "_global_forward_hooks_with_kwargs",
    "_global_module_registration_hooks",
    "_global_parameter_registration_hooks",
    "_global_buffer_registration_hooks",
)
_TENSOR_HOOK_ATTRS = ("_backward_hooks", "_post_accumulate_grad_hooks")


def _tensor_meta(t: torch.Tensor) -> tuple:
    return (t.data_ptr(), t.dtype, t.device, tuple(t.shape), t.stride(), t.storage_offset())


class ModelStateSnapshot:
    """Everything :func:`preserve_model_state` restores; ``restore()`` may be called once."""

    def __init__(self, model: nn.Module, *, copy_parameters: bool = False) -> None:
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        self.model = model
        self.copy_parameters = bool(copy_parameters)
        self.modules: list[tuple[nn.Module, dict[str, Any], list[tuple[str, Any]]]] = []
        self.tensors: list[tuple[str, torch.Tensor, torch.Tensor, tuple, int, bool, Any, tuple, Any]] = []
        seen: set[int] = set()
        with torch.no_grad():
            for prefix, module in model.named_modules(remove_duplicate=True):
                attrs = dict(module.__dict__)
                containers = [
                    (key, list(value.items()) if isinstance(value, dict) else set(value))
                    for key, value in attrs.items()
                    if isinstance(value, (dict, set))
                ]
                self.modules.append((module, attrs, containers))
                for kind, store in (("parameter", module._parameters), ("buffer", module._buffers)):
                    for name, t in store.items():
                        if t is None or id(t) in seen:
                            continue
                        seen.add(id(t))
                        data = t.data
                        value = data.clone() if (kind == "buffer" or self.copy_parameters) else None
                        hooks = tuple(getattr(t, attr, None) for attr in _TENSOR_HOOK_ATTRS)
                        label = f"{kind} {prefix + '.' if prefix else ''}{name}"
                        self.tensors.append(
                            (label, t, data, _tensor_meta(data), t._version, t.requires_grad, t.grad, hooks, value)
                        )
        self.global_hooks = {
            name: list(getattr(_torch_module, name).items())
            for name in _GLOBAL_HOOK_DICTS
            if isinstance(getattr(_torch_module, name, None), dict)
        }

    def restore(self) -> None:
        """Put everything back (see the module docstring); raise if a parameter was changed in place."""
        for module, attrs, containers in self.modules:
            current = module.__dict__
            for key in [k for k in current if k not in attrs]:
                del current[key]
            for key, value in attrs.items():
                if current.get(key, _MISSING) is not value:
                    current[key] = value
            for key, saved in containers:
                container = current[key]
                if not saved:
                    if container:
                        container.clear()
                elif isinstance(container, dict):
                    if len(container) != len(saved) or any(
                        container.get(k, _MISSING) is not v for k, v in saved
                    ) or list(container) != [k for k, _ in saved]:
                        container.clear()
                        container.update(saved)
                elif container != saved:
                    container.clear()
                    container.update(saved)
        for name, saved in self.global_hooks.items():
            container = getattr(_torch_module, name)
            if list(container.items()) != saved:
                container.clear()
                container.update(saved)
        modified: list[str] = []
        with torch.no_grad():
            for label, t, data, meta, version, requires_grad, grad, hooks, value in self.tensors:
                if _tensor_meta(t.data) != meta:
                    t.data = data
                if t.requires_grad != requires_grad:
                    t.requires_grad_(requires_grad)
                if t.grad is not grad:
                    t.grad = grad
                for attr, hook in zip(_TENSOR_HOOK_ATTRS, hooks):
                    if getattr(t, attr, None) is not hook:
                        setattr(t, attr, hook)
                if t._version != version:
                    if value is not None:
                        t.data.copy_(value)
                    else:
                        modified.append(label)
        if modified:
            raise RuntimeError(
                "preserve_model_state: modified in place and not restorable (use copy_parameters=True): "
                + ", ".join(modified)
            )


@contextmanager
def preserve_model_state(model: nn.Module, *, copy_parameters: bool = False) -> Iterator[nn.Module]:
    """Context manager: on exit (also by exception) ``model`` is exactly as on entry.

    Usage::

        with preserve_model_state(model):
            model.eval()
            ...  # canonize, register hooks, forward/backward w.r.t. the input only

    Args:
        model: the module to guard (the unwrapped module; guard the one you modify).
        copy_parameters: also snapshot parameter values (one copy of all weights) so that even
            in-place writes to parameters are undone; default ``False`` (cheap: references only;
            buffers are always copied).
    Yields:
        ``model``.
    """
    with model_lock(model):  # one guarded call per model at a time: threads never see (or keep) another's changes
        snapshot = ModelStateSnapshot(model, copy_parameters=copy_parameters)
        try:
            yield model
        finally:
            snapshot.restore()


_LOCKS: "weakref.WeakKeyDictionary[nn.Module, threading.RLock]" = weakref.WeakKeyDictionary()
_LOCKS_GUARD = threading.Lock()


def model_lock(model: nn.Module) -> threading.RLock:
    """The re-entrant lock of ``model`` that :func:`preserve_model_state` holds: attribution calls on
    one model from several threads run one at a time (a zennit composite registers hooks and swaps
    modules for the duration of a call; another thread's snapshot or call in between would keep them)."""
    with _LOCKS_GUARD:
        lock = _LOCKS.get(model)
        if lock is None:
            lock = _LOCKS[model] = threading.RLock()
        return lock
