"""CIFAR-10 / CIFAR-100 from the python-pickle layout or an ImageFolder layout, held in memory.

Looked up under the data root (``data.root`` / ``--data-root`` / ``$RELDROP_DATA_DIR``), first match wins:

* pickle: ``<root>/<path>/cifar-10-batches-py/`` (``data_batch_1..5``, ``test_batch``, ``batches.meta``),
  ``<root>/cifar-10-batches-py/`` or ``<root>/<path>/`` holding those files; CIFAR-100:
  ``cifar-100-python/`` (``train``, ``test``, ``meta``; fine labels);
* ImageFolder: ``<root>/<path>/{train,test}/<class>/*.jpg|png`` (decoded once, cached; see
  :func:`reldrop.data.imagefolder.load_imagefolder_tensor`).

``path`` defaults to ``cifar10`` / ``cifar100``. Train-time augmentation: RandomCrop 32 pad 4 + HFlip,
batched on tensors; then per-channel normalization (so fill 0 = the mean).
"""
from __future__ import annotations

import pickle
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .imagefolder import check_same_classes, load_imagefolder_tensor
from .registry import DatasetInfo, register_dataset, reject_unknown_kwargs
from .tensor_dataset import TensorImageDataset, class_balanced_subset
from .transforms import (CIFAR100_MEAN, CIFAR100_STD, CIFAR10_MEAN, CIFAR10_STD, BatchCompose, Normalize,
                         RandomCropFlip, Resize)

__all__ = ["load_cifar_pickle", "find_cifar", "load_cifar_split", "build_cifar"]

_PICKLE: dict[int, dict[str, Any]] = {
    10: {"dir": "cifar-10-batches-py", "train": [f"data_batch_{i}" for i in range(1, 6)], "test": ["test_batch"],
         "meta": "batches.meta", "names": b"label_names", "labels": b"labels"},
    100: {"dir": "cifar-100-python", "train": ["train"], "test": ["test"], "meta": "meta",
          "names": b"fine_label_names", "labels": b"fine_labels"},
}


def _allowed_globals() -> dict[tuple[str, str], Any]:
    """The only globals a CIFAR pickle may name: numpy's array/dtype reconstructors (both numpy 1 and
    numpy 2 module spellings, protocols 2-5) and ``_codecs.encode`` (bytes in protocol-2 pickles)."""
    import codecs

    core = getattr(np, "_core", None) or np.core
    reconstruct, frombuffer = core.multiarray._reconstruct, getattr(core.numeric, "_frombuffer", None)
    out: dict[tuple[str, str], Any] = {("_codecs", "encode"): codecs.encode}
    for mod in ("numpy.core", "numpy._core"):
        out[(f"{mod}.multiarray", "_reconstruct")] = reconstruct
        if frombuffer is not None:
            out[(f"{mod}.numeric", "_frombuffer")] = frombuffer
    out[("numpy", "ndarray")] = np.ndarray
    out[("numpy", "dtype")] = np.dtype
    return out


class _RestrictedUnpickler(pickle.Unpickler):
    """Unpickles builtin containers, numbers, strings/bytes and numpy arrays only: any other global
    (``os.system``, ``builtins.eval``, a class with ``__reduce__``) is refused before it is called."""

    def find_class(self, module: str, name: str) -> Any:
        obj = _allowed_globals().get((module, name))
        if obj is None:
            raise pickle.UnpicklingError(
                f"global '{module}.{name}' is not allowed in a CIFAR file (only numpy arrays and builtin "
                "containers; a file naming other code is refused, not run)")
        return obj


def _unpickle(path: Path) -> dict:
    if not path.is_file():
        raise FileNotFoundError(f"CIFAR file not found: {path}")
    try:
        with open(path, "rb") as f:
            obj = _RestrictedUnpickler(f, encoding="bytes").load()
    except Exception as err:  # truncated / not a pickle / refused global
        raise ValueError(f"corrupt or unsafe CIFAR pickle file: {path} ({type(err).__name__}: {err})") from err
    if not isinstance(obj, dict):
        raise ValueError(f"corrupt CIFAR pickle file: {path} (expected a dict, got {type(obj).__name__})")
    return obj


