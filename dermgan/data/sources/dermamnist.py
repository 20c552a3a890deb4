"""DermaMNIST (MedMNIST v2): HAM10000 images pre-resized into one .npz per resolution, with its own split."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import pandas as pd

from dermgan.data.sources.common import Catalogue, Problems, check_root, make_table
from dermgan.data.splits import SPLITS

CLASSES = ("akiec", "bcc", "bkl", "df", "mel", "nv", "vasc")  # label 0..6, MedMNIST's order
MALIGNANT = frozenset({"akiec", "bcc", "mel"})
RESOLUTIONS = {28: "dermamnist.npz", 64: "dermamnist_64.npz", 128: "dermamnist_128.npz",
               224: "dermamnist_224.npz"}

LAYOUT = """\
<root>/
  dermamnist.npz          (28 x 28; keys train_images, train_labels, val_images, val_labels,
                           test_images, test_labels)
  dermamnist_64.npz / dermamnist_128.npz / dermamnist_224.npz   (optional larger versions)"""


def pick_file(root: Path, size: int | None, resolution: int | None) -> list[Path]:
    """The file(s) to read: the one asked for, else the smallest at least `size` (else the largest);
    every present file when only checking (size None)."""
    present = {r: root / name for r, name in RESOLUTIONS.items() if (root / name).is_file()}
    if resolution is not None:
        return [root / RESOLUTIONS.get(resolution, f"dermamnist_{resolution}.npz")]
    if not present or size is None:
        return list(present.values()) or [root / RESOLUTIONS[28]]
    big_enough = [r for r in present if r >= size]
    return [present[min(big_enough) if big_enough else max(present)]]


def _arrays(path: Path, problems: Problems) -> dict[str, np.ndarray] | None:
    try:
        with np.load(path, allow_pickle=False) as npz:
            return {key: npz[key] for key in npz.files}
    except FileNotFoundError:
        problems.add(path, "file", f"{path.name} not found; put the DermaMNIST files in {path.parent}, "
                                   f"laid out as:\n{LAYOUT}")
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as error:
        problems.add(path, "file", f"unreadable or corrupt .npz ({error})")
    return None


def _check_split(arrays: dict, split: str, path: Path, problems: Problems) -> bool:
    before = len(problems)
    images, labels = arrays.get(f"{split}_images"), arrays.get(f"{split}_labels")
    for key, value in ((f"{split}_images", images), (f"{split}_labels", labels)):
        if value is None:
            problems.add(path, key, f"key {key!r} missing from {path.name}; "
                                    f"keys found: {', '.join(sorted(arrays))}")
    if images is None or labels is None:
        return False
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3:
        problems.add(path, f"{split}_images",
                     f"expected uint8 (N, H, W, 3), got {images.dtype} {images.shape}")
    labels = labels.reshape(len(labels), -1)
    if labels.shape != (len(images), 1):
        problems.add(path, f"{split}_labels", f"expected ({len(images)}, 1) labels, got {labels.shape}")
    elif len(labels) and (labels.min() < 0 or labels.max() >= len(CLASSES)):
        problems.add(path, f"{split}_labels", f"labels must be 0..{len(CLASSES) - 1}, "
                                              f"found {labels.min()}..{labels.max()}")
    return len(problems) == before


def read_dermamnist(root: Path, problems: Problems, size: int | None = None,
                    resolution: int | None = None) -> Catalogue | None:
    """`resolution` picks a file (28, 64, 128, 224); by default the smallest one at least `size`."""
    if not check_root(root, problems, "DermaMNIST", LAYOUT):
        return None
    catalogue = None
    for path in pick_file(root, size, resolution):
        arrays = _arrays(path, problems)
        if arrays is None:
            continue
        ok = [_check_split(arrays, split, path, problems) for split in SPLITS]
        if all(ok) and catalogue is None:
            catalogue = _catalogue(arrays)
    return catalogue


def _catalogue(arrays: dict[str, np.ndarray]) -> Catalogue:
    pixels, labels, splits, ids = [], [], [], []
    for split in SPLITS:
        images = arrays[f"{split}_images"]
        pixels.append(images)
        labels.append(arrays[f"{split}_labels"].reshape(-1).astype(np.int64))
        splits += [split] * len(images)
        ids += [f"{split}_{i:05d}" for i in range(len(images))]
    labels = np.concatenate(labels)
    conditions = [CLASSES[i] for i in labels]
    table = make_table({
        "image_id": ids, "condition": conditions, "label": labels, "split": splits,
        "malignant": pd.array([c in MALIGNANT for c in conditions], dtype="boolean"),
        # position inside the file's own split arrays, to find an image in the original .npz
        "dermamnist_index": np.concatenate([np.arange(len(p)) for p in pixels]),
    })
    return Catalogue(table, CLASSES, pixels=np.concatenate(pixels))
