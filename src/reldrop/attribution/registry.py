"""The attribution backend registry: the one place that decides how a model is attributed.

A *backend* computes relevance for some (model, method) pairs. :class:`~reldrop.attribution.Attributor`
(and through it :class:`reldrop.RelDrop`) never dispatches on its own: it calls
:func:`select_backend`, which asks the registered backends in order.

Interface of a backend (any object with these attributes; subclass :class:`Backend` for the defaults)::

    class MyBackend(Backend):
        name = "mine"

        def supports(self, model, method, **opts) -> bool | str:
            # True when build() computes `method` for `model` exactly; otherwise False or, better,
            # a str saying why not (shown to the user when no backend fits). Must not raise for an
            # unknown model. opts: seed ("one_hot" | "logit"), canonizers, first_layers (None
            # unless the caller passed them) and the method's keyword arguments (e.g. epsilon).

        def build(self, model, method, **opts) -> AttributionFn:
            # Called once per Attributor with the same opts; may raise ValueError (then `auto`
            # goes on to the next backend, an explicit backend=... re-raises).
            # AttributionFn: fn(x, target) -> R. x: (B, ...) float tensor in the compute dtype
            # (float32, or float64 for float64 models), detached; target: LongTensor (B,) on
            # x.device or the string "predicted". R: same shape as x. It runs with grad enabled,
            # autocast off, inside preserve_model_state(model); it must not change the model.

        def default_method(self, model) -> str | None:
            # optional: the method this backend recommends for `model` (None: no opinion).

    register_backend("mine", MyBackend(), before="zennit")   # default position: ahead of zennit

This module imports no backend: each built-in backend module registers itself when imported, and
:mod:`reldrop.attribution.backends` imports them all (``import reldrop.attribution`` does). Built
in, in this order: ``"fast"`` (one-pass ε-LRP of ReLU CNNs, :mod:`.backends.fast`), ``"points"``
(one-pass z⁺ of reldrop's PointNet++/PointNet, :mod:`.backends.points`; the default method for
them), ``"vit"`` (CP-LRP of timm/torchvision Vision Transformers, :mod:`.backends.vit`; the default
method for them) and ``"zennit"`` (:mod:`.backends.zennit`, the general fallback: every preset on
every model whose layers all have a rule; it refuses models with layers that LRP would only pass a
plain gradient through, see :mod:`.coverage`). No backend calls another.

* ``backend="auto"`` → the first backend whose ``supports`` is True and whose ``build`` succeeds;
  if none, ``ValueError`` listing every backend's reason.
* ``backend="<name>"`` → that backend; ``ValueError`` with its reason if it does not support the pair.
  A backend registered with ``aliases=(...)`` also answers those names, after the backend of that
  name (if any) declined: ``"points"`` answers ``backend="fast"``, so ``backend="fast"`` means "a
  hand-written one-pass backend" for CNNs and point nets alike. ``Attributor.backend`` names the
  backend that computes (``"points"`` for a point net).
* :func:`default_method` (``method=None`` or ``"auto"`` in ``Attributor``/``RelDrop``): the first
  backend's ``default_method(model)`` that is not None, else the caller's fallback (ε/Flat for
  images, z⁺ for point clouds). A Vision-Transformer backend answers its own method for ViTs.
* New methods: :func:`reldrop.attribution.presets.register_preset` (a preset without a zennit
  composite, ``build=None``, is computed only by the backends that support it).
"""
from __future__ import annotations

import warnings
from typing import Any, Callable

import torch
import torch.nn as nn

from ._wrappers import unwrap_model

__all__ = [
    "Backend",
    "HandWrittenBackend",
    "AttributionFn",
    "register_backend",
    "unregister_backend",
    "get_backend",
    "backend_names",
    "select_backend",
    "check_backend_name",
    "default_method",
    "FALLBACK",
]

#: relevance function a backend builds: ``fn(x, target) -> R`` (see the module docstring).
AttributionFn = Callable[[torch.Tensor, "torch.Tensor | str"], torch.Tensor]
#: the general fallback backend: stays last unless a registration names it in ``before``.
FALLBACK = "zennit"



