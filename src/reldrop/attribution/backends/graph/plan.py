"""Compile a traced model into the graph engine's plan: one step per fx node, each with its rule.

:func:`build_plan` walks the graph of :func:`reldrop.attribution._trace.trace_model` once:

1. *signals*: the nodes that depend on the input (everything else is a constant: parameters,
   buffers, shapes, values computed from them such as a standardized conv weight);
2. *kinds* from the rule table (:mod:`.rules`);
3. *relevance path*: walking back from the logits, the inputs each rule hands relevance to
   (a held gate, an attention weight under CP-LRP, a normalization statistic hand none) — only
   nodes on this path need a rule; the others run as plain values without autograd;
4. the *first layer(s)*: the conv/linear layer(s) reading the input (Flat / ZBox);
5. the *top*: the layer producing the logits takes the seed as relevance (``R / stab_ε(z)``);
6. BatchNorm folding into the conv/linear that is its only input.

Each step is a closure ``fn(env) -> value`` reading parameters from the live modules at every
call (so training between calls is seen). Raises :class:`~reldrop.attribution._shared.Unsupported`
naming the node, its op and module path for anything on the relevance path without a rule.
"""
from __future__ import annotations

import inspect
import operator
from dataclasses import dataclass, field
from typing import Any, Callable, Protocol, TypeGuard, cast

import torch
import torch.fx as fx
import torch.nn as nn
import torch.nn.functional as F

from ...rules import Unsupported
from ..._trace import function_name, trace_model
from . import ops
from .rules import ACT_LIMITS, FUNCTION_RULES, METHOD_RULES, PRESET_RULES, REFUSE_HINTS, module_kind

__all__ = ["Plan", "Step", "FirstLayer", "build_plan", "Options"]

if hasattr(F, "rms_norm"):
    FUNCTION_RULES.setdefault(F.rms_norm, "rmsnorm")

#: timm / torchvision functions fx keeps as single nodes (notrace / ``torch.fx.wrap``), by name -> kind
NAMED_FUNCTIONS = {
    "stochastic_depth": "pass",  # torchvision: traced in eval mode (training=False), the identity
    "window_reverse": "pass", "grid_reverse": "pass", "window_reverse_nchw": "pass", "grid_reverse_nchw": "pass",
    "deblockify": "pass", "maybe_add_mask": "add", "reshape_pre_pool": "pass", "reshape_post_pool": "pass",
}
#: pass ops that move data one-to-one (allowed between the input and the first layer)
_BIJECTIVE_METHODS = {"reshape", "view", "permute", "transpose", "flatten", "unflatten", "contiguous", "to",
                      "clone", "float", "double", "type_as"}
_BIJECTIVE_FUNCS = {torch.flatten, torch.reshape, torch.permute, torch.transpose, torch.clone}
_BIJECTIVE_MODULES = (nn.Identity, nn.Dropout, nn.Flatten, nn.Unflatten)
_DROPOUT_MODULES = (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout)
_DROPOUT_FUNCS = {F.dropout, F.dropout1d, F.dropout2d}
_GATE_PROPAGATING = {"pass", "mul", "div", "add", "linmap", "dense", "conv", "matmul", "act", "layernorm", "groupnorm",
                     "rmsnorm", "batchnorm", "addcmul", "upsample", "max"}
_META_ATTRS = {"shape", "dtype", "device", "ndim", "is_cuda", "requires_grad", "layout"}


@dataclass
class Options:
    """The preset's numbers: ε of the layers, δ of sums/maps/Flat, γ, ZBox bounds."""

    method: str
    epsilon: float
    stabilizer: float
    gamma: float = 0.25
    low: Any = None
    high: Any = None


@dataclass
class FirstLayer:
    """A layer reading the input: its output becomes a leaf of the backward; its rule runs after."""

    node: fx.Node
    rule: str  # flat | zbox
    dense: bool
    groups: int
    lin: Callable
    params: Callable[[dict], tuple]  # params(env) -> (w, b), detached (BN folded in)
    top: bool = False


@dataclass
class Step:
    node: fx.Node
    fn: Callable[[dict], Any]
    grad: bool  # on the relevance path (autograd on) or a plain value (no autograd)
    free: tuple = ()


@dataclass
class Plan:
    steps: list[Step]
    input_node: fx.Node
    output_node: fx.Node
    first: dict[fx.Node, FirstLayer]
    pre_first: set  # nodes between the input and the first layer(s)
    top: fx.Node | None  # the node whose rule takes the seed as relevance
    signature: tuple = ()
    kinds: dict = field(default_factory=dict)
    uses_attention: bool = False


# ----------------------------------------------------------------------------------------- helpers
def _where(n: fx.Node) -> str:
    stack = n.meta.get("nn_module_stack") or {}
    path = list(stack.values())[-1][0] if stack else ""
    if n.op == "call_module":
        path = str(n.target)
    return f" in module {path!r}" if path else ""


def _describe(n: fx.Node, modules: dict[str, nn.Module]) -> str:
    if n.op == "call_module":
        return f"node {n.name!r} (module {type(modules[cast(str, n.target)]).__name__} at {n.target!r})"
    if n.op == "call_function":
        return f"node {n.name!r} (function {function_name(n.target)}){_where(n)}"
    if n.op == "call_method":
        return f"node {n.name!r} (tensor method .{n.target}()){_where(n)}"
    return f"node {n.name!r} ({n.op} {n.target}){_where(n)}"


def _inputs(a: Any) -> list[fx.Node]:
    out: list[fx.Node] = []
    fx.node.map_arg(a, out.append)
    return out


_SDPA_ARGS = ("query", "key", "value", "attn_mask", "dropout_p", "is_causal", "scale", "enable_gqa")


def _bind(target: Callable, args: tuple, kwargs: dict) -> dict[str, Any] | None:
    if target is F.scaled_dot_product_attention:
        b = dict(zip(_SDPA_ARGS, args))
        b.update(kwargs)
        return b
    try:
        sig = inspect.signature(target)
        bound = sig.bind(*args, **kwargs)
    except (TypeError, ValueError):
        return None
    bound.apply_defaults()
    return dict(bound.arguments)


