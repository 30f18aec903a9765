"""ModelNet point clouds in the on-disk formats people have, plus the shared point-dataset machinery.

Registered datasets (``build_dataset(name, root, split, ...)``); ``root`` is either the dataset
folder itself or a data root that contains it under its usual name:

* ``"modelnet10"`` / ``"point_folder"``: folder of arrays ``<root>/<class>/{train,test}/*.npy``
  (each ``(N, >=3)``), ``.txt`` files (comma- or whitespace-separated) also read. The shared
  ``modelnet10/`` is real ModelNet10 in this layout (raw mesh units, hence normalization).
* ``"modelnet40"``: ``modelnet40_normal_resampled`` (``<class>/<class>_NNNN.txt`` with
  ``x,y,z,nx,ny,nz`` rows, ``modelnet40_shape_names.txt``, ``modelnet40_{train,test}.txt``), as the
  PyTorch PointNet++ code reads it (``num_category=10`` uses the ``modelnet10_*.txt`` lists).
* ``"modelnet40_h5"``: ``modelnet40_ply_hdf5_2048`` (``ply_data_{train,test}*.h5`` with ``data``
  ``(B, 2048, 3)``, ``label`` ``(B, 1)`` and optionally ``normal``; ``shape_names.txt``).

Common keyword arguments of every point builder: ``npoints=1024``, ``sampling="fps"|"uniform"|"first"``,
``use_normals=False`` (D = 6 instead of 3), ``normalize=True`` (centre at the mean, scale to the unit
sphere), ``augment`` (``None``: :class:`PointAugment` defaults when ``train_transform``; ``False``: off;
a dict of :class:`PointAugment` fields; or an instance), ``cache=True`` (preprocess the whole split
once and keep it in memory and under :func:`reldrop.data.cache_dir`, never inside the data folder;
``False`` reads and preprocesses each file lazily in ``__getitem__``), ``subset=None`` (an int: a
class-balanced subset of that many *train* clouds, drawn with ``seed``; the test split is whole). Items are
``(points (npoints, D) float32, label int)``. A missing or unreadable file raises an error naming it.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from .points_transforms import SAMPLINGS, PointAugment, farthest_point_sample, normalize_unit_sphere, subsample
from .registry import DatasetInfo, register_dataset
from .root import cache_dir
from .tensor_dataset import class_balanced_subset

__all__ = ["PointPrep", "PointArrayDataset", "PointFileDataset", "read_point_file", "point_info",
           "prepare_arrays", "make_augment", "resolve_root", "build_point_dataset", "point_options", "read_lines"]


# --------------------------------------------------------------------------------------------------
# shared machinery (also used by shapenet.py and shapes.py)
# --------------------------------------------------------------------------------------------------
class PointPrep:
    """Preprocessing of one raw cloud ``(N, C)`` to a tensor ``(npoints, D)``: features, subsampling, normalization.

    ``"uniform"`` sampling draws the subset from a generator seeded with ``seed + index``, so a
    given item is the same on every read (the reference loader's fixed subsets are deterministic too).
    """

    def __init__(self, npoints: int = 1024, sampling: str = "fps", use_normals: bool = False,
                 normalize: bool = True, seed: int = 0) -> None:
        if isinstance(npoints, bool) or not isinstance(npoints, int) or npoints < 1:
            raise ValueError(f"npoints must be a positive int, got {npoints!r}")
        if sampling not in SAMPLINGS:
            raise ValueError(f"sampling must be one of {SAMPLINGS}, got {sampling!r}")
        self.npoints, self.sampling = npoints, sampling
        self.use_normals, self.normalize, self.seed = bool(use_normals), bool(normalize), int(seed)

    @property
    def dim(self) -> int:
        return 6 if self.use_normals else 3

    def key(self) -> dict[str, Any]:
        return {"npoints": self.npoints, "sampling": self.sampling, "normals": self.use_normals,
                "normalize": self.normalize, "seed": self.seed}

    def features(self, arr: np.ndarray, source: str) -> torch.Tensor:
        """Check a raw array ``(N, C)`` and keep its first D columns as float32."""
        if arr.ndim != 2 or arr.shape[0] < 1 or arr.shape[1] < 3:
            raise ValueError(f"point cloud {source} must be an array of shape (N, >=3), got {arr.shape}")
        if arr.shape[1] < self.dim:
            raise ValueError(f"point cloud {source} has {arr.shape[1]} columns; use_normals=True needs "
                             f">= 6 (x, y, z, nx, ny, nz)")
        t = torch.from_numpy(np.ascontiguousarray(arr[:, : self.dim], dtype=np.float32))
        if not bool(torch.isfinite(t).all()):
            raise ValueError(f"point cloud {source} contains NaN or inf values")
        return t

    def _gen(self, index: int) -> torch.Generator:
        return torch.Generator().manual_seed(self.seed * 1_000_003 + index)

    def __call__(self, arr: np.ndarray, index: int, source: str) -> torch.Tensor:
        t = subsample(self.features(arr, source), self.npoints, self.sampling, generator=self._gen(index))
        return normalize_unit_sphere(t) if self.normalize else t

    def batch(self, arrays: Sequence[np.ndarray], sources: Sequence[str], chunk: int = 64) -> torch.Tensor:
        """Preprocess many clouds at once: ``(M, npoints, D)``; FPS is batched over clouds of equal size."""
        out = torch.empty(len(arrays), self.npoints, self.dim)
        feats = [self.features(a, s) for a, s in zip(arrays, sources)]
        by_n: dict[int, list[int]] = {}
        for i, f in enumerate(feats):
            by_n.setdefault(f.shape[0], []).append(i)
        for n, idx in by_n.items():
            if self.sampling == "fps" and n > self.npoints:
                for c in range(0, len(idx), chunk):
                    part = idx[c:c + chunk]
                    pts = torch.stack([feats[i] for i in part])
                    sel = farthest_point_sample(pts, self.npoints)
                    out[part] = torch.gather(pts, 1, sel.unsqueeze(-1).expand(-1, -1, pts.shape[-1]))
            else:
                for i in idx:
                    out[i] = subsample(feats[i], self.npoints, self.sampling, generator=self._gen(i))
        return normalize_unit_sphere(out) if self.normalize and len(arrays) else out


def make_augment(augment: Any, train_transform: bool) -> PointAugment | None:
    """``None`` → PointNet++ defaults when ``train_transform`` else off; ``False`` → off; dict → fields."""
    if augment is None:
        return PointAugment() if train_transform else None
    if augment is False:
        return None
    if augment is True:
        return PointAugment()
    if isinstance(augment, PointAugment):
        return augment
    if isinstance(augment, dict):
        return PointAugment(**augment)
    raise TypeError(f"augment must be None, a bool, a dict of PointAugment fields or a PointAugment, "
                    f"got {type(augment).__name__}")


class PointArrayDataset(Dataset):
    """Preprocessed clouds held in memory: ``points`` ``(M, N, D)`` float32, ``labels`` ``(M,)``."""

    def __init__(self, points: torch.Tensor, labels: torch.Tensor | Sequence[int],
                 augment: PointAugment | None = None) -> None:
        self.points = points.float().contiguous()
        self.labels = torch.as_tensor(labels, dtype=torch.long)
        if self.points.dim() != 3 or self.points.shape[0] != self.labels.shape[0]:
            raise ValueError(f"points must be (M, N, D) with M = len(labels), got {tuple(self.points.shape)} "
                             f"and {self.labels.shape[0]} labels")
        self.augment = augment

    def __len__(self) -> int:
        return self.points.shape[0]

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        p = self.points[i]
        p = self.augment(p) if self.augment is not None else p.clone()
        return p, int(self.labels[i])


class PointFileDataset(Dataset):
    """Clouds read lazily, one file per item: ``files[i]`` read by ``reader`` and preprocessed by ``prep``."""

    def __init__(self, files: Sequence[Path], labels: Sequence[int], reader: Callable[[Path], np.ndarray],
                 prep: PointPrep, augment: PointAugment | None = None) -> None:
        if len(files) != len(labels):
            raise ValueError(f"files and labels must have the same length, got {len(files)} and {len(labels)}")
        self.files, self.labels = list(files), torch.as_tensor(list(labels), dtype=torch.long)
        self.reader, self.prep, self.augment = reader, prep, augment

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        p = self.prep(self.reader(self.files[i]), i, str(self.files[i]))
        if self.augment is not None:
            p = self.augment(p)
        return p, int(self.labels[i])


def read_point_file(path: Path) -> np.ndarray:
    """Read ``.npy`` or text (comma- or whitespace-separated rows) into ``(N, C)`` float32; errors name the file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"point cloud file not found: {path}")
    try:
        if path.suffix == ".npy":
            arr = np.load(path, allow_pickle=False)
        else:
            with open(path, "r") as fh:
                first = fh.readline()
            arr = np.loadtxt(path, delimiter="," if "," in first else None, dtype=np.float32, ndmin=2)
    except Exception as err:  # noqa: BLE001 - re-raised with the file name
        raise ValueError(f"cannot read point cloud file {path}: {err}") from err
    arr = np.asarray(arr)
    if arr.dtype.kind not in "fiu" or arr.ndim != 2 or arr.shape[0] < 1 or arr.shape[1] < 3:
        raise ValueError(f"point cloud file {path} must hold a numeric array of shape (N, >=3), "
                         f"got dtype {arr.dtype} shape {arr.shape}")
    return arr.astype(np.float32, copy=False)


