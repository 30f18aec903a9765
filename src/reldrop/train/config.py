"""Experiment configuration: nested dicts from YAML, defaults, presets and command-line overrides.

A config is a plain nested ``dict`` (YAML-serializable). :data:`DEFAULTS` is the embedded
``digits`` preset (identical to ``reldrop/configs/digits.yaml``); every YAML file is merged onto it, so a
file only states what differs. Sections::

    name, seed, device, out
    data:    name, root, subset (class-balanced N train samples, fixed seed 0), test_subset (same for
             the test split, evaluated every epoch), kwargs (passed to the dataset builder), num_workers
    model:   name, kwargs (passed to reldrop.models.build), init, init_strict, reinit_head
    optim:   name (sgd|adamw|adam), lr, momentum, weight_decay, nesterov
    sched:   name (cosine|step|none), min_lr, warmup_epochs, step_size, gamma
    train:   epochs, batch_size, eval_batch_size, amp, threads, grad_clip, eval_train_samples, channels_last, ...
    aug:     name (none|re|reldrop|random|mixup|cutmix), p, scale, ratio, value, border, count, max_count, method,
             epsilon, backend, alpha, beta, start_epoch, stop_epoch, p_schedule, kwargs
             (modality-independent; for points "random" = RelDrop α=1; schedule: reldrop.train.aug_schedule)
    compare: seeds, variants (list of {name, <partial config>}), test_sets ({name: data.kwargs overrides}:
             extra test sets every final model is evaluated on, e.g. the decoy test modes)

Overrides: ``key.sub=value`` strings (values parsed as YAML: ``optim.lr=0.05``,
``aug.scale=[0.02,0.3]``, ``data.subset=null``); unknown top-level sections are an error,
unknown keys inside ``kwargs`` dicts are allowed.
"""
from __future__ import annotations

import copy
import math
import os
import re
from pathlib import Path
from typing import Any, Iterable, Mapping

import yaml

from ..runs import RunConfigMismatchError, config_diff, config_hash, saved_config
from ..runs.archive import FINISHED
from .aug_schedule import validate_aug_schedule

__all__ = ["DEFAULTS", "load_config", "apply_overrides", "set_key", "get_key", "deep_merge", "validate",
           "dump_config", "preset_path", "preset_names", "flat_keys", "CONFIG_DIRS", "PACKAGE_CONFIG_DIR",
           "check_run_config"]

DEFAULTS: dict[str, Any] = {
    "name": "digits",
    "seed": 0,
    "device": "auto",  # auto | cpu | cuda | cuda:N
    "out": None,  # run directory; default runs/<name>-<aug>-s<seed>-<timestamp>
    "data": {"name": "digits", "root": None, "subset": None, "test_subset": None, "num_workers": 0, "kwargs": {}},
    "model": {"name": "small_cnn", "kwargs": {}, "init": None, "init_strict": True, "reinit_head": False},
    "optim": {"name": "sgd", "lr": 0.01, "momentum": 0.9, "weight_decay": 1e-4, "nesterov": False},
    "sched": {"name": "cosine", "min_lr": 1e-6, "warmup_epochs": 0, "step_size": 20, "gamma": 0.7},
    "train": {
        "epochs": 15,
        "batch_size": 64,
        "eval_batch_size": 512,
        "amp": "auto",  # auto (bf16 on CUDA if supported, else fp16) | bf16 | fp16 | none
        "threads": 1,  # torch.set_num_threads on CPU (null: leave as is); 1 is fastest on a shared machine
        "grad_clip": None,
        "eval_train_samples": 0,  # >0: also evaluate clean (eval-mode) accuracy on that many train images
        "drop_last": False,
        "progress": "auto",  # auto (tqdm when stderr is a TTY) | true | false
        "time_aug_sync": True,  # synchronize CUDA around the augmentation call to time it exactly
        "tensorboard": False,
        "save_best": True,
        "channels_last": False,  # 4-D weights in NHWC memory format (faster CPU convolutions, same maths)
        "max_bad_steps": 0,  # steps with a non-finite loss skipped per epoch before the run stops (0: stop at once)
    },
    "aug": {
        "name": "none",  # none | re | reldrop | random | mixup | cutmix
        "p": 0.5,
        "scale": [0.02, 0.4],
        "ratio": [0.3, 3.3333333333333335],
        "value": 0.0,  # float | per-channel list | "random" (per pixel, timm pixel) | "rand" (per block, timm rand)
        "border": "clip",
        "count": 1,  # blocks per image (images; timm --recount)
        "max_count": None,  # null, or draw each image's count in [count, max_count]
        "method": "epsilon_flat",
        "epsilon": 1e-3,
        "backend": "auto",
        "alpha": 0.5,
        "beta": 0.15,
        "start_epoch": 0,  # augmentation off for epochs < start_epoch
        "stop_epoch": None,  # augmentation off for epochs >= stop_epoch (timm --mixup-off-epoch); null = never
        "p_schedule": None,  # null, or {start, end, epochs}: p ramps linearly from start_epoch on
        "kwargs": {},  # extra keyword arguments for reldrop.RelDrop
    },
    "compare": {
        "seeds": [0, 1, 2],
        "variants": [
            {"name": "baseline", "aug": {"name": "none"}},
            {"name": "RE", "aug": {"name": "re"}},
            {"name": "RelDrop", "aug": {"name": "reldrop"}},
        ],
        "test_sets": {},
    },
}

