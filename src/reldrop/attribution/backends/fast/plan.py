"""Compile a ReLU ResNet into a flat list of ops for the fast LRP backend (private).

The model is traced with the shared tracer (:func:`reldrop.attribution._trace.trace_model`: the
eval-mode fx graph, cached per model; symbolic tracing never runs the model's real forward and the
model is left unchanged). Every graph node is mapped
to one of a handful of op records; anything unknown raises :class:`Unsupported`, so
``supports()`` answers False and the caller falls back to zennit. The records keep references
to the *modules* (not to tensors), so every call reads the current parameters.

Which rule each op gets mirrors the zennit composite of the ``epsilon_flat`` preset:
first Conv/Linear module executed -> Flat; every other Conv/Linear -> ε;
a BatchNorm that directly follows a Conv in the leaf order *and* in the data flow is merged
(corrected canonization, i.e. ``eps`` folded too; timm's ``BatchNormAct2d`` is merged and its
ReLU/ReLU6 fused into the op); residual sums inside torchvision/timm ``BasicBlock``/``Bottleneck``,
timm ``InvertedResidual``/``DepthwiseSeparableConv`` and torchvision ``InvertedResidual`` (which the
canonizers turn into a ``Sum`` module) -> Norm; average pools -> Norm; ReLU/ReLU6 -> pass;
flatten/identity/dropout/drop-path -> identity (eval); max pool -> gradient. Depthwise/grouped
convs and timm's ``Conv2dSame`` (TF "same" padding, applied explicitly) are convs like any other.
"""
from __future__ import annotations

import operator
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.fx as fx
import torch.nn as nn
import torch.nn.functional as F

from ...canonizers.batchnorm import merge_leaves
from ...canonizers.mobile import inverted_residual_classes
from ...canonizers.resnet import resnet_block_classes
from ...rules import Unsupported
from ..._trace import TraceError, trace_model
from ..._wrappers import unwrap_model


def _block_types() -> tuple[type, ...]:
    """Residual block classes whose sums zennit's (and our) canonizers turn into Sum."""
    return (*resnet_block_classes(), *inverted_residual_classes())


def _is_conv_same(m: nn.Module) -> bool:
    return type(m).__name__ == "Conv2dSame" and type(m).__module__.startswith("timm.")


def _is_bn_act(m: nn.Module) -> bool:
    return type(m).__name__ == "BatchNormAct2d" and type(m).__module__.startswith("timm.")


def _is_drop_path(m: nn.Module) -> bool:
    return type(m).__name__ == "DropPath" and type(m).__module__.startswith("timm.")


def _is_plan_leaf(m: nn.Module) -> bool:
    """A module the plan reads as one layer: a torch.nn module or timm's Conv2dSame / BatchNormAct2d /
    DropPath. The tracer keeps more timm classes whole (``StdConv2dSame``, ``MaxPool2dSame``, ...):
    subclasses of ``nn.Conv2d`` / ``nn.MaxPool2d`` whose extra maths this plan has no rule for."""
    torch_nn = type(m).__module__.startswith(("torch.nn.", "torch.ao.nn."))
    return torch_nn or _is_conv_same(m) or _is_bn_act(m) or _is_drop_path(m)


@dataclass
class Op:
    """One step of the plan. ``ins``/``out`` are value slots; ``kind`` selects the maths."""

    kind: str  # conv | linear | add | relu | relu6 | maxpool | gap | avgpool | flatten
    ins: tuple[int, ...]
    out: int
    module: Any = None  # Conv2d / Linear / MaxPool2d / AdaptiveAvgPool2d
    bn: Any = None  # merged BatchNorm2d or None
    rule: str = "eps"  # eps | flat (conv/linear)
    act: Any = False  # activation fused into this op's output: False | "relu" | "relu6" (True == "relu")
    same_pad: bool = False  # timm Conv2dSame: TF "same" zero padding computed from the input size
    start_dim: int = 1  # flatten
    free_after: tuple[int, ...] = field(default_factory=tuple)  # slots dead after this op


@dataclass
class Plan:
    ops: list[Op]
    n_slots: int
    input_slot: int
    output_slot: int
    first_conv: nn.Module
    num_classes: int | None = None  # out_features of the output Linear, if the output is one


def _act_kind(m: nn.Module) -> str | None:
    """"relu" / "relu6" for a plain ReLU / ReLU6 module, else None."""
    if type(m) is nn.ReLU:
        return "relu"
    if type(m) is nn.ReLU6:
        return "relu6"
    return None


def _bn_act_kind(bn: nn.Module) -> str | bool:
    """The activation of a timm BatchNormAct2d as an op act (False: identity); Unsupported otherwise."""
    drop, act = getattr(bn, "drop", None), getattr(bn, "act", None)
    if drop is not None and not isinstance(drop, (nn.Identity, nn.Dropout)):
        raise Unsupported(f"BatchNormAct2d with drop {type(drop).__name__}")
    if act is None or isinstance(act, nn.Identity):
        return False
    kind = _act_kind(act)
    if kind is None:
        raise Unsupported(f"BatchNormAct2d with activation {type(act).__name__}")
    return kind