def _files_key(files: Sequence[Path]) -> list[Any]:
    out = []
    for f in files:
        st = Path(f).stat()
        out.append([str(f), st.st_size, st.st_mtime_ns])
    return out


def prepare_arrays(key: dict[str, Any], load: Callable[[], tuple[list[np.ndarray], list[str]]],
                   prep: PointPrep, cache: bool = True) -> torch.Tensor:
    """Preprocess a whole split ``(M, npoints, D)``, cached in ``cache_dir()/points/`` under a hash of ``key``.

    ``key`` must identify the source (format, split, files with sizes and mtimes) and ``prep``'s
    settings are added to it, so a changed file or setting never reuses a stale cache.
    """
    digest = hashlib.sha1(json.dumps({**key, **prep.key()}, sort_keys=True, default=str).encode()).hexdigest()[:16]
    path = cache_dir() / "points" / f"{key.get('format', 'points')}-{key.get('split', '')}-{digest}.npy"
    if cache and path.is_file():
        try:
            return torch.from_numpy(np.load(path, allow_pickle=False))
        except (OSError, ValueError):
            pass  # a broken cache file is rebuilt below
    arrays, sources = load()
    out = prep.batch(arrays, sources)
    if cache:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.stem}.reldrop-tmp{os.getpid()}.npy")  # per process: two builders never share it
        np.save(tmp, out.numpy())
        tmp.replace(path)
    return out


