"""ShapeNetPart (``shapenetcore_partanno_segmentation_benchmark_v0_normal``) as 16-category classification.

Layout (as the PyTorch PointNet++ code reads it)::

    synsetoffset2category.txt                 "Airplane\\t02691156" per line (category order = label order)
    train_test_split/shuffled_{train,val,test}_file_list.json   ["shape_data/<synset>/<id>", ...]
    <synset>/<id>.txt                         rows "x y z nx ny nz part"

Split ``"train"`` is train + val (the reference's "trainval"; ``include_val=False`` for train only),
``"test"`` is test. Keyword arguments as for the ModelNet builders (see :mod:`reldrop.data.modelnet`).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .modelnet import build_point_dataset, point_options, read_lines, read_point_file, resolve_root
from .registry import DatasetInfo, register_dataset

__all__ = ["build_shapenet"]

_DIRNAME = "shapenetcore_partanno_segmentation_benchmark_v0_normal"


def _read_split(path: Path) -> list[str]:
    if not path.is_file():
        raise FileNotFoundError(f"shapenet: split file not found: {path}")
    try:
        entries = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"shapenet: cannot parse split file {path}: {err}") from err
    if not isinstance(entries, list) or not all(isinstance(e, str) for e in entries):
        raise ValueError(f"shapenet: split file {path} must hold a JSON list of 'shape_data/<synset>/<id>' strings")
    return entries


@register_dataset("shapenet")
def build_shapenet(root: Path, split: str, *, train_transform: bool, include_val: bool = True,
                   **kwargs: Any) -> DatasetInfo:
    """ShapeNetPart, labels = the 16 categories of ``synsetoffset2category.txt`` in file order."""
    opts = point_options(kwargs, "shapenet")
    folder = resolve_root(root, (_DIRNAME, "shapenet", "shapenetpart"),
                          lambda p: (p / "synsetoffset2category.txt").is_file(),
                          f"{_DIRNAME}/ with synsetoffset2category.txt, train_test_split/"
                          "shuffled_{train,val,test}_file_list.json and <synset>/<id>.txt")
    classes: list[str] = []
    synset_to_label: dict[str, int] = {}
    for line in read_lines(folder / "synsetoffset2category.txt"):
        parts = line.split()
        if len(parts) != 2:
            raise ValueError(f"shapenet: malformed line {line!r} in {folder / 'synsetoffset2category.txt'}")
        synset_to_label[parts[1]] = len(classes)
        classes.append(parts[0])
    names = ["train", "val"] if (split == "train" and include_val) else [split]
    items = []
    for n in names:
        split_file = folder / "train_test_split" / f"shuffled_{n}_file_list.json"
        for entry in _read_split(split_file):
            parts = entry.strip("/").split("/")
            if len(parts) < 2 or parts[-2] not in synset_to_label:
                raise ValueError(f"shapenet: entry {entry!r} in {split_file} names no known synset")
            items.append((folder / parts[-2] / f"{parts[-1]}.txt", synset_to_label[parts[-2]]))
    return build_point_dataset("shapenet", split, items, classes, read_point_file, folder, train_transform=train_transform, **opts)