def _check_conv(m: nn.Conv2d) -> None:
    if m.padding_mode != "zeros" or isinstance(m.padding, str):
        raise Unsupported(f"conv padding {m.padding!r}/{m.padding_mode!r}")


def _check_bn(bn: nn.BatchNorm2d) -> None:
    if not bn.track_running_stats or bn.running_mean is None or bn.running_var is None:
        raise Unsupported("BatchNorm without running statistics")


def build_plan(model: nn.Module) -> Plan:
    """Trace ``model`` and compile the op list (raises :class:`Unsupported`)."""
    model = unwrap_model(model)
    try:
        graph = trace_model(model).graph
    except TraceError as exc:  # data-dependent control flow etc.; the message names fx's reason
        raise Unsupported(str(exc)) from exc
    modules = dict(model.named_modules())
    blocks = _block_types()

    lin_types = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d,
                 nn.ConvTranspose3d, nn.Linear)
    linear_modules = [m for m in model.modules() if isinstance(m, lin_types)]
    # "first layer" = the first conv/linear module *executed* (graph order = execution order),
    # the same definition as the zennit backend's forward trace
    first = next((modules[n.target] for n in graph.nodes
                  if n.op == "call_module" and isinstance(modules[n.target], lin_types)), None)
    if first is None:
        raise Unsupported("no conv/linear layer")
    leaves = list(merge_leaves(model))  # a BN with children (BatchNormAct2d) is one leaf, as in the canonizer
    leaf_pos = {id(m): i for i, m in enumerate(leaves)}

    nodes = list(graph.nodes)
    users = {n: list(n.users) for n in nodes}
    slot: dict[fx.Node, int] = {}
    ops: list[Op] = []
    used_modules: set[int] = set()
    input_slot = -1
    output_slot = -1
    absorbed: set[fx.Node] = set()

    n_slots = 0

    def fresh() -> int:
        nonlocal n_slots
        n_slots += 1
        return n_slots - 1

    def arg_slot(a: Any) -> int:
        if not isinstance(a, fx.Node) or a not in slot:
            raise Unsupported(f"unexpected argument {a!r}")
        return slot[a]

    def module_of(n: fx.Node) -> nn.Module:
        return modules[n.target]

    def sole_user(n: fx.Node) -> fx.Node | None:
        u = users[n]
        return u[0] if len(u) == 1 else None

    def act_of(n: fx.Node) -> str | None:
        if n.op == "call_module":
            return _act_kind(modules[n.target])
        if n.op == "call_function":
            if n.target in (F.relu, torch.relu):
                return "relu"
            if n.target is F.relu6:
                return "relu6"
        return None

    def try_fuse_relu(n: fx.Node) -> tuple[Any, fx.Node]:
        """If n's only user is a ReLU/ReLU6, absorb it; return (act kind or False, node producing the result)."""
        u = sole_user(n)
        if u is not None and len(u.args) >= 1 and u.args[0] is n:
            kind = act_of(u)
            if kind is not None:
                absorbed.add(u)
                return kind, u
        return False, n

    for n in nodes:
        if n in absorbed:
            continue
        if n.op == "placeholder":
            if input_slot >= 0:
                raise Unsupported("more than one input")
            input_slot = fresh()
            slot[n] = input_slot
            continue
        if n.op == "output":
            a = n.args[0]
            output_slot = arg_slot(a)
            continue
        if n.op == "get_attr":
            raise Unsupported("get_attr node")

        if n.op == "call_module":
            m = module_of(n)
            if not _is_plan_leaf(m):
                raise Unsupported(f"module {type(m).__name__}")
            if isinstance(m, nn.Conv2d) or isinstance(m, nn.Linear):
                if id(m) in used_modules:
                    raise Unsupported("a conv/linear module is called twice")
                used_modules.add(id(m))
                if isinstance(m, nn.Conv2d):
                    _check_conv(m)
                rule = "flat" if m is first else "eps"
                if rule == "flat" and not isinstance(m, nn.Conv2d):
                    raise Unsupported("Flat first layer on a Linear")
                if rule == "flat" and (len(n.args) != 1 or n.args[0].op != "placeholder" or m.groups != 1):
                    raise Unsupported("first layer does not read the input directly")
                src = arg_slot(n.args[0])
                bn = None
                cur = n
                u = sole_user(n)
                fused: Any = False
                if isinstance(m, nn.Conv2d) and u is not None and u.op == "call_module" \
                        and isinstance(modules[u.target], nn.BatchNorm2d):
                    cand = modules[u.target]
                    # zennit's SequentialMergeBatchNorm merges by leaf order: require both orders
                    if leaf_pos.get(id(cand), -9) == leaf_pos[id(m)] + 1:
                        _check_bn(cand)
                        bn = cand
                        absorbed.add(u)
                        cur = u
                        if _is_bn_act(cand):  # timm BN + activation in one module
                            fused = _bn_act_kind(cand)
                if not fused:
                    fused, cur = try_fuse_relu(cur)
                out = fresh()
                slot[cur] = out
                ops.append(Op("conv" if isinstance(m, nn.Conv2d) else "linear", (src,), out,
                              module=m, bn=bn, rule=rule, act=fused, same_pad=_is_conv_same(m)))
                continue
            if isinstance(m, nn.BatchNorm2d):
                raise Unsupported("BatchNorm not directly after a conv")
            kind = _act_kind(m)
            if kind is not None:
                out = fresh()
                slot[n] = out
                ops.append(Op(kind, (arg_slot(n.args[0]),), out))
                continue
            if _is_drop_path(m):  # identity in eval mode, where attribution runs
                slot[n] = arg_slot(n.args[0])
                continue
            if isinstance(m, nn.MaxPool2d):
                if m.return_indices:
                    raise Unsupported("MaxPool2d(return_indices=True)")
                out = fresh()
                slot[n] = out
                ops.append(Op("maxpool", (arg_slot(n.args[0]),), out, module=m))
                continue
            if isinstance(m, nn.AdaptiveAvgPool2d):
                out = fresh()
                slot[n] = out
                if m.output_size in (1, (1, 1)):
                    ops.append(Op("gap", (arg_slot(n.args[0]),), out))
                else:  # e.g. VGG's 7x7: Norm rule through the pool's own backward
                    ops.append(Op("avgpool", (arg_slot(n.args[0]),), out, module=m))
                continue
            if isinstance(m, nn.Flatten):
                if m.end_dim != -1:
                    raise Unsupported("Flatten end_dim != -1")
                out = fresh()
                slot[n] = out
                ops.append(Op("flatten", (arg_slot(n.args[0]),), out, start_dim=m.start_dim))
                continue
            if isinstance(m, (nn.Identity, nn.Dropout)):
                slot[n] = arg_slot(n.args[0])
                continue
            raise Unsupported(f"module {type(m).__name__}")

        if n.op == "call_function":
            t = n.target
            if t in (operator.add, operator.iadd, torch.add):
                if len(n.args) != 2 or n.kwargs or not all(isinstance(a, fx.Node) for a in n.args):
                    raise Unsupported("add with non-tensor operands")
                stack = n.meta.get("nn_module_stack") or {}
                owner = list(stack.values())[-1][1] if stack else None
                if owner is None or not (isinstance(owner, type) and issubclass(owner, blocks)):
                    raise Unsupported("residual sum outside a known ResNet block")
                a, b = (arg_slot(x) for x in n.args)
                fused, cur = try_fuse_relu(n)
                out = fresh()
                slot[cur] = out
                ops.append(Op("add", (a, b), out, act=fused))
                continue
            if t in (F.relu, torch.relu, F.relu6):
                out = fresh()
                slot[n] = out
                ops.append(Op("relu" if t is not F.relu6 else "relu6", (arg_slot(n.args[0]),), out))
                continue
            if t is torch.flatten:
                start = n.args[1] if len(n.args) > 1 else n.kwargs.get("start_dim", 0)
                end = n.args[2] if len(n.args) > 2 else n.kwargs.get("end_dim", -1)
                if end != -1 or start < 1:
                    raise Unsupported("torch.flatten over the batch dimension")
                out = fresh()
                slot[n] = out
                ops.append(Op("flatten", (arg_slot(n.args[0]),), out, start_dim=start))
                continue
            if t is F.adaptive_avg_pool2d:
                size = n.args[1] if len(n.args) > 1 else n.kwargs.get("output_size")
                if size not in (1, (1, 1)):
                    raise Unsupported("adaptive_avg_pool2d with output size != 1")
                out = fresh()
                slot[n] = out
                ops.append(Op("gap", (arg_slot(n.args[0]),), out))
                continue
            if t is F.dropout:
                slot[n] = arg_slot(n.args[0])
                continue
            raise Unsupported(f"function {getattr(t, '__name__', t)}")
        raise Unsupported(f"node {n.op} {n.target}")

    if input_slot < 0 or output_slot < 0:
        raise Unsupported("no input/output")
    if not ops or ops[0].rule != "flat" or ops[0].kind != "conv":
        raise Unsupported("the first op is not the Flat first conv")
    if len(used_modules) != len(linear_modules):
        raise Unsupported("conv/linear modules that the forward does not use")

    # liveness: free every forward value after its last use
    last_use: dict[int, int] = {}
    for i, op in enumerate(ops):
        for s in op.ins:
            last_use[s] = i
    for i, op in enumerate(ops):
        op.free_after = tuple(s for s in set(op.ins) if last_use.get(s) == i)
    last = next((op for op in ops if op.out == output_slot), None)
    num_classes = last.module.out_features if last is not None and last.kind == "linear" else None
    return Plan(ops=ops, n_slots=n_slots, input_slot=input_slot, output_slot=output_slot, first_conv=first,
                num_classes=num_classes)
