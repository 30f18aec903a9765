"""The graph LRP engine: one traced forward that records a modified-gradient graph, one backward.

:class:`GraphLRP` (``fn(x, target) -> R``) runs the plan of :mod:`.plan`: every node on the
relevance path computes its forward value through the rule's autograd piece (:mod:`.ops`), with
parameters detached (no parameter gradients, nothing of the model written: no hooks, no
``forward`` of a module with state is called, no global patching); nodes off the relevance path
(gates, attention weights under CP-LRP, normalization statistics, shapes) run without autograd.
One ``torch.autograd.grad`` from the logits to the first layer's output gives ``g`` with
``R = z₁ ⊙ g``; the first-layer rule (Flat / ZBox) maps it to the input. Eval-mode semantics
(BatchNorm running statistics, dropout and drop-path off) whatever the model's mode, as the
other backends.

Speed design (RelDrop's budget: one attribution ≈ half a training step): one forward over the
plan, no second forward; autograd records only the relevance path, with every parameter detached
(convolution backward computes the input gradient only; no weight gradients, no parameter
``.grad``); gates, attention weights (CP-LRP) and normalization statistics run under ``no_grad``;
BatchNorm is folded into the weights of the layer before it (a weight-sized multiply per call, no
extra pass over activations); an activation right after a stabilized layer or sum takes a single
fused factor ``act(z)/stab(z)``; LayerNorm's backward reuses the forward's 1/σ; Flat on the first
conv runs on one channel. Batched throughout, no per-sample loops, one host sync (the target
range check). The plan (trace, rules, folding decisions) is built once per model and cached.

:class:`GraphBackend` is the registry entry ``"graph"``: asked after ``"fast"`` and ``"vit"``
(which keep their exact numbers on the models they cover) and before the ``"zennit"`` fallback.
"""
from __future__ import annotations

import weakref
from typing import Any

import torch
import torch.nn as nn

from ...._checks import check_class_target, check_nonnegative
from ...rules import Unsupported, check_seed, stabilize
from ..._trace import TraceError, module_signature
from ..._wrappers import unwrap_model
from .plan import Options, Plan, build_plan
from .rules import PRESET_RULES

__all__ = ["GraphLRP", "GraphBackend", "METHODS", "plan_for"]

#: methods the graph engine computes
METHODS = tuple(PRESET_RULES)
_DEFAULT_EPS = {"epsilon_flat": 1e-3, "cp_lrp": 1e-3, "attnlrp": 1e-3, "epsilon_gamma_box": 1e-6, "zplus_flat": 0.0}

_PLANS: "weakref.WeakKeyDictionary[nn.Module, dict]" = weakref.WeakKeyDictionary()


def _options(method: str, kwargs: dict[str, Any]) -> Options:
    from ...presets import zbox_bounds  # the presets' own parsing of the ZBox bounds

    kw = dict(kwargs)
    eps = kw.pop("epsilon", _DEFAULT_EPS.get(method, 1e-3))
    stabilizer = kw.pop("stabilizer", 1e-6)
    gamma = kw.pop("gamma", 0.25)
    low, high, mean, std = (kw.pop(k, None) for k in ("low", "high", "mean", "std"))
    if kw:
        raise TypeError(f"method {method!r} got unexpected keyword argument(s) {', '.join(sorted(kw))}")
    for name, val in (("epsilon", eps), ("stabilizer", stabilizer), ("gamma", gamma)):
        check_nonnegative(name, val)
    if stabilizer == 0:
        raise ValueError("stabilizer must be > 0")
    if method == "epsilon_gamma_box":
        low, high = zbox_bounds(low, high, mean, std)
    return Options(method, float(eps), float(stabilizer), float(gamma), low, high)


def plan_for(model: nn.Module, opts: Options) -> Plan:
    """The cached plan of ``model`` for ``opts`` (re-built when the module tree changed)."""
    model = unwrap_model(model)
    sig = module_signature(model)
    key = (opts.method, opts.epsilon, opts.stabilizer, opts.gamma)
    per = _PLANS.setdefault(model, {})
    hit = per.get(key)
    if hit is not None and hit.signature == sig:
        return hit
    plan = build_plan(model, opts)
    plan.signature = sig
    per[key] = plan
    return plan