_FREE_DICTS = ("data.kwargs", "model.kwargs", "aug.kwargs", "compare.test_sets")

#: a config is a few hundred nodes; more (after expanding YAML aliases) is an alias bomb or not a config
MAX_YAML_NODES = 100_000
MAX_YAML_BYTES = 1_000_000


class _ConfigLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that also reads ``1e-3`` / ``1e6`` as floats (YAML 1.1 wants ``1.0e-3``)."""


_ConfigLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
                    |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
                    |\.[0-9_]+(?:[eE][-+]?[0-9]+)?
                    |[-+]?[0-9][0-9_]*(?::[0-5]?[0-9])+\.[0-9_]*
                    |[-+]?\.(?:inf|Inf|INF)
                    |\.(?:nan|NaN|NAN))$""", re.X),
    list("-+0123456789."))


def _expanded_nodes(node: Any, memo: dict[int, int]) -> int:
    """Nodes of ``node`` with every alias expanded (memoized per node: an alias bomb is counted, not built)."""
    key = id(node)
    if key in memo:
        return memo[key]
    memo[key] = 1  # a recursive alias counts once
    n = 1
    if isinstance(node, yaml.SequenceNode):
        n += sum(_expanded_nodes(v, memo) for v in node.value)
    elif isinstance(node, yaml.MappingNode):
        n += sum(_expanded_nodes(k, memo) + _expanded_nodes(v, memo) for k, v in node.value)
    memo[key] = n
    return n


def yaml_load(text: str, what: str = "config") -> Any:
    """``yaml.safe_load`` for configs: scientific notation (``1e-3``) is a float, and a document that
    expands (through aliases) to more than :data:`MAX_YAML_NODES` nodes or is larger than
    :data:`MAX_YAML_BYTES` is refused with a ValueError (a "billion laughs" alias bomb would exhaust memory)."""
    if len(text) > MAX_YAML_BYTES:
        raise ValueError(f"{what} is {len(text)} bytes; a config is at most {MAX_YAML_BYTES} bytes")
    loader = _ConfigLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        size = _expanded_nodes(node, {})
        if size > MAX_YAML_NODES:
            raise ValueError(f"{what} expands to {size} YAML nodes through its aliases (&anchor/*alias); a config "
                             f"has at most {MAX_YAML_NODES} (an alias bomb?)")
        return loader.construct_document(node)
    finally:
        loader.dispose()

#: the presets shipped inside the package (``src/reldrop/configs``; a clone's top-level ``configs`` links to it)
PACKAGE_CONFIG_DIR: Path = Path(__file__).resolve().parents[1] / "configs"

#: where preset names are looked up (first hit wins): $RELDROP_CONFIG_DIR, ./configs of the working
#: directory (user presets, or overrides of shipped ones), then the package's own presets
CONFIG_DIRS: list[Path] = [Path("configs"), PACKAGE_CONFIG_DIR]