class Backend:
    """Base class with the optional parts of the interface (see the module docstring)."""

    name: str = ""

    def supports(self, model: nn.Module, method: str, **opts: Any) -> bool | str:
        raise NotImplementedError

    def build(self, model: nn.Module, method: str, **opts: Any) -> AttributionFn:
        raise NotImplementedError

    def default_method(self, model: nn.Module) -> str | None:
        return None

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r})"


class HandWrittenBackend(Backend):
    """A one-pass backend with its maths written out: a fixed set of :attr:`methods`, the default
    canonization and input layers hard-coded (custom ``canonizers``/``first_layers`` are refused),
    and :meth:`accepts` deciding from the model's structure."""

    #: the methods it computes
    methods: tuple[str, ...] = ()
    #: how the refusal of custom canonizers/first_layers names it, e.g. ``"backend='fast'"``
    title: str = ""

    def accepts(self, model: nn.Module, method: str) -> bool:
        """True when :meth:`build` computes ``method`` for ``model`` exactly (never raises)."""
        raise NotImplementedError

    def supports(self, model: nn.Module, method: str, *, canonizers: Any = None, first_layers: Any = None,
                 **opts: Any) -> bool | str:
        if canonizers is not None or first_layers is not None:
            return (f"{self.title} computes the default canonization and input layers; "
                    "custom canonizers/first_layers need backend='zennit' (or 'auto')")
        if method not in self.methods:
            return f"computes only {', '.join(self.methods)}"
        if self.accepts(model, method):
            return True
        return f"does not support method {method!r} on {type(unwrap_model(model)).__name__}"

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


_BACKENDS: dict[str, Any] = {}  # insertion order = the order `auto` asks them in
_ALIASES: dict[str, tuple[str, ...]] = {}  # backend name -> the other names it answers


def register_backend(name: str, backend: Any, *, before: str | None = None, replace: bool = False,
                     aliases: tuple[str, ...] = ()) -> None:
    """Register ``backend`` under ``name``.

    Args:
        name: what users pass as ``backend=...`` (not ``"auto"``).
        backend: an object with ``supports(model, method, **opts)`` and ``build(model, method, **opts)``
            (and optionally ``default_method(model)``).
        before: name of a registered backend to insert ahead of; default: ahead of the general
            fallback ``"zennit"`` (i.e. after every other backend), so ``auto`` asks it first.
        replace: allow replacing a backend of the same name (it keeps its position unless
            ``before`` is given).
        aliases: other names an explicit ``backend=...`` may use for it (asked after the backend
            registered under that name, if any, declined).
    """
    if not isinstance(name, str) or not name or name == "auto":
        raise ValueError(f"backend name must be a non-empty string other than 'auto', got {name!r}")
    if not callable(getattr(backend, "supports", None)) or not callable(getattr(backend, "build", None)):
        raise TypeError("backend must have callable supports(model, method, **opts) and build(model, method, **opts)")
    if name in _BACKENDS and not replace:
        raise ValueError(f"backend {name!r} is already registered (pass replace=True to replace it)")
    if isinstance(aliases, str) or not all(isinstance(a, str) and a and a not in ("auto", name) for a in aliases):
        raise ValueError(f"aliases must be a tuple of names other than 'auto' and {name!r}, got {aliases!r}")
    if before is not None and (before not in _BACKENDS or before == name):
        raise ValueError(f"before={before!r} names no other registered backend; known: {', '.join(_BACKENDS)}")
    _ALIASES[name] = tuple(aliases)
    if before is None and name in _BACKENDS:  # replace in place
        _BACKENDS[name] = backend
        return
    _BACKENDS.pop(name, None)
    anchor = before if before is not None else (FALLBACK if FALLBACK in _BACKENDS and name != FALLBACK else None)
    items = list(_BACKENDS.items())
    pos = len(items) if anchor is None else [k for k, _ in items].index(anchor)
    items.insert(pos, (name, backend))
    _BACKENDS.clear()
    _BACKENDS.update(items)


