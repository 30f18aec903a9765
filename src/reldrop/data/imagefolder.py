"""ImageFolder layout ``<split>/<class>/<image>``: ImageNet-style (lazy PIL) and small images (cached tensor).

* :func:`load_imagefolder_tensor` decodes every image of a split once into a ``uint8`` tensor
  ``(N, C, H, W)`` and caches it in :func:`reldrop.data.cache_dir` (keyed by the folder path and
  its file list with sizes and mtimes; never written inside the data folder). CIFAR-10 as 50 000
  JPEGs decodes in about a minute once, then loads in a second.
* Dataset ``"imagefolder"``: ImageNet-style ``<root>/<path>/{train,val}/<class>/*.JPEG`` decoded
  lazily per item with RandomResizedCrop 224 + HFlip (train) or Resize + CenterCrop (eval).
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any, Callable

import torch
from torch.utils.data import Dataset

from .registry import DatasetInfo, register_dataset, reject_unknown_kwargs
from .root import cache_dir
from .transforms import IMAGENET_MEAN, IMAGENET_STD, imagenet_eval_transform, imagenet_train_transform

__all__ = ["IMG_EXTENSIONS", "scan_imagefolder", "load_image", "load_imagefolder_tensor", "ImageFolderDataset",
           "class_folders", "check_same_classes"]

IMG_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")


def scan_imagefolder(split_dir: str | os.PathLike[str]) -> tuple[list[Path], list[int], list[str]]:
    """Files (sorted by class, then name), their labels and the sorted class names of ``split_dir``."""
    split_dir = Path(split_dir)
    if not split_dir.is_dir():
        raise FileNotFoundError(f"image folder not found: {split_dir} (expected <split>/<class>/<image>)")
    classes = class_folders(split_dir)
    if not classes:
        raise FileNotFoundError(f"no class sub-folders in {split_dir} (expected <split>/<class>/<image>)")
    files: list[Path] = []
    labels: list[int] = []
    empty: list[str] = []
    for k, c in enumerate(classes):
        names = sorted(f for f in os.listdir(split_dir / c) if f.lower().endswith(IMG_EXTENSIONS))
        if not names:
            empty.append(c)
        files.extend(split_dir / c / f for f in names)
        labels.extend([k] * len(names))
    if not files:
        raise FileNotFoundError(f"no images ({', '.join(IMG_EXTENSIONS)}) found under {split_dir}")
    if empty:
        raise ValueError(f"class folder(s) {', '.join(str(split_dir / c) for c in empty[:5])} hold no images "
                         f"({', '.join(IMG_EXTENSIONS)}); a class without images cannot be learned or scored: "
                         "remove the folder or add its images")
    return files, labels, classes


def class_folders(split_dir: str | os.PathLike[str]) -> list[str]:
    """Sorted class folder names of ``split_dir`` (hidden folders skipped)."""
    return sorted(d.name for d in Path(split_dir).iterdir() if d.is_dir() and not d.name.startswith("."))


def check_same_classes(split_dir: Path, classes: list[str], other_dir: Path) -> None:
    """ValueError naming both folders when ``other_dir`` (the other split) has other class folders than
    ``classes`` (the labels are class indices in sorted order: a renamed folder would shift them)."""
    if not other_dir.is_dir():
        return
    other = class_folders(other_dir)
    if other != list(classes):
        only_a = sorted(set(classes) - set(other))
        only_b = sorted(set(other) - set(classes))
        raise ValueError(f"the class folders of {split_dir} and {other_dir} differ (only in {split_dir.name}: "
                         f"{only_a[:5]}, only in {other_dir.name}: {only_b[:5]}): labels are the sorted class "
                         "folders of each split, so both splits must have the same class folders")


def load_image(path: Path, mode: str = "RGB") -> Any:
    """Open and fully decode an image with PIL; a missing or corrupt file raises naming the file."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            im.load()
            return im.convert(mode)
    except FileNotFoundError:
        raise FileNotFoundError(f"image file not found: {path}") from None
    except Image.DecompressionBombError as err:
        raise ValueError(f"image file {path} is too large to decode safely (PIL decompression-bomb limit: {err})") \
            from err
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        raise ValueError(f"corrupt or unreadable image file: {path} ({err})") from err


