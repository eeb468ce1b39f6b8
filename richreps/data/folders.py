"""ImageNet-1k, iNaturalist 2018 and CIFAR-10/100 read from their own on-disk formats.

Nothing here downloads. Each loader first checks the layout and fails with one line naming
the path and the layout it expected, before any model is built.
"""

from __future__ import annotations

import json
import logging
import os
import pickle
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from tqdm.auto import tqdm

log = logging.getLogger(__name__)
IMAGE_EXTS = {".jpeg", ".jpg", ".png"}
POLICIES = ("error", "skip")


class DatasetError(ValueError):
    """A dataset root that cannot be used; the message names the path and the expected layout."""


class CorruptImageError(RuntimeError):
    """An image that cannot be decoded, under the `error` policy."""


@dataclass
class ImageIndex:
    """A dataset as file paths and integer labels, before any decoding."""

    name: str
    classes: list[str]
    train: list[tuple[str, int]]
    test: list[tuple[str, int]]
    skipped: list[str] = field(default_factory=list)

    def labels(self, split: str) -> np.ndarray:
        return np.array([y for _, y in getattr(self, split)], dtype=np.int64)


# ---------------------------------------------------------------- layouts


def _require_dir(path: Path, layout: str) -> Path:
    if not path.is_dir():
        raise DatasetError(f"{path}: folder not found; expected {layout}")
    return path


def _class_dirs(split_dir: Path, root: Path, layout: str) -> list[Path]:
    """The class folders of a split, sorted: its folders, real or linked from outside the dataset.

    A link to a folder inside the root is refused naming it: `train/zz -> .` would be a class holding the
    split itself (a loop), `val/x -> ../train/x` the training images tested. One listing of the split,
    so the header-level check stays fast."""
    inside = root.resolve()
    found = []
    for d in sorted(split_dir.iterdir()):
        if d.is_symlink() and d.is_dir() and d.resolve().is_relative_to(inside):
            raise DatasetError(
                f"{d}: a link to {d.resolve()}, inside the dataset; a class is a folder of images, "
                f"remove the link (expected {layout})"
            )
        if d.is_dir():
            found.append(d)
    return found


def _image_files(folder: Path) -> list[str]:
    """The image files of one class folder, sorted, without a stat per file: `os.scandir` reads each
    entry's type from the directory listing itself (one `getdents` per folder, also on Lustre and NFS);
    only a link or a filesystem that does not say costs a stat."""
    with os.scandir(folder) as entries:
        return sorted(
            os.path.join(folder, e.name)
            for e in entries
            if os.path.splitext(e.name)[1].lower() in IMAGE_EXTS and e.is_file()
        )


def _image_folder(
    split_dir: Path, classes: list[str] | None, layout: str, root: Path
) -> tuple[list[str], list[tuple[str, int]]]:
    _require_dir(split_dir, layout)
    found = [d.name for d in _class_dirs(split_dir, root, layout)]
    if not found:
        raise DatasetError(f"{split_dir}: no class folders; expected {layout}")
    defines = classes is None  # train/ defines the classes; val/ may lack some
    classes = classes if classes is not None else found
    lookup = {c: i for i, c in enumerate(classes)}
    unknown = [c for c in found if c not in lookup]
    if unknown:
        raise DatasetError(f"{split_dir / unknown[0]}: class folder not present in train/; expected {layout}")
    samples = [(path, lookup[c]) for c in found for path in _image_files(split_dir / c)]
    if not samples:
        raise DatasetError(f"{split_dir}: no images (*.JPEG, *.jpg, *.png); expected {layout}")
    empty = sorted(set(found) - {classes[y] for _, y in samples})
    if defines and empty:  # a class is a folder of images, never an empty or stray folder
        raise DatasetError(
            f"{split_dir / empty[0]}: no images (*.JPEG, *.jpg, *.png) in a class folder; expected {layout}"
        )
    return classes, samples


IMAGENET_LAYOUT = (
    "root/train/<wnid>/*.JPEG and root/val/<wnid>/*.JPEG (ImageFolder layout, val sorted into class folders)"
)
INAT_LAYOUT = (
    "root/train2018.json, root/val2018.json and the image paths they list (e.g. root/train_val2018/...)"
)