def deep_merge(base: Mapping[str, Any], update: Mapping[str, Any]) -> dict[str, Any]:
    """A new dict: ``base`` with ``update`` merged in recursively (dicts merge, everything else replaces)."""
    out = copy.deepcopy(dict(base))
    for k, v in update.items():
        if isinstance(v, Mapping) and isinstance(out.get(k), Mapping):
            out[k] = deep_merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def _dirs() -> list[Path]:
    env = os.environ.get("RELDROP_CONFIG_DIR")
    return ([Path(env)] if env else []) + CONFIG_DIRS


def preset_names() -> list[str]:
    """Names of the YAML presets found in the config directories (``decoy_sweep/pilot`` for one in a subfolder)."""
    found = {"digits"}
    for d in _dirs():
        if d.is_dir():
            found.update(p.relative_to(d).with_suffix("").as_posix() for p in d.rglob("*.yaml"))
    return sorted(found)


def preset_path(name: str) -> Path | None:
    """The YAML file of preset ``name`` (None for the embedded ``digits`` default when no file exists).

    ``name`` may name a subfolder (``decoy_sweep/pilot``: ``decoy_sweep/pilot.yaml`` of a config directory)."""
    for d in _dirs():
        p = d / f"{name}.yaml"
        if p.is_file():
            return p
    if name == "digits":
        return None
    raise FileNotFoundError(f"unknown preset {name!r}: no {name}.yaml in {', '.join(str(d) for d in _dirs())}; "
                            f"known presets: {', '.join(preset_names())}")


def _check_keys(update: Mapping[str, Any], ref: Mapping[str, Any], prefix: str = "") -> None:
    for k, v in update.items():
        key = f"{prefix}{k}"
        if k not in ref:
            raise ValueError(f"unknown config key {key!r}; known keys here: {', '.join(sorted(ref))}")
        if key in _FREE_DICTS or key == "compare.variants":
            continue
        if isinstance(v, Mapping) and isinstance(ref[k], Mapping):
            _check_keys(v, ref[k], key + ".")


def load_config(source: str | os.PathLike[str] | Mapping[str, Any] | None = None,
                overrides: Iterable[str] = ()) -> dict[str, Any]:
    """Resolve a config: DEFAULTS <- (YAML file | preset name | dict) <- ``overrides`` (``"a.b=value"``)."""
    cfg = copy.deepcopy(DEFAULTS)
    if isinstance(source, Mapping):
        update: Mapping[str, Any] = source
    elif source is not None:
        s = str(source)
        path = Path(s) if (s.endswith((".yaml", ".yml")) or Path(s).is_file()) else preset_path(s)
        if path is None:
            update = {}
        else:
            if not path.is_file():
                raise FileNotFoundError(f"config file not found: {path}")
            try:
                update = yaml_load(path.read_text(), f"config file {path}") or {}
            except yaml.YAMLError as err:
                raise ValueError(f"config file {path} is not valid YAML: {err}") from err
            if not isinstance(update, Mapping):
                raise ValueError(f"config file {path} must hold a mapping at top level")
    else:
        update = {}
    _check_keys(update, cfg)
    cfg = deep_merge(cfg, update)
    cfg = apply_overrides(cfg, overrides)
    validate(cfg)
    return cfg


def get_key(cfg: Mapping[str, Any], key: str) -> Any:
    """``cfg["a"]["b"]`` for ``key = "a.b"``."""
    cur: Any = cfg
    for part in key.split("."):
        if not isinstance(cur, Mapping) or part not in cur:
            raise KeyError(f"config key {key!r} not found")
        cur = cur[part]
    return cur


def set_key(cfg: dict[str, Any], key: str, value: Any) -> None:
    """Set ``key = "a.b.c"`` in place; unknown keys are an error except inside ``*.kwargs`` dicts."""
    parts = key.split(".")
    cur: Any = cfg
    for i, part in enumerate(parts[:-1]):
        prefix = ".".join(parts[: i + 1])
        if part not in cur:
            if any(prefix.startswith(f) for f in _FREE_DICTS):
                cur[part] = {}
            else:
                raise ValueError(f"unknown config key {key!r} (no section {prefix!r})")
        cur = cur[part]
        if not isinstance(cur, dict):
            raise ValueError(f"config key {prefix!r} is not a section, cannot set {key!r}")
    last = parts[-1]
    parent = ".".join(parts[:-1])
    if last not in cur and parent not in _FREE_DICTS and not any(parent.startswith(f + ".") for f in _FREE_DICTS):
        known = ", ".join(sorted(cur)) if isinstance(cur, dict) else ""
        raise ValueError(f"unknown config key {key!r}; known keys in {parent or 'the top level'}: {known}")
    cur[last] = value