def load_cifar_pickle(folder: str | Path, split: str, num_classes: int = 10
                      ) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """``uint8`` images ``(N, 3, 32, 32)``, labels ``(N,)`` and class names from a pickle folder."""
    spec = _PICKLE[num_classes]
    folder = Path(folder)
    meta = _unpickle(folder / spec["meta"])
    names = [n.decode() if isinstance(n, bytes) else str(n) for n in meta[spec["names"]]]
    xs, ys = [], []
    for fname in spec[split]:
        path = folder / fname
        d = _unpickle(path)
        try:
            data = np.asarray(d[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32)
            labels = np.asarray(d[spec["labels"]], dtype=np.int64)
        except (KeyError, ValueError) as err:
            raise ValueError(f"corrupt CIFAR pickle file: {path} (missing or malformed 'data'/labels: {err})") from err
        if labels.shape[0] != data.shape[0]:
            raise ValueError(f"corrupt CIFAR pickle file: {path} ({data.shape[0]} images but {labels.shape[0]} labels)")
        xs.append(data)
        ys.append(labels)
    return torch.from_numpy(np.concatenate(xs)), torch.from_numpy(np.concatenate(ys)), names


def find_cifar(root: Path, num_classes: int, path: str | None = None) -> tuple[str, Path]:
    """``("pickle", folder)`` or ``("imagefolder", folder)`` for CIFAR-``num_classes`` under ``root``."""
    spec = _PICKLE[num_classes]
    sub = path or f"cifar{num_classes}"
    base = Path(sub) if Path(sub).is_absolute() else root / sub
    for cand in (base / spec["dir"], root / spec["dir"], base):
        if (cand / spec["meta"]).is_file():
            return "pickle", cand
    if (base / "train").is_dir() and (base / "test").is_dir():
        return "imagefolder", base
    raise FileNotFoundError(
        f"CIFAR-{num_classes} not found: looked for {base / spec['dir']}, {root / spec['dir']} (pickle layout) "
        f"and {base}/{{train,test}}/<class>/ (ImageFolder layout); set --data-root or $RELDROP_DATA_DIR")


def load_cifar_split(root: Path, split: str, num_classes: int = 10, path: str | None = None, *, cache: bool = True
                     ) -> tuple[torch.Tensor, torch.Tensor, list[str], str, Path]:
    """``uint8`` images ``(N, 3, 32, 32)``, labels, class names, layout and folder of one CIFAR split."""
    layout, folder = find_cifar(root, num_classes, path)
    if layout == "pickle":
        images, labels, names = load_cifar_pickle(folder, split, num_classes)
    else:
        images, labels, names = load_imagefolder_tensor(folder / split, cache=cache)
        check_same_classes(folder / split, names, folder / ("test" if split == "train" else "train"))
        if len(names) != num_classes:
            raise ValueError(f"{folder / split} has {len(names)} class folders, expected {num_classes} for CIFAR-{num_classes}")
    if tuple(images.shape[1:]) != (3, 32, 32):
        raise ValueError(f"CIFAR images under {folder} must be 3x32x32, got {tuple(images.shape[1:])}")
    return images, labels, names, layout, folder


def build_cifar(root: Path, split: str, *, train_transform: bool, num_classes: int = 10, path: str | None = None,
                subset: int | None = None, seed: int = 0, augment: bool = True, cache: bool = True,
                size: int | None = None, mean: Sequence[float] | None = None, std: Sequence[float] | None = None,
                **unknown: Any) -> DatasetInfo:
    """CIFAR-10/100 as an in-memory :class:`TensorImageDataset` (``subset``: class-balanced N train images).

    ``size``: upsample every batch bilinearly to ``size × size`` after the crop/flip (e.g. 64 for
    a finetuned ImageNet network); images stay stored at 32×32.
    ``mean``/``std``: per-channel normalization (3 values each, pixel scale ``[0, 1]``); default the
    dataset's own statistics. A pretrained network wants the normalization it was trained with,
    e.g. ``[0.5, 0.5, 0.5]`` / ``[0.5, 0.5, 0.5]`` for the TF-ported EfficientNet-Lite0."""
    reject_unknown_kwargs(f"cifar{num_classes}", unknown, build_cifar)
    if (mean is None) != (std is None):
        raise ValueError(f"cifar{num_classes}: give both mean and std or neither, got mean={mean!r}, std={std!r}")
    if mean is not None and std is not None and (len(mean) != 3 or len(std) != 3):
        raise ValueError(f"cifar{num_classes}: mean and std need 3 values (R, G, B), got {mean!r}, {std!r}")
    images, labels, names, layout, folder = load_cifar_split(root, split, num_classes, path, cache=cache)
    if mean is None:
        mean, std = (CIFAR10_MEAN, CIFAR10_STD) if num_classes == 10 else (CIFAR100_MEAN, CIFAR100_STD)
    assert std is not None  # given together with mean (checked above)
    mean, std = tuple(float(v) for v in mean), tuple(float(v) for v in std)
    steps: list = [RandomCropFlip(pad=4, flip=True)] if (train_transform and augment) else []
    if size is not None:
        steps.append(Resize(int(size)))
    tf = BatchCompose(steps + [Normalize(mean, std)])
    ds = TensorImageDataset(images, labels, tf)
    if subset is not None and split == "train":
        ds = ds.subset(class_balanced_subset(labels, int(subset), seed))
    return DatasetInfo(dataset=ds, num_classes=num_classes, class_names=names, modality="image",
                       input_shape=(3, size or 32, size or 32), mean=mean, std=std,
                       extra={"layout": layout, "folder": str(folder)})


@register_dataset("cifar10")
def build_cifar10(root: Path, split: str, *, train_transform: bool, **kw: Any) -> DatasetInfo:
    """CIFAR-10 (pickle or ImageFolder layout)."""
    return build_cifar(root, split, train_transform=train_transform, num_classes=10, **kw)


@register_dataset("cifar100")
def build_cifar100(root: Path, split: str, *, train_transform: bool, **kw: Any) -> DatasetInfo:
    """CIFAR-100, fine labels (pickle or ImageFolder layout)."""
    return build_cifar(root, split, train_transform=train_transform, num_classes=100, **kw)