def point_info(dataset: Dataset, labels: torch.Tensor, class_names: list[str], prep: PointPrep,
               **extra: Any) -> DatasetInfo:
    counts = torch.bincount(labels, minlength=len(class_names)).tolist()
    return DatasetInfo(dataset=dataset, num_classes=len(class_names), class_names=list(class_names),
                       modality="points", input_shape=(prep.npoints, prep.dim),
                       extra={"class_counts": counts, **prep.key(), **extra})


def resolve_root(root: Path, names: Sequence[str], marker: Callable[[Path], bool], layout: str) -> Path:
    """The dataset folder: ``root/<name>`` for one of ``names`` (possibly nested once), or ``root`` itself."""
    root = Path(root)
    candidates = [root / n for n in names] + [root / n / n for n in names] + [root]
    for c in candidates:
        if c.is_dir() and marker(c):
            return c
    raise FileNotFoundError(f"no dataset found at {root} (looked for {', '.join(names)} there); expected {layout}")


def build_point_dataset(name: str, split: str, items: list[tuple[Path, int]], class_names: list[str],
                        reader: Callable[[Path], np.ndarray], root: Path, *, train_transform: bool, npoints: int,
                        sampling: str, use_normals: bool, normalize: bool, augment: Any, cache: bool, seed: int,
                        subset: int | None = None) -> DatasetInfo:
    """The :class:`DatasetInfo` of a point-cloud dataset from ``(file, class)`` items read by ``reader``
    (files loaded lazily or cached; ``subset``: class-balanced subset of the train split)."""
    if not items:
        raise FileNotFoundError(f"{name}: no {split} point clouds found under {root}")
    if subset is not None and split == "train":
        keep = class_balanced_subset(torch.tensor([c for _, c in items]), int(subset), seed)
        items = [items[i] for i in keep.tolist()]
    prep = PointPrep(npoints, sampling, use_normals, normalize, seed)
    aug = make_augment(augment, train_transform)
    files = [p for p, _ in items]
    labels = torch.tensor([c for _, c in items], dtype=torch.long)
    missing = [f for f in files if not f.is_file()]
    if missing:
        raise FileNotFoundError(f"{name}: {len(missing)} listed file(s) missing, first: {missing[0]}")
    if cache:
        key = {"format": name, "split": split, "root": str(root.resolve()), "files": _files_key(files)}

        def load() -> tuple[list[np.ndarray], list[str]]:
            return [reader(f) for f in files], [str(f) for f in files]

        ds: Dataset = PointArrayDataset(prepare_arrays(key, load, prep, cache=True), labels, aug)
    else:
        ds = PointFileDataset(files, labels.tolist(), reader, prep, aug)
    return point_info(ds, labels, class_names, prep, root=str(root), split=split)