def check_layout(dataset: str, root: str | Path) -> None:
    """The dataset's layout at header level: its folders and files exist, the first class folder holds
    an image, the COCO files start as JSON. Fast on 1.28M files (nothing is listed whole or decoded);
    the first check of `python -m richreps.data check` and of the runner's `*_root` keys."""
    root = Path(root)
    if dataset == "imagenet":
        _require_dir(root, IMAGENET_LAYOUT)
        for split in ("train", "val"):
            folder = _require_dir(root / split, IMAGENET_LAYOUT)
            first = next(iter(_class_dirs(folder, root, IMAGENET_LAYOUT)), None)
            if first is None:
                raise DatasetError(f"{folder}: no class folders; expected {IMAGENET_LAYOUT}")
            if not any(p.suffix.lower() in IMAGE_EXTS for p in first.iterdir()):
                raise DatasetError(f"{first}: no images (*.JPEG, *.jpg, *.png); expected {IMAGENET_LAYOUT}")
    elif dataset == "inat18":
        _require_dir(root, INAT_LAYOUT)
        for name in ("train2018.json", "val2018.json"):
            path = root / name
            if not path.is_file():
                raise DatasetError(f"{path}: file not found; expected {INAT_LAYOUT}")
            with path.open("rb") as f:
                if not f.read(64).lstrip().startswith(b"{"):
                    raise DatasetError(f"{path}: not a COCO-style JSON file; expected {INAT_LAYOUT}")
    elif dataset in CIFAR:
        _cifar_folder(dataset, root)


def imagenet_index(root: str | Path) -> ImageIndex:
    """ImageNet-1k in ImageFolder layout: root/train/<wnid>/*.JPEG and root/val/<wnid>/*.JPEG."""
    root = Path(root)
    layout = IMAGENET_LAYOUT
    _require_dir(root, layout)
    classes, train = _image_folder(root / "train", None, layout, root)
    _, test = _image_folder(root / "val", classes, layout, root)
    return ImageIndex("imagenet", classes, train, test)


def inat18_index(root: str | Path) -> ImageIndex:
    """iNaturalist 2018 from train2018.json and val2018.json (COCO style) under root.

    Labels follow the authors' protocol (richreps-timecat / RRL): the class of an image is the
    directory part of its `file_name` (e.g. 'train_val2018/Plantae/7477'), and class indices are
    those directories in sorted order, taken from train2018.json. `category_id` is not used.
    val2018.json is the test set, as in the authors' code; validation comes from `split_train`.
    """
    root = Path(root)
    layout = INAT_LAYOUT
    _require_dir(root, layout)

    def read(name: str) -> list[str]:
        path = root / name
        if not path.is_file():
            raise DatasetError(f"{path}: file not found; expected {layout}")
        try:
            images = json.loads(path.read_text())["images"]
            return [img["file_name"] for img in images]
        except (json.JSONDecodeError, KeyError, TypeError) as e:
            raise DatasetError(f"{path}: not a COCO-style file with images[].file_name ({e})") from None

    train_files, val_files = read("train2018.json"), read("val2018.json")
    if not train_files:
        raise DatasetError(f"{root / 'train2018.json'}: lists no images; expected {layout}")
    classes = sorted({str(Path(f).parent) for f in train_files})
    lookup = {c: i for i, c in enumerate(classes)}
    missing = [f for f in val_files if str(Path(f).parent) not in lookup]
    if missing:
        raise DatasetError(
            f"{root / 'val2018.json'}: {missing[0]} is in a directory absent from train2018.json"
        )
    first = root / train_files[0]
    if not first.is_file():
        raise DatasetError(f"{first}: image listed in train2018.json not found; expected {layout}")
    train = [(str(root / f), lookup[str(Path(f).parent)]) for f in train_files]
    test = [(str(root / f), lookup[str(Path(f).parent)]) for f in val_files]
    return ImageIndex("inat18", classes, train, test)


# ---------------------------------------------------------------- CIFAR (python pickles)