def apply_overrides(cfg: Mapping[str, Any], overrides: Iterable[str]) -> dict[str, Any]:
    """A new config with ``"a.b=value"`` overrides applied (values parsed as YAML scalars/lists)."""
    out = copy.deepcopy(dict(cfg))
    for item in overrides:
        if "=" not in item:
            raise ValueError(f"override {item!r} must have the form key.sub=value (e.g. optim.lr=0.05)")
        key, raw = item.split("=", 1)
        key = key.strip().lstrip("-")
        try:
            value = yaml_load(raw, f"override {item!r}") if raw.strip() != "" else None
        except yaml.YAMLError as err:
            raise ValueError(f"override {item!r}: value is not valid YAML ({err})") from err
        set_key(out, key, value)
    return out


def flat_keys(cfg: Mapping[str, Any] | None = None, prefix: str = "") -> list[str]:
    """Dotted names of all leaf keys (sections listed in ``_FREE_DICTS`` count as leaves)."""
    cfg = DEFAULTS if cfg is None else cfg
    keys = []
    for k, v in cfg.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping) and key not in _FREE_DICTS:
            keys.extend(flat_keys(v, key + "."))
        else:
            keys.append(key)
    return keys


def _pair(cfg: Mapping[str, Any], key: str) -> None:
    v = get_key(cfg, key)
    if not (isinstance(v, (list, tuple)) and len(v) == 2 and all(isinstance(t, (int, float)) for t in v)):
        raise ValueError(f"config {key} must be a pair [low, high] of numbers, got {v!r}")
    if v[0] > v[1]:
        raise ValueError(f"config {key} must satisfy low <= high, got {v!r}")