_COMMON = dict(npoints=1024, sampling="fps", use_normals=False, normalize=True, augment=None, cache=True, seed=0,
               subset=None)


def point_options(kwargs: dict[str, Any], name: str) -> dict[str, Any]:
    """The common point-dataset options (npoints, sampling, ...) with defaults; TypeError on unknown keys."""
    unknown = set(kwargs) - set(_COMMON)
    if unknown:
        raise TypeError(f"{name}: unknown keyword argument(s) {sorted(unknown)}; known: {sorted(_COMMON)}")
    return {**_COMMON, **kwargs}


# --------------------------------------------------------------------------------------------------
# folder of arrays: <root>/<class>/{train,test}/*.npy|*.txt
# --------------------------------------------------------------------------------------------------
_POINT_SUFFIXES = (".npy", ".txt")


def _is_folder_layout(p: Path) -> bool:
    return any(c.is_dir() and ((c / "train").is_dir() or (c / "test").is_dir()) for c in p.iterdir())


def _build_folder(name: str, root: Path, split: str, names: Sequence[str], train_transform: bool,
                  **kwargs: Any) -> DatasetInfo:
    opts = point_options(kwargs, name)
    layout = "<root>/<class>/{train,test}/*.npy (each an (N, >=3) array) or *.txt"
    folder = resolve_root(root, names, _is_folder_layout, layout)
    classes = sorted(c.name for c in folder.iterdir()
                     if c.is_dir() and ((c / "train").is_dir() or (c / "test").is_dir()))
    items = [(f, ci) for ci, c in enumerate(classes)
             for f in sorted((folder / c / split).glob("*")) if f.suffix in _POINT_SUFFIXES]
    return build_point_dataset(name, split, items, classes, read_point_file, folder, train_transform=train_transform, **opts)


@register_dataset("modelnet10")
def build_modelnet10(root: Path, split: str, *, train_transform: bool, **kwargs: Any) -> DatasetInfo:
    """ModelNet10 as a folder of arrays (``<root>/modelnet10/<class>/{train,test}/*.npy``)."""
    return _build_folder("modelnet10", root, split, ("modelnet10", "ModelNet10"), train_transform, **kwargs)


@register_dataset("point_folder")
def build_point_folder(root: Path, split: str, *, train_transform: bool, **kwargs: Any) -> DatasetInfo:
    """Any folder of arrays ``<root>/<class>/{train,test}/*.npy|*.txt``; classes = sorted folder names."""
    return _build_folder("point_folder", root, split, (), train_transform, **kwargs)


# --------------------------------------------------------------------------------------------------
# modelnet40_normal_resampled
# --------------------------------------------------------------------------------------------------
def read_lines(path: Path) -> list[str]:
    """The non-empty, stripped lines of a list file; FileNotFoundError naming it when missing."""
    if not path.is_file():
        raise FileNotFoundError(f"required list file not found: {path}")
    return [ln.strip() for ln in path.read_text().splitlines() if ln.strip()]


@register_dataset("modelnet40")
def build_modelnet40(root: Path, split: str, *, train_transform: bool, num_category: int = 40,
                     **kwargs: Any) -> DatasetInfo:
    """``modelnet40_normal_resampled``: shape ids from ``modelnet{40,10}_{split}.txt``, files ``<class>/<id>.txt``."""
    if num_category not in (10, 40):
        raise ValueError(f"num_category must be 10 or 40, got {num_category!r}")
    opts = point_options(kwargs, "modelnet40")
    names_file = f"modelnet{num_category}_shape_names.txt"
    folder = resolve_root(root, ("modelnet40_normal_resampled",), lambda p: (p / names_file).is_file(),
                          f"modelnet40_normal_resampled/ with {names_file}, modelnet{num_category}_train.txt, "
                          f"modelnet{num_category}_test.txt and <class>/<class>_NNNN.txt")
    classes = read_lines(folder / names_file)
    index = {c: i for i, c in enumerate(classes)}
    items = []
    for shape_id in read_lines(folder / f"modelnet{num_category}_{split}.txt"):
        cls = "_".join(shape_id.split("_")[:-1])
        if cls not in index:
            raise ValueError(f"shape id {shape_id!r} in modelnet{num_category}_{split}.txt names unknown class {cls!r}")
        items.append((folder / cls / f"{shape_id}.txt", index[cls]))
    return build_point_dataset("modelnet40", split, items, classes, read_point_file, folder,
                  train_transform=train_transform, **opts)