def _no_inplace(target: Callable, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
    """(args, kwargs) of an F.* call with ``inplace`` forced to False."""
    params = None
    try:
        params = list(inspect.signature(target).parameters)
    except (TypeError, ValueError):
        pass
    if params and "inplace" in params:
        i = params.index("inplace")
        if len(args) > i:
            args = tuple(args[:i]) + (False,) + tuple(args[i + 1:])
        else:
            kwargs = dict(kwargs, inplace=False)
    return args, kwargs


def _detach(v: Any) -> Any:
    if isinstance(v, torch.Tensor):
        return v.detach()
    if isinstance(v, (list, tuple)) and any(isinstance(x, torch.Tensor) for x in v):
        return type(v)(_detach(x) for x in v) if not hasattr(v, "_fields") else type(v)(*(_detach(x) for x in v))
    return v


def _act_name(n: fx.Node, modules: dict) -> str:
    if n.op == "call_module":
        return type(modules[n.target]).__name__.lower()
    if n.op == "call_function":
        return getattr(n.target, "__name__", "").lower()
    return str(n.target).rstrip("_").lower()


# ----------------------------------------------------------------------------------------- layers
def _layer_spec(n: fx.Node, m: nn.Module | None, args: tuple, kwargs: dict, env_val: Callable | None
                ) -> tuple[fx.Node | Any, Callable, Callable, bool, int, tuple | None]:
    """(data input, lin(x, w, b), params(env) -> (w, b), dense, groups, weight shape fn) of a conv/linear node."""
    if m is not None:
        name = type(m).__name__
        if isinstance(m, nn.Linear):
            return args[0], ops.dense_fn, lambda env: (m.weight, m.bias), True, 1, None
        m = cast("nn.Conv1d | nn.Conv2d | nn.Conv3d", m)  # kind "conv": one of these or a subclass (timm's *Conv2dSame)
        dims = m.weight.dim() - 2
        pre_pad: Callable[[torch.Tensor], torch.Tensor] | None = None
        padding: str | tuple[int, ...] | int = m.padding
        if name in ("Conv2dSame", "StdConv2dSame", "ScaledStdConv2dSame") and type(m).__module__.startswith("timm."):
            same = name == "Conv2dSame" or bool(getattr(m, "same_pad", False))
            if same:
                from timm.layers.padding import pad_same

                ks, st, dl = m.kernel_size, m.stride, m.dilation
                if name == "Conv2dSame":
                    ks = m.weight.shape[-2:]

                def pre_pad(x: torch.Tensor, ks: Any = ks, st: Any = st, dl: Any = dl) -> torch.Tensor:
                    return pad_same(x, ks, st, dl)
                padding = (0, 0) if name == "Conv2dSame" else m.padding
        elif m.padding_mode != "zeros":
            pads = m._reversed_padding_repeated_twice
            mode = m.padding_mode

            def pre_pad(x: torch.Tensor, pads: Any = pads, mode: str = mode) -> torch.Tensor:
                return F.pad(x, pads, mode=mode)
            padding = 0
        lin = ops.conv_fn(dims, m.stride, padding, m.dilation, m.groups, pre_pad)
        std: Any = m  # timm's StdConv2dSame / ScaledStdConv2dSame (timm has no type information): eps, gain, scale
        if name == "StdConv2dSame":
            def params(env: dict) -> tuple:
                w = m.weight
                w = F.batch_norm(w.reshape(1, m.out_channels, -1), None, None, training=True, momentum=0.,
                                 eps=std.eps).reshape_as(w)
                return w, m.bias
        elif name == "ScaledStdConv2dSame":
            def params(env: dict) -> tuple:
                w = m.weight
                w = F.batch_norm(w.reshape(1, m.out_channels, -1), None, None, weight=(std.gain * std.scale).view(-1),
                                 training=True, momentum=0., eps=std.eps).reshape_as(w)
                return w, m.bias
        else:
            def params(env: dict) -> tuple:
                return m.weight, m.bias
        return args[0], lin, params, False, m.groups, None
    # functional
    raise AssertionError  # pragma: no cover - handled by _functional_layer


class _BatchNormLike(Protocol):
    """What a BatchNorm step reads: ``nn.BatchNorm*d``, timm's ``BatchNormAct2d`` and ``FrozenBatchNormAct2d``
    (a plain ``nn.Module`` with BatchNorm's buffers)."""

    running_mean: torch.Tensor | None
    running_var: torch.Tensor | None
    weight: torch.Tensor | None
    bias: torch.Tensor | None
    eps: float


_CONV_FUNCS: dict[Any, int] = {F.conv1d: 1, F.conv2d: 2, F.conv3d: 3}


class Builder:
    """Builds the plan for one (model, options); see :func:`build_plan`."""

    def __init__(self, model: nn.Module, opts: Options) -> None:
        self.model = model
        self.opts = opts
        if opts.method not in PRESET_RULES:
            raise Unsupported(f"method {opts.method!r} is not computed by the graph backend")
        self.rules = PRESET_RULES[opts.method]
        self.gm = trace_model(model)
        self.modules = dict(model.named_modules())
        self.nodes = list(self.gm.graph.nodes)

    # --- classification -------------------------------------------------------------------------
    def kind_of(self, n: fx.Node) -> str | None:
        if n.op == "call_module":
            m = self.modules.get(n.target)
            return None if m is None else module_kind(m)
        if n.op == "call_function":
            t = n.target
            try:
                k = FUNCTION_RULES.get(t)
            except TypeError:
                k = None
            if k is None and getattr(t, "__module__", "").startswith(("timm.", "torchvision.")):
                k = NAMED_FUNCTIONS.get(getattr(t, "__name__", ""))
            return k
        if n.op == "call_method":
            name = str(n.target)
            base = name[:-1] if name.endswith("_") and not name.endswith("__") else name
            return METHOD_RULES.get(base)
        return None

    def build(self) -> Plan:
        nodes, modules = self.nodes, self.modules
        placeholders = [n for n in nodes if n.op == "placeholder"]
        if not placeholders:
            raise Unsupported("the traced model has no input")
        inp = placeholders[0]
        out_node = next(n for n in nodes if n.op == "output")
        alias: dict[fx.Node, fx.Node] = {}

        def res(a: Any) -> Any:
            def f(x: fx.Node) -> fx.Node:
                while x in alias:
                    x = alias[x]
                return x
            return fx.node.map_arg(a, f)

        self.args: dict[fx.Node, tuple] = {}
        self.kwargs: dict[fx.Node, dict] = {}
        signal: set[fx.Node] = {inp}
        kinds: dict[fx.Node, str | None] = {}
        for n in nodes:
            if n.op in ("placeholder", "output", "get_attr"):
                self.args[n], self.kwargs[n] = res(n.args), res(n.kwargs)
                kinds[n] = "input" if n is inp else ("output" if n.op == "output" else "const")
                continue
            self.args[n], self.kwargs[n] = res(n.args), res(n.kwargs)
            k = self.kind_of(n)
            if n.op == "call_function" and n.target is getattr and len(n.args) > 1 and n.args[1] not in _META_ATTRS:
                k = "indices" if n.args[1] == "indices" else "pass"  # .values of a (values, indices) result
            kinds[n] = k
            ins = _inputs((self.args[n], self.kwargs[n]))
            if k in ("meta", "const", "indices"):
                continue
            if any(a in signal for a in ins):
                signal.add(n)
            # in-place ops: later readers of the mutated tensor read this node
            inplace = False
            if n.op == "call_method" and str(n.target).endswith("_") and not str(n.target).endswith("__"):
                inplace = True
            elif n.op == "call_function" and (n.target in (operator.iadd, operator.isub, operator.imul,
                                                               operator.itruediv) or self.kwargs[n].get("inplace")):
                inplace = True
            elif n.op == "call_module" and getattr(modules.get(n.target), "inplace", False) is True:
                inplace = True
            if inplace and self.args[n] and isinstance(self.args[n][0], fx.Node):
                alias[self.args[n][0]] = n
        self.signal, self.kinds = signal, kinds
        self._gates = self._gate_sweep()
        self.out_args = res(out_node.args)

        # --- relevance path ---
        need: set[fx.Node] = set()
        outs = [a for a in _inputs(self.out_args) if a in signal]
        if not outs:
            raise Unsupported("the model's output does not depend on its input")
        logits = outs[0]
        need.add(logits)
        self.carried: dict[fx.Node, list[fx.Node]] = {}
        for n in reversed(nodes):
            if n not in need or n is inp:
                continue
            c = self.carries(n)
            self.carried[n] = c
            need.update(a for a in c if a in signal)
        self.need = need

        # --- first layers ---
        first: dict[fx.Node, FirstLayer] = {}
        pre_first: set[fx.Node] = {inp}
        readers: dict[fx.Node, list[fx.Node]] = {}
        for n in nodes:
            for a in self.carried.get(n, []):
                readers.setdefault(a, []).append(n)
        frontier = [inp]
        while frontier:
            cur = frontier.pop()
            for u in readers.get(cur, []):
                k = kinds.get(u)
                if k in ("conv", "dense") or (k == "matmul" and self._is_const_matmul(u)):
                    if self._data_input(u) is not cur:
                        raise Unsupported(f"the input reaches {_describe(u, modules)} other than as its data input")
                    first[u] = None  # type: ignore[assignment]  # a placeholder: the FirstLayer is built below, once the top is known
                elif self._bijective(u):
                    if u not in pre_first:
                        pre_first.add(u)
                        frontier.append(u)
                else:
                    raise Unsupported(
                        f"the input feeds {_describe(u, modules)} before any conv/linear layer; the first-layer "
                        f"rule ({self.rules['first']}) needs the input to go straight into conv/linear layers")
        if not first:
            raise Unsupported("no conv/linear layer reads the input")

        # --- BN folding: conv/linear whose only reader is an eval BatchNorm ---
        self.fold: dict[fx.Node, fx.Node] = {}  # layer -> BN node
        self.folded_bn: dict[fx.Node, fx.Node] = {}  # BN node -> layer
        for n in nodes:
            if n not in need or kinds.get(n) not in ("conv", "dense"):
                continue
            users = list(n.users)
            if len(users) != 1 or users[0].op != "call_module" or kinds.get(users[0]) != "batchnorm":
                continue
            u = users[0]
            bn = modules[u.target]
            if self.args[u][0] is not n or not self._bn_ok(bn):
                continue
            w_dim = (modules[n.target].weight.dim() if n.op == "call_module" else None)
            if n.op == "call_module" and isinstance(modules[n.target], nn.Linear) and not isinstance(
                    bn, nn.BatchNorm1d):
                continue
            if w_dim is None:
                continue
            self.fold[n] = u
            self.folded_bn[u] = n

        # --- top ---
        top = logits
        while kinds.get(top) == "pass" and len(self.carried.get(top, [])) == 1 and top not in first:
            nxt = self.carried[top][0]
            if len(nxt.users) != 1:
                break
            top = nxt
        top_ok = self._has_factor(top)
        self.top = top if top_ok else None
        if top in first or (top in self.folded_bn and self.folded_bn[top] in first):
            self.top = top

        # --- an activation right after a stabilized layer/sum (its only reader): one fused factor ---
        self.fused: dict[fx.Node, float] = {}  # producer -> its ε
        self.fused_tail: set[fx.Node] = set()  # BatchNormAct2d nodes whose activation takes the factor
        for n in nodes:
            if n not in need or kinds.get(n) not in ("act",) or n in first:
                continue
            d = self._data_input(n)
            if not isinstance(d, fx.Node) or d in first or d is self.top or len(d.users) != 1 or d not in need:
                continue
            if d in self.fold:
                continue
            if d in self.folded_bn:  # conv -> BN (folded, no activation of its own) -> act
                lay = self.folded_bn[d]
                bn_act = getattr(modules[d.target], "act", None)
                if (bn_act is None or isinstance(bn_act, nn.Identity)) and lay not in first and \
                        self.rules["dense" if self._lin_dense(lay) else "conv"] == "epsilon":
                    self.fused[lay] = self.opts.epsilon
                    self.fused[d] = self.opts.epsilon  # marks the act's input as fused
                continue
            kd = kinds.get(d)
            if kd in ("conv", "dense") and self.rules["dense" if self._lin_dense(d) else "conv"] == "epsilon":
                self.fused[d] = self.opts.epsilon
            elif kd in ("add", "linmap") and not (d.op == "call_function" and
                                                  getattr(d.target, "__name__", "") == "maybe_add_mask"):
                self.fused[d] = self.opts.stabilizer

        for u, lay in self.folded_bn.items():  # timm BatchNormAct2d: conv+BN folded, its activation fused
            bn_act = getattr(modules[u.target], "act", None)
            if u in need and u is not self.top and lay not in first and bn_act is not None and \
                    not isinstance(bn_act, nn.Identity) and module_kind(bn_act) == "act" and \
                    self.rules["dense" if self._lin_dense(lay) else "conv"] == "epsilon":
                self.fused[lay] = self.opts.epsilon
                self.fused_tail = getattr(self, "fused_tail", set()) | {u}

        # --- refusals on the relevance path ---
        for n in nodes:
            if n in need and n is not inp and n not in pre_first:
                self._check_rule(n)
            elif n in signal and n not in need and n.op == "call_module" and kinds.get(n) is None:
                m = modules[n.target]
                raise Unsupported(f"{_describe(n, modules)} has no LRP rule"
                                  + (f": {REFUSE_HINTS[type(m)]}" if type(m) in REFUSE_HINTS else ""))

        # --- steps ---
        self.first = first
        for n in list(first):
            first[n] = self._first_layer(n)
        steps: list[Step] = []
        last_use: dict[fx.Node, int] = {}
        for i, n in enumerate(nodes):
            for a in _inputs((self.args[n], self.kwargs[n])):
                last_use[a] = i
        for i, n in enumerate(nodes):
            if n.op == "output":
                continue
            fn = self._step(n)
            free = tuple(a for a in _inputs((self.args[n], self.kwargs[n])) if last_use.get(a) == i)
            steps.append(Step(n, fn, n in need, free))
        uses_attention = any(kinds.get(n) in ("sdpa", "mha", "softmax") for n in nodes)
        return Plan(steps=steps, input_node=inp, output_node=logits, first=first, pre_first=pre_first, top=self.top,
                    kinds=kinds, uses_attention=uses_attention)

    # --- analysis helpers -------------------------------------------------------------------------
    def _lin_dense(self, n: fx.Node) -> bool:
        if n.op == "call_module":
            return isinstance(self.modules[n.target], nn.Linear)
        return n.target is F.linear

    def _bn_ok(self, bn: nn.Module) -> bool:
        return getattr(bn, "running_mean", None) is not None and getattr(bn, "running_var", None) is not None

    def _bijective(self, n: fx.Node) -> bool:
        if n.op == "call_method":
            return str(n.target) in _BIJECTIVE_METHODS
        if n.op == "call_function":
            return n.target in _BIJECTIVE_FUNCS or n.target in _DROPOUT_FUNCS
        if n.op == "call_module":
            return isinstance(self.modules[n.target], _BIJECTIVE_MODULES)
        return False

    def _is_const_matmul(self, n: fx.Node) -> bool:
        a = self.args[n]
        return len(a) == 2 and isinstance(a[0], fx.Node) and a[0] in self.signal and not (
            isinstance(a[1], fx.Node) and a[1] in self.signal)

    def _data_input(self, n: fx.Node) -> Any:
        a = self.args[n]
        if a:
            return a[0]
        kw = self.kwargs[n]
        return kw.get("input", kw.get("x"))

    def _sig(self, a: Any) -> TypeGuard[fx.Node]:
        return isinstance(a, fx.Node) and a in self.signal

    def is_gate(self, n: Any) -> bool:
        """True when ``n`` is computed from gates only: sigmoid, hard-sigmoid, statistics (rsqrt, norm,
        ...), a softmax under CP-LRP, or reshapes / products / sums / layers of such values
        (e.g. GRN's ``‖x‖ / mean ‖x‖``, CaiT's talking-heads mixing of attention weights)."""
        return isinstance(n, fx.Node) and self._gates.get(n, False)

    def _gate_sweep(self) -> dict[fx.Node, bool]:
        """:meth:`is_gate` for every signal node, in one sweep in graph (topological) order."""
        gates: dict[fx.Node, bool] = {}
        for n in self.nodes:
            if n not in self.signal:
                continue
            k = self.kinds.get(n)
            if k in ("gate", "stat"):
                gates[n] = True
            elif k == "softmax":
                gates[n] = self.rules["softmax"] == "constant"
            elif k in _GATE_PROPAGATING:
                sig_in = [a for a in _inputs((self.args[n], self.kwargs[n])) if a in self.signal]
                gates[n] = bool(sig_in) and all(gates.get(a, False) for a in sig_in)
            else:
                gates[n] = False
        return gates

    def carries(self, n: fx.Node) -> list[fx.Node]:
        """The signal inputs of ``n`` that receive relevance under its rule."""
        k = self.kinds.get(n)
        args, kwargs = self.args[n], self.kwargs[n]
        sig = [a for a in _inputs((args, kwargs)) if a in self.signal]
        if k in ("conv", "dense", "layernorm", "groupnorm", "rmsnorm", "batchnorm", "act", "gate", "upsample", "glu",
                 "normalize"):
            d = self._data_input(n)
            return [d] if isinstance(d, fx.Node) else []
        if k == "matmul" or k == "mul":
            if len(args) >= 2 and self._sig(args[0]) and self._sig(args[1]):
                ga, gb = self.is_gate(args[0]), self.is_gate(args[1])
                if ga != gb:
                    return [args[1] if ga else args[0]]
            return sig
        if k == "div":
            return [args[0]] if self._sig(args[0]) else []
        if k == "softmax":
            return sig if self.rules["softmax"] == "gradient" else []
        if k == "sdpa":
            b = _bind(F.scaled_dot_product_attention, args, kwargs) or {}
            if self.rules["attention"] == "cp":
                return [b["value"]] if self._sig(b.get("value")) else []
            return [b[x] for x in ("query", "key", "value") if self._sig(b.get(x))]
        if k == "mha":
            if self.rules["attention"] == "cp":
                v = args[2] if len(args) > 2 else kwargs.get("value")
                return [v] if self._sig(v) else []
            return sig
        if k in ("const", "meta", "stat"):
            return []
        return sig

    def _has_factor(self, n: fx.Node) -> bool:
        k = self.kinds.get(n)
        if n in self.folded_bn:
            return True
        if k in ("conv", "dense", "add", "linmap", "addcmul"):
            return True
        if k == "matmul" and self._is_const_matmul(n):
            return True
        if k == "upsample":
            return self._upsample_mode(n) not in ("nearest", "nearest-exact")
        return False

    def _upsample_mode(self, n: fx.Node) -> str:
        if n.op == "call_module":
            return getattr(self.modules[n.target], "mode", "nearest")
        b = _bind(F.interpolate, self.args[n], self.kwargs[n]) or {}
        return b.get("mode", "nearest")

    def _check_rule(self, n: fx.Node) -> None:
        k = self.kinds.get(n)
        desc = _describe(n, self.modules)
        if n.op in ("get_attr", "placeholder"):
            return
        if k is None:
            hint = ""
            if n.op == "call_module":
                hint = REFUSE_HINTS.get(type(self.modules[n.target]), "")
                if not hint and type(self.modules[n.target]).__module__.startswith("timm."):
                    hint = "a timm module fx cannot trace through; an LRP rule for it (or a traceable forward) is needed"
            elif n.op == "call_function" and isinstance(n.target, type) and issubclass(n.target, torch.autograd.Function):
                hint = "a custom autograd function"
            elif str(getattr(n, "target", "")) in ("sort", "topk", "argsort", "argmax"):
                hint = "sorting / top-k is not differentiable in an LRP sense"
            raise Unsupported(f"{desc} lies on the relevance path and has no LRP rule"
                              + (f" ({hint})" if hint else "")
                              + "; the graph backend covers conv/linear/norm/activation/pooling/attention/"
                                "residual ops (see reldrop.attribution.graph.rules)")
        if k == "stat":
            raise Unsupported(f"{desc} receives relevance: a normalization statistic is only allowed as a held "
                              "factor (multiplying or dividing a signal)")
        if k == "softmax" and self.rules["softmax"] == "constant":
            raise Unsupported(f"{desc} receives relevance, but CP-LRP holds softmax outputs constant (allowed only as "
                              "attention / gate weights); use method='attnlrp'")
        if k == "div" and not self._sig(self.args[n][0]):
            raise Unsupported(f"{desc}: a signal only in the denominator has no LRP rule")
        if k == "matmul":
            a = self.args[n]
            if len(a) >= 2 and not self._sig(a[0]):
                raise Unsupported(f"{desc}: constant @ signal is not implemented (only signal @ weight)")
        if k in ("conv", "dense") and n.op == "call_function":
            b = self._functional_bind(n)
            if self._sig(b.get("weight")) or self._sig(b.get("bias")):
                raise Unsupported(f"{desc}: a conv/linear whose weight depends on the input has no LRP rule")
        if k == "batchnorm" and n not in self.folded_bn:
            if n.op == "call_module" and not self._bn_ok(self.modules[n.target]):
                raise Unsupported(f"{desc}: BatchNorm without running statistics normalizes with batch statistics; "
                                  "no LRP rule (track_running_stats=True would help)")
            if n.op == "call_function":
                b = _bind(F.batch_norm, self.args[n], self.kwargs[n]) or {}
                if b.get("training") or b.get("running_mean") is None:
                    raise Unsupported(f"{desc}: batch-statistics normalization has no LRP rule")
        if k == "addcmul":
            a = self.args[n]
            if len(a) >= 3 and self._sig(a[1]) and self._sig(a[2]):
                raise Unsupported(f"{desc}: addcmul of two signals is not implemented")
        if k == "mha":
            m = self.modules[n.target]
            if not m._qkv_same_embed_dim or m.bias_k is not None or m.add_zero_attn:
                raise Unsupported(f"{desc}: MultiheadAttention with separate k/v dims, bias_k or add_zero_attn")
            b = _bind(type(m).forward, (m, *self.args[n]), self.kwargs[n]) or {}
            if b.get("key_padding_mask") is not None or b.get("attn_mask") is not None:
                raise Unsupported(f"{desc}: MultiheadAttention with masks is not implemented")
        if k == "sdpa":
            b = _bind(F.scaled_dot_product_attention, self.args[n], self.kwargs[n]) or {}
            if b.get("enable_gqa"):
                raise Unsupported(f"{desc}: grouped-query attention is not implemented")

    def _functional_bind(self, n: fx.Node) -> dict:
        t = n.target
        names = ("input", "weight", "bias", "stride", "padding", "dilation", "groups") if t in _CONV_FUNCS else (
            ("input", "weight", "bias") if t is F.linear else ("input", "other"))
        b = dict(zip(names, self.args[n]))
        b.update(self.kwargs[n])
        return b

    # --- step construction ------------------------------------------------------------------------
    def _val(self, a: Any) -> Callable[[dict], Any]:
        """Getter of an argument structure from the environment (constants detached)."""
        nodes = _inputs(a)
        if not nodes:
            return lambda env: a
        if isinstance(a, fx.Node):
            return lambda env: env[a]
        return lambda env: fx.node.map_arg(a, lambda x: env[x])

    def _lin_of(self, n: fx.Node) -> tuple[Any, Callable, Callable, bool, int]:
        """(data input node, lin, params(env) -> (w, b), dense, groups) of a conv/linear/matmul node."""
        if n.op == "call_module":
            m = self.modules[n.target]
            d, lin, params, dense, groups, _ = _layer_spec(n, m, self.args[n], self.kwargs[n], None)
            return d, lin, params, dense, groups
        if self.kinds[n] == "matmul":
            wv = self._val(self.args[n][1])
            return self.args[n][0], lambda x, w, b: torch.matmul(x, w), lambda env: (wv(env), None), True, 1
        b = self._functional_bind(n)
        wv, bv = self._val(b.get("weight")), self._val(b.get("bias"))
        if n.target is F.linear:
            return b["input"], ops.dense_fn, lambda env: (wv(env), bv(env)), True, 1
        dims = _CONV_FUNCS[n.target]
        lin = ops.conv_fn(dims, b.get("stride", 1), b.get("padding", 0), b.get("dilation", 1), b.get("groups", 1))
        return b["input"], lin, lambda env: (wv(env), bv(env)), False, int(b.get("groups", 1))

    def _folded_params(self, n: fx.Node, params: Callable) -> Callable[[dict], tuple]:
        if n not in self.fold:
            return lambda env: tuple(None if t is None else t.detach() for t in params(env))
        bn = self.modules[self.fold[n].target]
        is_t = False

        def folded(env: dict) -> tuple:
            w, b = params(env)
            w, b = w.detach(), None if b is None else b.detach()
            scale = bn.weight.detach() / (bn.running_var + bn.eps) ** 0.5 if bn.weight is not None else \
                1.0 / (bn.running_var + bn.eps) ** 0.5
            w = w * scale.reshape(-1, *([1] * (w.dim() - 1))) if not is_t else w * scale
            shift = -bn.running_mean if b is None else b - bn.running_mean
            b2 = shift * scale
            if bn.bias is not None:
                b2 = b2 + bn.bias.detach()
            return w, b2
        return folded

    def _first_layer(self, n: fx.Node) -> FirstLayer:
        _, lin, params, dense, groups = self._lin_of(n)
        return FirstLayer(n, self.rules["first"], dense, groups, lin, self._folded_params(n, params),
                          top=(self.top is n or (self.top in self.folded_bn and self.folded_bn[self.top] is n)))

    def _layer_step(self, n: fx.Node) -> Callable[[dict], Any]:
        d, lin, params, dense, groups = self._lin_of(n)
        get_p = self._folded_params(n, params)
        xv = self._val(d)
        top = self.top is n or (self.top is not None and self.folded_bn.get(self.top) is n)
        if n in self.first:
            def first_fn(env: dict) -> torch.Tensor:
                x = xv(env)
                w, b = get_p(env)
                with torch.no_grad():
                    z = lin(x.detach(), w, b)
                env["__first__"].append((n, x, z.requires_grad_(True), w, b))
                return z
            return first_fn
        rule = self.rules["dense" if dense else "conv"]
        o = self.opts
        if rule == "epsilon":
            eps = o.epsilon
            if n in self.fused:  # the activation after it applies the factor
                def raw_fn(env: dict) -> torch.Tensor:
                    w, b = get_p(env)
                    return lin(xv(env), w, b)
                return raw_fn

            def eps_fn(env: dict) -> torch.Tensor:
                w, b = get_p(env)
                return ops.scale_grad(lin(xv(env), w, b), eps, top)
            return eps_fn
        if rule == "zplus":
            def zplus_fn(env: dict) -> torch.Tensor:
                w, b = get_p(env)
                return ops.ZPlusLinear.apply(xv(env), w, b, lin, o.stabilizer, top)
            return zplus_fn
        if rule == "gamma":
            def gamma_fn(env: dict) -> torch.Tensor:
                w, b = get_p(env)
                return ops.GammaLinear.apply(xv(env), w, b, lin, o.gamma, o.stabilizer, top)
            return gamma_fn
        raise Unsupported(f"unknown layer rule {rule!r}")  # pragma: no cover

    def _plain_layer(self, n: fx.Node) -> Callable[[dict], Any]:
        d, lin, params, dense, groups = self._lin_of(n)
        get_p = self._folded_params(n, params)
        xv = self._val(d)

        def fn(env: dict) -> torch.Tensor:
            w, b = get_p(env)
            return lin(xv(env), w, b)
        return fn

    def _act_fn(self, n: fx.Node) -> tuple[Callable[[dict], Callable[[torch.Tensor], torch.Tensor]], str]:
        """(maker(env) -> f, name): the activation as a function of its data input (never in place)."""
        name = _act_name(n, self.modules)
        if n.op == "call_module":
            m = self.modules[n.target]
            inplace = bool(getattr(m, "inplace", False))
            fwd = type(m).forward

            def f_mod(x: torch.Tensor) -> torch.Tensor:
                return fwd(m, x.clone() if inplace else x)
            return (lambda env: f_mod), name
        if n.op == "call_function":
            t = cast(Callable[..., Any], n.target)  # fx: a call_function target is callable
            rest_a, rest_k = _no_inplace(t, self.args[n][1:], self.kwargs[n])
            ra, rk = self._val(rest_a), self._val(rest_k)

            def make(env: dict) -> Callable[[torch.Tensor], torch.Tensor]:
                a, k = _detach(ra(env)), {key: _detach(v) for key, v in rk(env).items()}
                return lambda x: t(x, *a, **k)
            return make, name
        meth = str(n.target).rstrip("_")
        rv = self._val(self.args[n][1:])

        def make_m(env: dict) -> Callable[[torch.Tensor], torch.Tensor]:
            rest = rv(env)
            return lambda x: getattr(x, meth)(*rest)
        return make_m, name

    def _bn_fn(self, m: nn.Module) -> Callable[[torch.Tensor], torch.Tensor]:
        bn = cast(_BatchNormLike, m)  # kind "batchnorm": a torch BatchNorm*d or a timm *BatchNormAct2d

        def f(x: torch.Tensor) -> torch.Tensor:
            return F.batch_norm(x, bn.running_mean, bn.running_var, None if bn.weight is None else bn.weight.detach(),
                                None if bn.bias is None else bn.bias.detach(), False, 0.0, bn.eps)
        return f

    def _bn_act_tail(self, m: nn.Module, rel: bool, fused_eps: float | None = None
                     ) -> Callable[[torch.Tensor], torch.Tensor]:
        act = getattr(m, "act", None)
        if act is None or isinstance(act, nn.Identity):
            return lambda x: x
        kind = module_kind(act)
        if kind not in ("act", "gate"):
            raise Unsupported(f"{type(m).__name__} with activation {type(act).__name__} has no LRP rule")
        fwd = type(act).forward
        inplace = bool(getattr(act, "inplace", False))
        name = type(act).__name__.lower()
        if not rel:
            return lambda x: fwd(act, x)
        if fused_eps is not None:
            if type(act) is nn.ReLU:
                return lambda x: ops.scale_act(x, torch.relu, fused_eps)
            return lambda x: ops.scale_act(x, lambda t: fwd(act, t.clone() if inplace else t), fused_eps)
        if type(act) is nn.ReLU:
            return torch.relu
        return lambda x: ops.identity_rule(x, lambda t: fwd(act, t.clone() if inplace else t), ACT_LIMITS.get(name, 0.0))

    def _step(self, n: fx.Node) -> Callable[[dict], Any]:
        k = self.kinds.get(n)
        rel = n in self.need
        args, kwargs = self.args[n], self.kwargs[n]
        modules = self.modules
        if n.op == "placeholder":
            if n is self._inp():
                return lambda env: env["__input__"]
            default = n.args[0] if n.args else None
            return lambda env: default
        if n.op == "get_attr":
            owner_path, _, attr = str(n.target).rpartition(".")
            try:
                owner = self.model.get_submodule(owner_path) if owner_path else self.model
                getattr(owner, attr)
            except AttributeError:  # a tensor constant fx made while tracing: kept by the GraphModule only
                owner = self.gm.get_submodule(owner_path) if owner_path else self.gm
            return lambda env: _detach(getattr(owner, attr))
        if n in self.folded_bn:
            # the folded layer's step already produced the BN output; a BatchNormAct2d adds its activation
            src = self.folded_bn[n]
            tail = self._bn_act_tail(modules[n.target], rel, self.opts.epsilon if n in self.fused_tail else None)
            return lambda env: tail(env[src])
        if n.op == "call_module" and not (k in ("conv", "dense") or k is None):
            m = modules[n.target]
        else:
            m = modules.get(n.target) if n.op == "call_module" else None
        if not rel or n not in self.signal:
            return self._plain_step(n, k, m)
        # ---- relevance path ----
        if k in ("conv", "dense") or (k == "matmul" and self._is_const_matmul(n)):
            return self._layer_step(n)
        top = self.top is n
        o = self.opts
        if k == "batchnorm":
            if n.op == "call_module":
                bn = self._bn_fn(m)
                tail = self._bn_act_tail(m, True)
                xv = self._val(args[0])
                return lambda env: tail(bn(xv(env)))
            return self._native(n)
        if k in ("layernorm", "groupnorm", "rmsnorm"):
            return self._norm_step(n, k, m)
        if k == "act" or k == "gate":
            xv = self._val(self._data_input(n))
            is_relu = (m is not None and type(m) is nn.ReLU) or (n.op == "call_function" and n.target in (
                F.relu, torch.relu)) or (n.op == "call_method" and str(n.target).rstrip("_") == "relu")
            d = self._data_input(n)
            if d in self.fused:
                eps_d = self.fused[d]
                if is_relu:
                    return lambda env: ops.scale_act(xv(env), torch.relu, eps_d)
                make_f, _ = self._act_fn(n)
                return lambda env: ops.scale_act(xv(env), make_f(env), eps_d)
            if is_relu:
                return lambda env: torch.relu(xv(env))
            make, name = self._act_fn(n)
            lim = ACT_LIMITS.get(name.replace("_", ""), 0.0)
            if name in ("leakyrelu", "leaky_relu", "prelu"):
                lim = 1.0 if name == "prelu" else getattr(m, "negative_slope", 0.01) if m is not None else 0.01
            return lambda env: ops.identity_rule(xv(env), make(env), lim)
        if k == "mul":
            a, b = args[0], args[1]
            if self._sig(a) and self._sig(b):
                ga, gb = self.is_gate(a), self.is_gate(b)
                av, bv = self._val(a), self._val(b)
                if ga and not gb:
                    return lambda env: av(env).detach() * bv(env)
                if gb and not ga:
                    return lambda env: av(env) * bv(env).detach()
                return lambda env: ops.UniformMul.apply(av(env), bv(env))
            return self._native(n)
        if k == "matmul":
            a, b = args[0], args[1]
            ga, gb = self.is_gate(a), self.is_gate(b)
            av, bv = self._val(a), self._val(b)
            if ga and not gb:
                return lambda env: torch.matmul(av(env).detach(), bv(env))
            if gb and not ga:
                return lambda env: torch.matmul(av(env), bv(env).detach())
            return lambda env: ops.UniformMatmul.apply(av(env), bv(env))
        if k == "div":
            av, bv = self._val(args[0]), self._val(args[1])
            if n.op == "call_method" or n.target in (operator.truediv, operator.itruediv):
                return lambda env: av(env) / _detach(bv(env))
            rest = self._val(kwargs)
            return lambda env: torch.div(av(env), _detach(bv(env)), **rest(env))
        if k == "add":
            if n.op == "call_function" and getattr(n.target, "__name__", "") == "maybe_add_mask":
                av, bv = self._val(args[0]), self._val(args[1] if len(args) > 1 else kwargs.get("attn_mask"))

                def mask_fn(env: dict) -> torch.Tensor:
                    mk = bv(env)
                    s = av(env)
                    return s if mk is None else ops.scale_grad(s + mk, o.stabilizer, top)
                return mask_fn
            return self._stabilized(n, fused_ok=True)
        if k == "addcmul":
            return self._stabilized(n, fused_ok=False)
        if k == "normalize":
            b = _bind(F.normalize, args, kwargs) or {}
            xv, pv, dv, ev = (self._val(b.get(key, d)) for key, d in
                              (("input", None), ("p", 2.0), ("dim", 1), ("eps", 1e-12)))

            def normalize_fn(env: dict) -> torch.Tensor:
                x = xv(env)
                with torch.no_grad():
                    den = x.norm(pv(env), dv(env), keepdim=True).clamp_min(ev(env))
                return x / den
            return normalize_fn
        if k == "linmap":
            return self._stabilized(n, fused_ok=True)
        if k == "upsample":
            if self._upsample_mode(n) in ("nearest", "nearest-exact"):
                return self._native(n)  # a copy of each value: relevance passes through unchanged
            return self._stabilized(n, fused_ok=False)
        if k in ("max", "pass", "softmax"):
            return self._native(n)
        if k == "glu":
            b = _bind(F.glu, args, kwargs) or {}
            xv, dim = self._val(b["input"]), b.get("dim", -1)

            def glu_fn(env: dict) -> torch.Tensor:
                p, q = xv(env).chunk(2, dim)
                return p * torch.sigmoid(q).detach()
            return glu_fn
        if k == "sdpa":
            return self._sdpa_step(n)
        if k == "mha":
            return self._mha_step(n, m)
        raise Unsupported(f"{_describe(n, modules)} has no LRP rule")  # pragma: no cover - _check_rule

    def _stabilized(self, n: fx.Node, fused_ok: bool) -> Callable[[dict], Any]:
        """The node's own op with the epsilon rule on its output (a sum, an interpolation, a linear map).

        With ``fused_ok`` and the node in ``self.fused``, the activation reading it applies the factor
        instead, so the op runs plain.
        """
        nat = self._native(n)
        if fused_ok and n in self.fused:
            return nat
        eps, top = self.opts.stabilizer, self.top is n
        return lambda env: ops.scale_grad(nat(env), eps, top)

    def _inp(self) -> fx.Node:
        return next(n for n in self.nodes if n.op == "placeholder")

    def _norm_step(self, n: fx.Node, k: str, m: nn.Module | None) -> Callable[[dict], Any]:
        args, kwargs = self.args[n], self.kwargs[n]
        if m is not None:
            xv = self._val(args[0])
            if k == "layernorm":
                ln = cast(nn.LayerNorm, m)
                return lambda env: ops.LayerNormConst.apply(
                    xv(env), tuple(ln.normalized_shape), _detach(ln.weight), _detach(ln.bias), ln.eps)
            if k == "groupnorm":
                return lambda env: ops.GroupNormConst.apply(xv(env), m.num_groups, _detach(m.weight),
                                                            _detach(m.bias), m.eps)
            rms = cast("nn.RMSNorm", m)  # a string: nn.RMSNorm is missing from older torch
            return lambda env: ops.RMSNormConst.apply(xv(env), tuple(rms.normalized_shape), _detach(rms.weight), rms.eps)
        target = {"layernorm": F.layer_norm, "groupnorm": F.group_norm, "rmsnorm": getattr(F, "rms_norm", None)}[k]
        assert target is not None  # a functional rmsnorm node exists only where F.rms_norm does (FUNCTION_RULES)
        b = _bind(target, args, kwargs) or {}
        xv = self._val(b["input"])
        if k == "layernorm":
            sv, wv, bv = self._val(b["normalized_shape"]), self._val(b.get("weight")), self._val(b.get("bias"))
            ev = self._val(b.get("eps", 1e-5))
            return lambda env: ops.LayerNormConst.apply(xv(env), tuple(sv(env)), _detach(wv(env)), _detach(bv(env)),
                                                        ev(env))
        if k == "groupnorm":
            gv, wv, bv = self._val(b["num_groups"]), self._val(b.get("weight")), self._val(b.get("bias"))
            ev = self._val(b.get("eps", 1e-5))
            return lambda env: ops.GroupNormConst.apply(xv(env), gv(env), _detach(wv(env)), _detach(bv(env)), ev(env))
        sv, wv = self._val(b["normalized_shape"]), self._val(b.get("weight"))
        ev = self._val(b.get("eps"))
        return lambda env: ops.RMSNormConst.apply(xv(env), tuple(sv(env)), _detach(wv(env)), ev(env))

    def _attention(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: Any, causal: bool,
                   scale: float | None) -> torch.Tensor:
        sc = scale if scale is not None else q.shape[-1] ** -0.5
        cp = self.rules["attention"] == "cp"

        def scores(qq: torch.Tensor, kk: torch.Tensor) -> torch.Tensor:
            s = torch.matmul(qq * sc, kk.transpose(-2, -1))
            if causal:
                L, S = s.shape[-2:]
                keep = torch.ones(L, S, dtype=torch.bool, device=s.device).tril()
                s = s.masked_fill(~keep, float("-inf"))
            if mask is not None:
                s = s.masked_fill(~mask, float("-inf")) if mask.dtype == torch.bool else s + mask
            return s
        if cp:
            with torch.no_grad():
                a = scores(q.detach(), k.detach()).softmax(dim=-1)
            return torch.matmul(a, v)
        a = scores(ops.HalfGrad.apply(q), ops.HalfGrad.apply(k)).softmax(dim=-1)
        return torch.matmul(ops.HalfGrad.apply(a), ops.HalfGrad.apply(v))

    def _sdpa_step(self, n: fx.Node) -> Callable[[dict], Any]:
        b = _bind(F.scaled_dot_product_attention, self.args[n], self.kwargs[n]) or {}
        qv, kv, vv = self._val(b["query"]), self._val(b["key"]), self._val(b["value"])
        mv, cv, sv = self._val(b.get("attn_mask")), self._val(b.get("is_causal", False)), self._val(b.get("scale"))
        return lambda env: self._attention(qv(env), kv(env), vv(env), _detach(mv(env)), bool(cv(env)), sv(env))

    def _mha_step(self, n: fx.Node, m: nn.MultiheadAttention) -> Callable[[dict], Any]:
        b = _bind(type(m).forward, (m, *self.args[n]), self.kwargs[n]) or {}
        qn, kn, vn = b["query"], b["key"], b["value"]
        qv, kv, vv = self._val(qn), self._val(kn), self._val(vn)
        eps, top = self.opts.epsilon, False
        rule = self.rules["dense"]
        o = self.opts

        def lin(x: torch.Tensor, w: torch.Tensor, bb: torch.Tensor | None) -> torch.Tensor:
            if rule == "zplus":
                return ops.ZPlusLinear.apply(x, w, bb, ops.dense_fn, o.stabilizer, top)
            return ops.scale_grad(F.linear(x, w, bb), eps, top)

        def fn(env: dict) -> tuple:
            q, k, v = qv(env), kv(env), vv(env)
            if not m.batch_first:
                q, k, v = (t.transpose(0, 1) for t in (q, k, v))
            W = m.in_proj_weight.detach()
            bias = None if m.in_proj_bias is None else m.in_proj_bias.detach()
            E, H = m.embed_dim, m.num_heads
            if qn is kn and kn is vn:
                qq, kk, vv_ = lin(q, W, bias).chunk(3, dim=-1)
            else:
                bs = (None, None, None) if bias is None else bias.chunk(3)
                ws = W.chunk(3)
                qq, kk, vv_ = (lin(t, w_, b_) for t, w_, b_ in zip((q, k, v), ws, bs))
            B, N = qq.shape[0], qq.shape[1]
            heads = [t.reshape(B, t.shape[1], H, E // H).transpose(1, 2) for t in (qq, kk, vv_)]
            att = self._attention(heads[0], heads[1], heads[2], None, False, None)
            att = att.transpose(1, 2).reshape(B, N, E)
            out = lin(att, m.out_proj.weight.detach(), None if m.out_proj.bias is None else m.out_proj.bias.detach())
            if not m.batch_first:
                out = out.transpose(0, 1)
            return out, None
        return fn

    def _native(self, n: fx.Node) -> Callable[[dict], Any]:
        """The node's own op (in-place variants out of place), on the environment's values."""
        args, kwargs = self.args[n], self.kwargs[n]
        av, kv = self._val(args), self._val(kwargs)
        if n.op == "call_function":
            t = cast(Callable[..., Any], n.target)  # fx: a call_function target is callable
            if t is operator.iadd:
                t = operator.add
            elif t is operator.isub:
                t = operator.sub
            elif t is operator.imul:
                t = operator.mul
            elif t is operator.itruediv:
                t = operator.truediv
            if t in _DROPOUT_FUNCS:
                return lambda env: av(env)[0]
            if "inplace" in kwargs:
                kwargs2 = dict(kwargs, inplace=False)
                kv = self._val(kwargs2)
            elif callable(t) and getattr(t, "__module__", "") == "torch.nn.functional":
                a2, k2 = _no_inplace(t, args, kwargs)
                av, kv = self._val(a2), self._val(k2)
            return lambda env: t(*av(env), **kv(env))
        if n.op == "call_method":
            name = str(n.target)
            if name.endswith("_") and not name.endswith("__"):
                name = name[:-1]
            return lambda env: getattr(av(env)[0], name)(*av(env)[1:], **kv(env))
        if n.op == "call_module":
            m = self.modules[n.target]
            if isinstance(m, (nn.Identity, *_DROPOUT_MODULES)) or type(m).__name__ in ("DropPath", "StochasticDepth"):
                return lambda env: av(env)[0]
            fwd = type(m).forward
            return lambda env: fwd(m, *av(env), **kv(env))
        raise Unsupported(f"cannot run {_describe(n, self.modules)}")  # pragma: no cover

    def _plain_step(self, n: fx.Node, k: str | None, m: nn.Module | None) -> Callable[[dict], Any]:
        """A node off the relevance path (or constant): its plain value, eval-mode semantics."""
        if n.op == "call_module":
            if k in ("conv", "dense"):
                return self._plain_layer(n)
            if k == "batchnorm":
                assert m is not None  # a call_module node with a kind: _step passes its module
                if not self._bn_ok(m):
                    raise Unsupported(f"{_describe(n, self.modules)}: BatchNorm without running statistics")
                bn = self._bn_fn(m)
                tail = self._bn_act_tail(m, False)
                xv = self._val(self.args[n][0])
                return lambda env: tail(bn(xv(env)))
            if k in ("layernorm", "groupnorm", "rmsnorm", "mha"):
                if k == "mha":
                    raise Unsupported(f"{_describe(n, self.modules)} off the relevance path is not implemented")
                assert m is not None  # a call_module node with a kind: _step passes its module
                fwd = type(m).forward
                av = self._val(self.args[n])
                return lambda env: fwd(m, *av(env))
            if k is None:
                raise Unsupported(f"{_describe(n, self.modules)} has no LRP rule")
            if k in ("act", "gate"):
                make, _ = self._act_fn(n)
                xv = self._val(self.args[n][0])
                return lambda env: make(env)(xv(env))
        return self._native(n)


def build_plan(model: nn.Module, opts: Options) -> Plan:
    """Trace ``model`` (cached) and compile the plan for ``opts``; raises :class:`Unsupported`."""
    return Builder(model, opts).build()