def validate(cfg: Mapping[str, Any]) -> None:
    """Raise ``ValueError`` naming the key for values of the wrong form."""
    def pos_int(key: str, allow_none: bool = False, allow_zero: bool = False) -> None:
        v = get_key(cfg, key)
        if v is None and allow_none:
            return
        if isinstance(v, bool) or not isinstance(v, int) or v < (0 if allow_zero else 1):
            raise ValueError(f"config {key} must be a {'non-negative' if allow_zero else 'positive'} int, got {v!r}")

    def number(key: str, lo: float | None = None, hi: float | None = None) -> None:
        v = get_key(cfg, key)
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise ValueError(f"config {key} must be a number, got {v!r}")
        if not math.isfinite(v):
            raise ValueError(f"config {key} must be a finite number, got {v!r}")
        if (lo is not None and v < lo) or (hi is not None and v > hi):
            raise ValueError(f"config {key} must be in [{lo}, {hi}], got {v!r}")

    def choice(key: str, options: tuple[str, ...]) -> None:
        v = get_key(cfg, key)
        if v not in options:
            raise ValueError(f"config {key} must be one of {', '.join(options)}; got {v!r}")

    pos_int("seed", allow_zero=True)
    pos_int("train.epochs")
    pos_int("train.batch_size")
    pos_int("train.eval_batch_size")
    pos_int("data.subset", allow_none=True)
    pos_int("data.test_subset", allow_none=True)
    pos_int("data.num_workers", allow_zero=True)
    pos_int("train.eval_train_samples", allow_zero=True)
    pos_int("aug.start_epoch", allow_zero=True)
    validate_aug_schedule(cfg["aug"])  # count, max_count, stop_epoch, p_schedule (absent in old configs: defaults)
    number("optim.lr", 0.0)
    number("optim.weight_decay", 0.0)
    number("optim.momentum", 0.0, 1.0)
    number("sched.min_lr", 0.0)
    pos_int("sched.warmup_epochs", allow_zero=True)
    pos_int("sched.step_size")
    number("sched.gamma", 0.0)
    pos_int("train.threads", allow_none=True)
    if "max_bad_steps" in cfg["train"]:  # absent in configs saved before it existed
        pos_int("train.max_bad_steps", allow_zero=True)
    if get_key(cfg, "train.grad_clip") is not None:
        number("train.grad_clip", 0.0)
    if get_key(cfg, "sched.name") == "cosine" and get_key(cfg, "sched.min_lr") > get_key(cfg, "optim.lr"):
        raise ValueError(f"config sched.min_lr ({get_key(cfg, 'sched.min_lr')!r}) must not exceed optim.lr "
                         f"({get_key(cfg, 'optim.lr')!r}): the cosine schedule would raise the learning rate")
    name = get_key(cfg, "name")
    if not isinstance(name, str) or not name or name in (".", "..") or any(c in name for c in "/\\\0"):
        raise ValueError(f"config name must be a plain name (it names the run directory under runs/), got {name!r}")
    device = get_key(cfg, "device")
    if not isinstance(device, str) or not re.fullmatch(r"auto|cpu|cuda(:\d+)?|mps", device):
        raise ValueError(f"config device must be auto, cpu, cuda, cuda:N or mps, got {device!r}")
    number("aug.p", 0.0, 1.0)
    number("aug.alpha", 0.0, 1.0)
    number("aug.beta", 0.0, 1.0)
    number("aug.epsilon", 0.0)
    _pair(cfg, "aug.scale")
    _pair(cfg, "aug.ratio")
    choice("aug.name", ("none", "re", "reldrop", "random", "mixup", "cutmix"))
    choice("optim.name", ("sgd", "adamw", "adam"))
    choice("sched.name", ("cosine", "step", "none"))
    choice("train.amp", ("auto", "bf16", "fp16", "none"))
    if not isinstance(get_key(cfg, "train.channels_last"), bool):
        raise ValueError(f"config train.channels_last must be true or false, got {get_key(cfg, 'train.channels_last')!r}")
    for key in ("data.name", "model.name"):
        if not isinstance(get_key(cfg, key), str):
            raise ValueError(f"config {key} must be a name (string), got {get_key(cfg, key)!r}")
    seeds = get_key(cfg, "compare.seeds")
    if not (isinstance(seeds, list) and seeds and all(isinstance(s, int) and not isinstance(s, bool) for s in seeds)):
        raise ValueError(f"config compare.seeds must be a non-empty list of ints, got {seeds!r}")
    variants = get_key(cfg, "compare.variants")
    if not (isinstance(variants, list) and variants):
        raise ValueError(f"config compare.variants must be a non-empty list of {{name: ..., <overrides>}}, got {variants!r}")
    for v in variants:
        if not (isinstance(v, Mapping) and isinstance(v.get("name"), str)):
            raise ValueError(f"each compare.variants entry must be a mapping with a 'name', got {v!r}")
    from .test_sets import check_test_sets

    check_test_sets(cfg["compare"].get("test_sets"))


def dump_config(cfg: Mapping[str, Any], path: str | os.PathLike[str]) -> None:
    """Write ``cfg`` as YAML (key order kept)."""
    from reldrop.runs import atomic_write_text

    atomic_write_text(path, yaml.safe_dump(dict(cfg), sort_keys=False))


def check_run_config(run_dir: str | os.PathLike[str], cfg: Mapping[str, Any]) -> None:
    """Raise :class:`RunConfigMismatchError` naming ``run_dir`` and the differing keys when the run in
    ``run_dir`` (one with a ``last.pt``, or an archived one with ``finished.json``) was trained with a config whose :func:`config_hash` differs
    from ``cfg``'s. A directory with neither holds no reusable run and passes. Keys added to
    the config after that run was trained (absent from its saved config) count as their current
    defaults, which keep the old behaviour (e.g. ``aug.count: 1``)."""
    run_dir = Path(run_dir)
    if not ((run_dir / "last.pt").is_file() or (run_dir / FINISHED).is_file()):
        return
    old = saved_config(run_dir)
    if old is None:
        return
    old = deep_merge(DEFAULTS, old)
    if config_hash(old) == config_hash(cfg):
        return
    diff = config_diff(old, cfg)
    shown = "; ".join(f"{k}: {a!r} -> {b!r}" for k, a, b in ((k, *v) for k, v in list(diff.items())[:12]))
    more = f" (and {len(diff) - 12} more)" if len(diff) > 12 else ""
    raise RunConfigMismatchError(
        f"{run_dir} holds a run trained with another config ({len(diff)} key(s) differ: {shown}{more}); "
        "reusing or resuming it would mix two configs. Use another --out, or move that directory away to retrain it.")