# --------------------------------------------------------------------------------------------------
# modelnet40_ply_hdf5_2048
# --------------------------------------------------------------------------------------------------
def _natural_key(p: Path) -> list[Any]:
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", p.name)]


@register_dataset("modelnet40_h5")
def build_modelnet40_h5(root: Path, split: str, *, train_transform: bool, **kwargs: Any) -> DatasetInfo:
    """``modelnet40_ply_hdf5_2048``: ``ply_data_{split}*.h5`` (``data`` (B, 2048, 3), ``label`` (B, 1))."""
    import h5py

    opts = point_options(kwargs, "modelnet40_h5")
    folder = resolve_root(root, ("modelnet40_ply_hdf5_2048",), lambda p: any(p.glob("ply_data_*.h5")),
                          "modelnet40_ply_hdf5_2048/ with ply_data_{train,test}*.h5 and shape_names.txt")
    classes = read_lines(folder / "shape_names.txt")
    files = sorted(folder.glob(f"ply_data_{split}*.h5"), key=_natural_key)
    if not files:
        raise FileNotFoundError(f"modelnet40_h5: no ply_data_{split}*.h5 files in {folder}")
    prep = PointPrep(opts["npoints"], opts["sampling"], opts["use_normals"], opts["normalize"], opts["seed"])
    labels_list = []
    for f in files:
        try:
            with h5py.File(f, "r") as h:
                lab = np.asarray(h["label"]).reshape(-1)
        except Exception as err:  # noqa: BLE001
            raise ValueError(f"cannot read HDF5 file {f} (needs datasets 'data' and 'label'): {err}") from err
        labels_list.append(lab)
    labels = torch.from_numpy(np.concatenate(labels_list).astype(np.int64))
    if labels.numel() and (labels.min() < 0 or labels.max() >= len(classes)):
        raise ValueError(f"modelnet40_h5: labels must lie in [0, {len(classes)}) (shape_names.txt), "
                         f"got range [{int(labels.min())}, {int(labels.max())}]")

    def load() -> tuple[list[np.ndarray], list[str]]:
        arrays: list[np.ndarray] = []
        sources: list[str] = []
        for f in files:
            try:
                with h5py.File(f, "r") as h:
                    data = np.asarray(h["data"], dtype=np.float32)
                    if prep.use_normals:
                        if "normal" not in h:
                            raise ValueError("use_normals=True needs a 'normal' dataset")
                        data = np.concatenate([data, np.asarray(h["normal"], dtype=np.float32)], axis=-1)
            except Exception as err:  # noqa: BLE001
                raise ValueError(f"cannot read HDF5 file {f}: {err}") from err
            if data.ndim != 3 or data.shape[-1] < 3:
                raise ValueError(f"HDF5 file {f}: 'data' must have shape (B, N, 3), got {data.shape}")
            arrays.extend(list(data))
            sources.extend(f"{f}[{i}]" for i in range(len(data)))
        if len(arrays) != labels.numel():
            raise ValueError(f"modelnet40_h5: {len(arrays)} clouds but {labels.numel()} labels in {folder}")
        return arrays, sources

    key = {"format": "modelnet40_h5", "split": split, "root": str(folder.resolve()), "files": _files_key(files)}
    points = prepare_arrays(key, load, prep, cache=opts["cache"])
    if opts["subset"] is not None and split == "train":
        keep = class_balanced_subset(labels, int(opts["subset"]), opts["seed"])
        points, labels = points[keep], labels[keep]
    ds = PointArrayDataset(points, labels, make_augment(opts["augment"], train_transform))
    return point_info(ds, labels, classes, prep, root=str(folder), split=split)