def _cache_key(split_dir: Path, files: list[Path], mode: str) -> str:
    h = hashlib.sha1()
    h.update(f"v1|{split_dir.resolve()}|{mode}".encode())
    for f in files:
        try:
            st = f.stat()
        except OSError as err:  # a dangling link, a symlink loop (ELOOP), no permission
            raise ValueError(f"cannot read image file {f}: {err.strerror or err}") from err
        h.update(f"|{f.relative_to(split_dir)}:{st.st_size}:{st.st_mtime_ns}".encode())
    return h.hexdigest()[:20]


def load_imagefolder_tensor(split_dir: str | os.PathLike[str], *, mode: str = "RGB", cache: bool = True,
                            progress: bool = False) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """All images of ``split_dir`` as ``uint8`` ``(N, C, H, W)``, labels ``(N,)`` and class names.

    Every image must have the same size. With ``cache``, the decoded tensor is stored in
    ``cache_dir()/imagefolder/<name>-<key>.pt`` (atomic write) and reused while the file list,
    sizes and mtimes are unchanged.
    """
    import numpy as np

    split_dir = Path(split_dir)
    files, labels, classes = scan_imagefolder(split_dir)
    target = None
    if cache:
        key = _cache_key(split_dir, files, mode)
        target = cache_dir() / "imagefolder" / f"{split_dir.parent.name}-{split_dir.name}-{key}.pt"
        if target.is_file():
            try:
                blob = torch.load(target, map_location="cpu", weights_only=True)
                return blob["images"], blob["labels"], list(blob["classes"])
            except Exception:  # a broken cache file is rebuilt, never trusted
                pass
    arrays = []
    it: Any = files
    if progress:
        from tqdm import tqdm

        it = tqdm(files, desc=f"decoding {split_dir}", unit="img")
    shape = None
    for f in it:
        a = np.asarray(load_image(f, mode))
        if a.ndim == 2:
            a = a[:, :, None]
        if shape is None:
            shape = a.shape
        elif a.shape != shape:
            raise ValueError(f"image {f} has size {a.shape[:2]} but earlier images have {shape[:2]}; "
                             "in-memory image folders need one image size")
        arrays.append(a)
    images = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()
    label_t = torch.tensor(labels, dtype=torch.long)
    if target is not None:
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.reldrop-tmp{os.getpid()}")
        torch.save({"images": images, "labels": label_t, "classes": classes}, tmp)
        os.replace(tmp, target)
    return images, label_t, classes


class ImageFolderDataset(Dataset):
    """Lazy ImageFolder: ``dataset[i] -> (transform(PIL image), label)``."""

    def __init__(self, split_dir: str | os.PathLike[str], transform: Callable | None = None) -> None:
        self.files, self.labels, self.classes = scan_imagefolder(split_dir)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> tuple[Any, int]:
        im = load_image(self.files[i])
        return (self.transform(im) if self.transform else im), self.labels[i]


def _resolve_split(base: Path, split: str) -> Path:
    names = ("train",) if split == "train" else ("val", "test", "validation")
    for n in names:
        if (base / n).is_dir():
            return base / n
    raise FileNotFoundError(f"no {' / '.join(names)} folder under {base} (ImageNet-style <root>/{{train,val}}/<class>/)")


@register_dataset("imagefolder")
def build_imagefolder(root: Path, split: str, *, train_transform: bool, path: str = "imagenet",
                      image_size: int = 224, subset: int | None = None, seed: int = 0,
                      **unknown: Any) -> DatasetInfo:
    """ImageNet-style folder ``<root>/<path>/{train,val}/<class>/*``; lazy decoding (use DataLoader workers)."""
    reject_unknown_kwargs("imagefolder", unknown, build_imagefolder)
    base = Path(path) if Path(path).is_absolute() else root / path
    split_dir = _resolve_split(base, split)
    ds_classes = class_folders(split_dir)
    for other in ("train", "val", "test", "validation"):
        if (base / other) != split_dir and (base / other).is_dir():
            check_same_classes(split_dir, ds_classes, base / other)
            break
    tf = imagenet_train_transform(image_size) if train_transform else imagenet_eval_transform(image_size)
    ds = ImageFolderDataset(split_dir, tf)
    dataset: Dataset = ds
    if subset is not None and split == "train":
        from .tensor_dataset import class_balanced_subset

        idx = class_balanced_subset(torch.tensor(ds.labels), int(subset), seed)
        dataset = torch.utils.data.Subset(ds, idx.tolist())
    return DatasetInfo(dataset=dataset, num_classes=len(ds.classes), class_names=ds.classes, modality="image",
                       input_shape=(3, image_size, image_size), mean=IMAGENET_MEAN, std=IMAGENET_STD,
                       extra={"split_dir": str(split_dir)})