CIFAR = {
    "cifar10": {
        "folder": "cifar-10-batches-py",
        "train": [f"data_batch_{i}" for i in range(1, 6)],
        "test": ["test_batch"],
        "meta": ("batches.meta", "label_names"),
        "labels": "labels",
    },
    "cifar100": {
        "folder": "cifar-100-python",
        "train": ["train"],
        "test": ["test"],
        "meta": ("meta", "fine_label_names"),
        "labels": "fine_labels",
    },
}
CIFAR_URL = "https://www.cs.toronto.edu/~kriz/cifar.html (the 'python version')"


class _CifarUnpickler(pickle.Unpickler):
    """Only what the official CIFAR pickles contain: numpy arrays, dtypes and scalars (and, in
    protocol-2 files written by Python 3, `_codecs.encode` for bytes). Any other global, the way a
    crafted pickle runs code, is refused before it is looked up."""

    ALLOWED = {
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"),
        ("_codecs", "encode"),
    }

    def find_class(self, module: str, name: str):
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"global '{module}.{name}' is not allowed in a CIFAR file")
        return super().find_class(module, name)


def _unpickle(path: Path) -> dict:
    """The official files are Python 2 pickles; keys come back as bytes, so decode them."""
    with path.open("rb") as f:
        try:
            raw = _CifarUnpickler(f, encoding="bytes").load()
        except Exception as e:  # noqa: BLE001 - any unpickling failure is a bad file
            raise DatasetError(f"{path}: not a CIFAR python pickle ({e})") from None
    if not isinstance(raw, dict):
        raise DatasetError(f"{path}: not a CIFAR python pickle (a {type(raw).__name__}, not a dict)")
    return {k.decode() if isinstance(k, bytes) else k: v for k, v in raw.items()}


def _cifar_folder(name: str, root: str | Path) -> Path:
    """The extracted CIFAR folder under `root` (or `root` itself), every official file present."""
    spec = CIFAR[name]
    root = Path(root)
    folder = root if root.name == spec["folder"] else root / spec["folder"]
    files = spec["train"] + spec["test"] + [spec["meta"][0]]
    layout = f"{root}/{spec['folder']}/{{{', '.join(files)}}} from {CIFAR_URL}"
    if not folder.is_dir():
        raise DatasetError(f"{folder}: folder not found; expected {layout}")
    for f in files:
        if not (folder / f).is_file():
            raise DatasetError(f"{folder / f}: file not found; expected {layout}")
    return folder


def cifar_arrays(name: str, root: str | Path) -> tuple[list[str], dict[str, tuple[np.ndarray, np.ndarray]]]:
    """CIFAR-10/100 as uint8 HWC arrays and labels: (classes, {'train': (x, y), 'test': (x, y)}).

    `root` may be the extracted folder itself or its parent. torchvision's classes are not used
    because they check the official md5 sums even with download=False.
    """
    spec = CIFAR[name]
    folder = _cifar_folder(name, root)
    meta = _unpickle(folder / spec["meta"][0])
    classes = [c.decode() if isinstance(c, bytes) else c for c in meta[spec["meta"][1]]]
    out = {}
    for split in ("train", "test"):
        xs, ys = [], []
        for f in spec[split]:
            d = _unpickle(folder / f)
            try:
                x = np.asarray(d["data"], dtype=np.uint8).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
                y = np.asarray(d[spec["labels"]], dtype=np.int64)
            except (KeyError, ValueError) as e:
                raise DatasetError(
                    f"{folder / f}: expected 'data' (N x 3072) and '{spec['labels']}' ({e})"
                ) from None
            xs.append(x)
            ys.append(y)
        out[split] = (np.concatenate(xs), np.concatenate(ys))
    return classes, out


# ---------------------------------------------------------------- corrupt files