def unregister_backend(name: str) -> Any:
    """Remove and return the backend registered as ``name`` (``KeyError`` if none)."""
    if name not in _BACKENDS:
        raise KeyError(f"no backend {name!r}; known: {', '.join(_BACKENDS)}")
    _ALIASES.pop(name, None)
    return _BACKENDS.pop(name)


def get_backend(name: str) -> Any:
    """The backend registered as ``name``."""
    check_backend_name(name)
    return _BACKENDS[name]


def backend_names() -> list[str]:
    """Registered backend names, in the order ``auto`` asks them (``"auto"`` itself not included)."""
    return list(_BACKENDS)


def _answering(name: str) -> list[str]:
    """The backends an explicit ``backend=name`` asks, in order: ``name`` itself, then those aliased to it."""
    return ([name] if name in _BACKENDS else []) + [b for b in _BACKENDS if name in _ALIASES.get(b, ())]


def check_backend_name(backend: Any) -> str:
    """``backend`` if it is ``"auto"``, a registered name or alias, else ``ValueError`` naming the known ones."""
    if not isinstance(backend, str) or (backend != "auto" and not _answering(backend)):
        known = ", ".join(["auto", *_BACKENDS])
        raise ValueError(f"backend must be one of {known}, got {backend!r}")
    return backend


def _ask(name: str, backend: Any, model: nn.Module, method: str, opts: dict[str, Any], *, auto: bool) -> bool | str:
    try:
        answer = backend.supports(model, method, **opts)
    except Exception as err:
        if not auto:
            raise
        # a broken optional backend must not break attribution: say so and ask the next one
        warnings.warn(f"attribution backend {name!r} is unusable ({err!r}); trying the next backend "
                      f"(the general fallback is {FALLBACK!r})", RuntimeWarning, stacklevel=4)
        return f"raised {err!r}"
    if answer is True:
        return True
    return answer if isinstance(answer, str) and answer else "does not support this model/method"


def select_backend(model: nn.Module, method: str, backend: str = "auto", **opts: Any) -> tuple[str, AttributionFn]:
    """``(name, fn)``: the backend that attributes ``model`` with ``method`` and its built function.

    ``opts`` go to ``supports`` and ``build`` (``seed``, ``canonizers``, ``first_layers``, the
    method's keyword arguments). ``ValueError`` when no (or the named) backend supports the pair;
    the message holds every backend's reason.
    """
    check_backend_name(backend)
    if backend != "auto":
        names = _answering(backend)
        answers: list[str] = []
        for name in names:
            answer = _ask(name, _BACKENDS[name], model, method, opts, auto=False)
            if answer is True:
                return name, _BACKENDS[name].build(model, method, **opts)
            answers.append(str(answer) if len(names) == 1 else f"{name}: {answer}")
        raise ValueError(f"backend={backend!r} does not support method {method!r} on "
                         f"{type(model).__name__}: {'; '.join(answers)}")
    reasons: list[str] = []
    for name, impl in list(_BACKENDS.items()):
        answer = _ask(name, impl, model, method, opts, auto=True)
        if answer is not True:
            reasons.append(f"{name}: {answer}")
            continue
        try:
            return name, impl.build(model, method, **opts)
        except ValueError as err:  # e.g. fast: no final Linear for seed="one_hot" -> the next one
            reasons.append(f"{name}: {err}")
    raise ValueError(f"no attribution backend computes method {method!r} for {type(model).__name__}:\n  "
                     + "\n  ".join(reasons))


def default_method(model: nn.Module, fallback: str = "epsilon_flat") -> str:
    """The method to use when the caller says ``method=None``/``"auto"``: the first registered
    backend's ``default_method(model)`` that is not None, else ``fallback``."""
    for impl in list(_BACKENDS.values()):
        fn = getattr(impl, "default_method", None)
        if not callable(fn):
            continue
        try:
            answer = fn(model)
        except Exception as err:  # same tolerance as supports()
            warnings.warn(f"default_method of backend {impl!r} raised {err!r}; ignored", RuntimeWarning, stacklevel=2)
            continue
        if answer is not None:
            return str(answer)
    return fallback