class GraphLRP:
    """LRP of any fx-traceable classifier with the rules of :mod:`.rules`: ``fn(x, target) -> R``.

    Args:
        model: the classifier (wrappers unwrapped); ``(B, ...) -> (B, classes)``.
        method: ``epsilon_flat`` / ``cp_lrp`` (the same rules: ε on conv/linear, Flat first layer,
            gates, attention and 1/σ held constant), ``attnlrp``, ``zplus_flat``, ``epsilon_gamma_box``.
        seed: ``"one_hot"`` (default) or ``"logit"``.
        **kwargs: the preset's options (``epsilon``, ``stabilizer``, ``gamma``, ``low``/``high`` or ``mean``/``std``).

    ``x``: float tensor ``(B, ...)`` in the compute dtype; ``target``: LongTensor ``(B,)`` or
    ``"predicted"``. Returns ``R`` with ``x``'s shape, detached. Raises ``ValueError`` (at
    construction) naming the first node without a rule.
    """

    #: only reads the model (parameters detached, BN running statistics as constants, no hooks, no
    #: module forward with side effects): :class:`~reldrop.attribution.Attributor` skips the state snapshot
    read_only = True

    def __init__(self, model: nn.Module, method: str = "epsilon_flat", *, seed: str = "one_hot",
                 **kwargs: Any) -> None:
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        if method not in METHODS:
            raise ValueError(f"the graph backend computes {', '.join(METHODS)}, not {method!r}")
        check_seed(seed)
        self.model = unwrap_model(model)
        self.method = method
        self.seed = seed
        self.opts = _options(method, kwargs)
        try:
            self._plan = plan_for(self.model, self.opts)
        except (Unsupported, TraceError) as exc:
            raise ValueError(f"the graph LRP backend cannot attribute {type(self.model).__name__}: {exc}") from exc

    def __repr__(self) -> str:
        return f"GraphLRP({type(self.model).__name__}, method={self.method!r}, steps={len(self._plan.steps)})"

    @property
    def plan(self) -> Plan:
        return self._plan

    def __call__(self, x: torch.Tensor, target: torch.Tensor | str) -> torch.Tensor:
        plan = self._plan
        if plan.signature != module_signature(self.model):
            try:
                plan = self._plan = plan_for(self.model, self.opts)
            except (Unsupported, TraceError) as exc:
                raise ValueError(f"the graph LRP backend cannot attribute the changed "
                                 f"{type(self.model).__name__}: {exc}") from exc
        with torch.enable_grad(), torch.autocast(device_type=x.device.type, enabled=False):
            return self._run(plan, x.detach(), target)

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """The plan's forward alone (no autograd): must equal ``model.eval()(x)`` (a self-check)."""
        plan = self._plan
        env: dict[Any, Any] = {"__input__": x.detach(), "__first__": []}
        with torch.no_grad(), torch.autocast(device_type=x.device.type, enabled=False):
            for step in plan.steps:
                env[step.node] = step.fn(env)
                for a in step.free:
                    env.pop(a, None)
        out = env[plan.output_node]
        return (out[0] if isinstance(out, (tuple, list)) else out).detach()

    def _run(self, plan: Plan, x: torch.Tensor, target: torch.Tensor | str) -> torch.Tensor:
        opts = self.opts
        chain = len(plan.pre_first) > 1
        x_in = x.requires_grad_(True) if chain else x
        env: dict[Any, Any] = {"__input__": x_in, "__first__": []}
        no_grad = torch.no_grad
        for step in plan.steps:
            if step.grad:
                env[step.node] = step.fn(env)
            else:
                with no_grad():
                    env[step.node] = step.fn(env)
            for a in step.free:
                env.pop(a, None)
        logits = env[plan.output_node]
        if isinstance(logits, (tuple, list)):
            logits = logits[0]
        if not isinstance(logits, torch.Tensor) or logits.dim() != 2:
            shape = tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__
            raise ValueError(f"the model must return logits of shape (B, classes), got {shape}")
        firsts = env["__first__"]
        env = {}
        check_class_target(target, logits.shape[0], logits.shape[1])
        idx = (logits.detach().argmax(dim=1) if isinstance(target, str) else target.to(logits.device).long())[:, None]
        value = logits.detach().gather(1, idx) if self.seed == "logit" else torch.ones_like(idx, dtype=logits.dtype)
        r_out = torch.zeros_like(logits).scatter_(1, idx, value)
        grad_out = r_out if plan.top is not None else r_out / stabilize(logits.detach(), opts.epsilon)
        if not logits.requires_grad:
            raise ValueError("no relevance reaches the logits' first layer (the output does not depend on it)")
        zs = [rec[2] for rec in firsts]
        grads = torch.autograd.grad(logits, zs, grad_outputs=grad_out, allow_unused=True)
        rel_at: list[tuple[torch.Tensor, torch.Tensor]] = []
        for (node, x0, z, w, b), g in zip(firsts, grads):
            info = plan.first[node]
            if g is None:
                g = torch.zeros_like(z)
            r_z = g if info.top else z.detach() * g
            r_x0 = self._first_rule(info, r_z, x0.detach(), w, b)
            rel_at.append((x0, r_x0))
        if not chain:
            total = rel_at[0][1]
            for _, r in rel_at[1:]:
                total = total + r
            return total.detach()
        outs = [x0 for x0, _ in rel_at]
        rels = [r for _, r in rel_at]
        (r_in,) = torch.autograd.grad(outs, x_in, grad_outputs=rels, allow_unused=True)
        return (torch.zeros_like(x) if r_in is None else r_in).detach()

    def _first_rule(self, info: Any, r_z: torch.Tensor, x0: torch.Tensor, w: torch.Tensor,
                    b: torch.Tensor | None) -> torch.Tensor:
        from . import ops

        opts = self.opts
        if info.rule == "flat":
            return ops.flat_rule(r_z, x0.shape, lambda xx, ww: info.lin(xx, ww, None), w.shape, info.groups,
                                 opts.stabilizer, info.dense)
        return ops.zbox_rule(r_z, x0, w, b, info.lin, opts.low, opts.high, opts.stabilizer)