def scan_images(
    samples: list[tuple[str, int]], policy: str, desc: str = "checking images"
) -> tuple[list, list[str]]:
    """Decode every file fully, as training will; return (readable samples, unreadable paths).

    `Image.verify()` alone reads only the header and passes truncated JPEGs, which then stop a
    run mid-epoch, so each image is decoded to RGB exactly as `load_rgb` does.

    Under `error` the first unreadable file raises with its path; under `skip` it is left
    out, counted and logged, so a run never trains on fewer images without saying so.
    """
    if policy not in POLICIES:
        raise ValueError(f"corrupt_policy must be one of {POLICIES}, got {policy!r}")
    good, bad = [], []
    for path, label in tqdm(samples, desc=desc, unit="img", leave=False, mininterval=1.0):
        try:
            load_rgb(path)
        except Exception as e:  # noqa: BLE001 - PIL raises many types for bad files
            if policy == "error":
                raise CorruptImageError(
                    f"{path}: unreadable image ({type(e).__name__}) under corrupt_policy error; replace or "
                    "remove it (corrupt_policy skip leaves such files out, and is another recipe)"
                ) from None
            bad.append(path)
            continue
        good.append((path, label))
    if bad:
        log.warning("skipped %d unreadable images (corrupt_policy=skip): %s", len(bad), ", ".join(bad))
    return good, bad


class _Unreadable(torch.utils.data.Dataset):
    """'path (ErrorType)' where a file does not decode as training decodes it, else ''."""

    def __init__(self, samples: list[tuple[str, int]]):
        self.samples = samples

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> str:
        path = self.samples[i][0]
        try:
            with Image.open(path) as im:
                im.convert("RGB")  # exactly what `load_rgb` does
        except Exception as e:  # noqa: BLE001 - PIL raises many types for bad files
            return f"{path} ({type(e).__name__})"
        return ""


def first_unreadable(
    samples: list[tuple[str, int]], desc: str = "checking images", workers: int = 0
) -> str | None:
    """The first file of `samples` that does not decode as training decodes it, as 'path (ErrorType)',
    or None. `richreps.pretrain` runs it over each rank's share of the training images before step 1
    under corrupt_policy `error`, so an unreadable file stops the run before any training, not mid-epoch;
    `workers` processes decode in parallel (the loader's own count), in order, 64 files at a time."""
    loader = torch.utils.data.DataLoader(
        _Unreadable(samples), batch_size=64, num_workers=workers, collate_fn=list
    )
    with tqdm(total=len(samples), desc=desc, unit="img", leave=False, mininterval=1.0) as bar:
        for chunk in loader:
            bad = next((b for b in chunk if b), None)
            if bad:
                return bad
            bar.update(len(chunk))
    return None


def load_rgb(path: str) -> Image.Image:
    try:
        with Image.open(path) as im:
            return im.convert("RGB")
    except Exception as e:  # noqa: BLE001
        raise CorruptImageError(f"{path}: unreadable image ({type(e).__name__}: {e})") from None


# ---------------------------------------------------------------- splits and datasets


def stratified_split(
    labels: np.ndarray, val_fraction: float, seed: int, one_per_class: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """Deterministic per-class split of a training set into (train, validation) indices.

    Model selection uses the validation part, so it never touches the test split. `one_per_class` holds
    out at least one image of every class with two or more; without it a class gives round(fraction x its
    size), so iNat18's long tail (classes of 2 to 20 images) keeps every training image, as in the authors'
    protocol, where the whole of train2018 trains the probe.
    """
    if not 0 < val_fraction < 1:
        raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}")
    rng = np.random.default_rng(seed)
    train, val = [], []
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        idx = idx[rng.permutation(len(idx))]
        k = int(round(val_fraction * len(idx)))
        k = min(max(k, 1 if one_per_class else 0), len(idx) - 1) if len(idx) > 1 else 0
        val.append(idx[:k])
        train.append(idx[k:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(val))


class FileDataset(torch.utils.data.Dataset):
    """(image, label) pairs from a list of files; decoding errors name the file."""

    def __init__(self, samples: list[tuple[str, int]], transform: Callable | None = None):
        self.samples = samples
        self.transform = transform

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int):
        path, label = self.samples[i]
        img = load_rgb(path)
        return (self.transform(img) if self.transform else img), label


class ArrayDataset(torch.utils.data.Dataset):
    """(image, label) pairs from a uint8 HWC array (CIFAR)."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, transform: Callable | None = None):
        self.images, self.labels, self.transform = images, labels, transform

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int):
        img = Image.fromarray(self.images[i])
        return (self.transform(img) if self.transform else img), int(self.labels[i])