class GraphBackend:
    """Registry entry ``"graph"``: :class:`GraphLRP` for every model :func:`plan_for` accepts.

    ``default_method``: ``"cp_lrp"`` for models with attention / softmax (the same numbers as
    ``epsilon_flat`` here), else None (the registry's ε/Flat). Custom ``canonizers`` /
    ``first_layers`` are refused (BN folding and the input layers are read off the graph).
    """

    name = "graph"

    def supports(self, model: nn.Module, method: str, *, canonizers: Any = None, first_layers: Any = None,
                 **opts: Any) -> bool | str:
        if canonizers is not None or first_layers is not None:
            return "the graph backend folds BatchNorm and finds the input layers itself (no custom canonizers/first_layers)"
        if method not in METHODS:
            return f"computes only {', '.join(METHODS)}"
        opts.pop("seed", None)
        try:
            plan_for(model, _options(method, opts))
        except (Unsupported, TraceError, TypeError, ValueError) as exc:
            return str(exc)
        except Exception as exc:  # a graph the planner does not understand: say so, never break `auto`
            return f"the graph planner failed on this model ({type(exc).__name__}: {exc})"
        return True

    def build(self, model: nn.Module, method: str, *, canonizers: Any = None, first_layers: Any = None,
              **kwargs: Any) -> GraphLRP:
        return GraphLRP(model, method, **kwargs)

    def default_method(self, model: nn.Module) -> str | None:
        try:
            plan = plan_for(model, _options("epsilon_flat", {}))
        except Exception:
            return None
        return "cp_lrp" if plan.uses_attention else None

    def __repr__(self) -> str:
        return "GraphBackend()"
