"""The common in-memory form of every dataset, synthetic or real: uint8 arrays plus one record table."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

# Columns every record table has. Unknown values are NA (Fitzpatrick type, ITA, masks of real datasets).
RECORD_COLUMNS = (
    "image_id",      # str, unique
    "condition",     # str, the dataset's own class name
    "label",         # int, index into SkinData.classes
    "malignant",     # bool (NA where the source does not say)
    "fitzpatrick",   # Int64 1..6 (NA unknown)
    "ita",           # float, individual typology angle in degrees (NA unknown)
    "lesion_area",   # float, lesion pixels / image pixels (NA without a mask)
    "centroid_x",    # float in [0, 1], lesion centroid, x = column / width (NA without a mask)
    "centroid_y",    # float in [0, 1]
    "skin_r", "skin_g", "skin_b",  # float 0..255, mean healthy-skin colour (NA unknown)
    "patient_id",    # str (NA unknown); splits never separate one patient's / lesion's images
    "lesion_id",     # str (NA unknown)
    "split",         # "train" | "val" | "test"
)


@dataclass
class SkinData:
    """Images and everything known about them; row i of `table` describes image i."""

    name: str  # "synthetic" or the source's name, e.g. "ham10000"
    classes: tuple[str, ...]  # class names, index = `label`
    images: np.ndarray  # uint8 (N, H, W, 3)
    lesion_masks: np.ndarray | None  # uint8 (N, H, W) in {0, 1}; None when the source has no masks
    skin_masks: np.ndarray | None  # uint8 (N, H, W) in {0, 1}; None when unknown
    table: pd.DataFrame
    healthy: np.ndarray | None = None  # uint8 (N, H, W, 3): the same skin without its lesion (synthetic only)

    def __post_init__(self) -> None:
        n = len(self.images)
        if len(self.table) != n:
            raise ValueError(f"{self.name}: {n} images but {len(self.table)} table rows")
        missing = [c for c in RECORD_COLUMNS if c not in self.table.columns]
        if missing:
            raise ValueError(f"{self.name}: record table lacks columns {missing}")
        for field in ("lesion_masks", "skin_masks", "healthy"):
            array = getattr(self, field)
            if array is not None and len(array) != n:
                raise ValueError(f"{self.name}: {field} has {len(array)} entries for {n} images")

    def __len__(self) -> int:
        return len(self.images)

    @property
    def image_size(self) -> int:
        return int(self.images.shape[1])

    def select(self, rows: np.ndarray | list[int]) -> "SkinData":
        """The subset at the given row positions (table index reset)."""
        rows = np.asarray(rows, dtype=np.int64)

        def take(array):
            return None if array is None else array[rows]

        return SkinData(self.name, self.classes, take(self.images), take(self.lesion_masks),
                        take(self.skin_masks), self.table.iloc[rows].reset_index(drop=True), take(self.healthy))

    def split(self, name: str) -> "SkinData":
        """One of the fixed splits: "train", "val" or "test"."""
        if name not in ("train", "val", "test"):
            raise ValueError(f"unknown split {name!r}; use 'train', 'val' or 'test'")
        return self.select(np.flatnonzero(self.table["split"].to_numpy() == name))


# ---------------------------------------------------------------------------------------------------------
# Assembly of the synthetic dataset, its on-disk cache, and the torch view used by classifiers
# ---------------------------------------------------------------------------------------------------------

_ARRAYS = ("images", "lesion_masks", "skin_masks", "healthy")


def _check_parameters(image_size, n_images, val_fraction, test_fraction) -> None:
    from dermgan.data.synth import check_size

    check_size(image_size)
    if isinstance(n_images, bool) or not isinstance(n_images, (int, np.integer)) or n_images < 1:
        raise ValueError(f"n_images must be a positive integer, got {n_images!r}")
    for name, value in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
        if not (isinstance(value, (int, float)) and 0.0 <= value < 1.0):
            raise ValueError(f"{name} must be a number in [0, 1), got {value!r}")
    if val_fraction + test_fraction >= 1.0:
        raise ValueError(f"val_fraction + test_fraction = {val_fraction + test_fraction} leaves no training "
                         "images; it must be below 1")


def stratified_split(labels: np.ndarray, val_fraction: float, test_fraction: float, seed: int) -> np.ndarray:
    """"train"/"val"/"test" per row: in every class, round(fraction * class size) rows go to val and test.

    Depends only on (labels, fractions, seed). Every class with at least 3 images has all three splits.
    """
    labels = np.asarray(labels)
    split = np.full(len(labels), "train", dtype=object)
    rng = np.random.default_rng([seed, 7])
    for label in np.unique(labels):
        rows = rng.permutation(np.flatnonzero(labels == label))
        n = len(rows)
        n_val, n_test = int(round(val_fraction * n)), int(round(test_fraction * n))
        if n >= 3:  # the rare classes are the interesting ones: never leave a split without them
            n_val = max(n_val, 1) if val_fraction > 0 else 0
            n_test = max(n_test, 1) if test_fraction > 0 else 0
        n_val, n_test = min(n_val, n), min(n_test, n - min(n_val, n))
        split[rows[:n_val]] = "val"
        split[rows[n_val:n_val + n_test]] = "test"
    return split


def make_synthetic(image_size: int = 64, n_images: int = 4000, seed: int = 0, val_fraction: float = 0.15,
                   test_fraction: float = 0.15, workers: int | None = None, progress=None) -> SkinData:
    """Render the synthetic dataset in memory (no cache): class counts follow the prevalences."""
    from dermgan.data.conditions import CONDITION_NAMES
    from dermgan.data.synth import dataset_conditions, records_frame, render_images

    _check_parameters(image_size, n_images, val_fraction, test_fraction)
    labels = dataset_conditions(n_images, seed)
    rendered = render_images(range(n_images), labels, image_size, seed, workers=workers, progress=progress)
    table = records_frame(rendered["records"])
    table.insert(0, "image_id", [f"syn{seed}_{i:06d}" for i in range(n_images)])
    table["patient_id"] = [f"synp{seed}_{i:06d}" for i in range(n_images)]  # one synthetic patient per image
    table["lesion_id"] = [f"synl{seed}_{i:06d}" for i in range(n_images)]
    table["split"] = stratified_split(labels, val_fraction, test_fraction, seed)
    columns = list(RECORD_COLUMNS) + [c for c in table.columns if c not in RECORD_COLUMNS]
    return SkinData("synthetic", CONDITION_NAMES, rendered["images"], rendered["lesion_masks"],
                    rendered["skin_masks"], table[columns], rendered["healthy"])


def cache_key(params: dict) -> str:
    """Folder name of a cached dataset: a hash of everything that decides its bytes."""
    import hashlib
    import json

    from dermgan.data.synth import RENDERER_VERSION

    text = json.dumps({**params, "renderer_version": RENDERER_VERSION}, sort_keys=True)
    return f"{params['dataset']}-{params['image_size']}px-{params['n_images']}-" + \
        hashlib.sha256(text.encode()).hexdigest()[:12]


def _write_cache(data: SkinData, folder, params: dict) -> None:
    """Write atomically: everything goes into a temporary sibling folder that is renamed at the end."""
    import json
    import os
    import shutil
    import tempfile
    from pathlib import Path

    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    # named by process, so that the next start can remove it if this process is killed (remove_stale_temps)
    temp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.tmp-{os.getpid()}-", dir=folder.parent))
    try:
        for name in _ARRAYS:
            np.save(temp / f"{name}.npy", getattr(data, name))
        data.table.to_csv(temp / "table.csv", index=False)
        record = {**params, "classes": list(data.classes)}
        (temp / "params.json").write_text(json.dumps(record, indent=2) + "\n")
        try:
            os.rename(temp, folder)
        except OSError:
            if not (folder / "params.json").exists():  # not a concurrent writer that won the race
                raise
            shutil.rmtree(temp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(temp, ignore_errors=True)
        raise


def _read_cache(folder) -> SkinData:
    import json
    from pathlib import Path

    folder = Path(folder)
    params = json.loads((folder / "params.json").read_text())
    arrays = {}
    for name in _ARRAYS:
        path = folder / f"{name}.npy"
        if not path.exists():
            raise FileNotFoundError(f"dataset cache {folder} lacks {path.name}; "
                                    "delete the folder to re-render")
        arrays[name] = np.load(path, mmap_mode="r")
    table = pd.read_csv(folder / "table.csv", dtype={"image_id": str, "condition": str, "patient_id": str,
                                                     "lesion_id": str, "split": str})
    table["fitzpatrick"] = table["fitzpatrick"].astype("Int64")
    table["malignant"] = table["malignant"].astype(bool)
    return SkinData(params["dataset"], tuple(params["classes"]), arrays["images"], arrays["lesion_masks"],
                    arrays["skin_masks"], table, arrays["healthy"])


def load_dataset(dataset: str = "synthetic", data_root=None, image_size: int = 64, n_images: int = 4000,
                 seed: int = 0, cache_dir=None, val_fraction: float = 0.15,
                 test_fraction: float = 0.15) -> SkinData:
    """The dataset a notebook works on, as SkinData.

    "synthetic": the procedural dataset (dermgan.data.synth), rendered once and cached under
    `cache_dir`/<hash of the parameters>/ as memory-mapped uint8 .npy files plus table.csv; without cache_dir
    it is rendered in memory. Any other name is handed to dermgan.data.sources.load_source(dataset, data_root,
    image_size), which reads real data with its own fixed splits.
    """
    from pathlib import Path

    if dataset != "synthetic":
        from dermgan.data.sources import load_source  # lazy: real-data readers are optional

        return load_source(dataset, data_root, image_size)
    _check_parameters(image_size, n_images, val_fraction, test_fraction)
    if cache_dir is None:
        return make_synthetic(image_size, n_images, seed, val_fraction, test_fraction)
    params = {"dataset": dataset, "image_size": int(image_size), "n_images": int(n_images), "seed": int(seed),
              "val_fraction": float(val_fraction), "test_fraction": float(test_fraction)}
    folder = Path(cache_dir) / cache_key(params)
    from dermgan.train import remove_stale_temps  # lazy: the loop module imports torch

    remove_stale_temps(cache_dir)  # half-written caches of killed runs
    if not (folder / "params.json").exists():
        _write_cache(make_synthetic(image_size, n_images, seed, val_fraction, test_fraction), folder, params)
    return _read_cache(folder)


def load_for_run(ctx) -> SkinData:
    """load_dataset with everything taken from a dermgan.runtime.RunContext; cached in <run_dir>/data."""
    cfg = ctx.profile.data
    return load_dataset(ctx.dataset, ctx.data_root, image_size=cfg.image_size, n_images=cfg.n_images,
                        seed=ctx.seed, cache_dir=ctx.run_dir / "data", val_fraction=cfg.val_fraction,
                        test_fraction=cfg.test_fraction)


# The four flip variants of an image: index = horizontal + 2 * vertical; the image dimensions (of a (3, H, W)
# tensor) each flips.
FLIP_VARIANTS = ((), (2,), (1,), (2, 1))


def flip_variant(seed: int, epoch: int, index: int) -> int:
    """Which flip variant item `index` gets in `epoch` (each flip with probability 1/2): a pure function of
    the three, so that the augmentation does not depend on the data loader's workers and a cache of the four
    variants' features reproduces it exactly."""
    horizontal, vertical = np.random.default_rng([seed, epoch, int(index)]).random(2) < 0.5
    return int(horizontal) + 2 * int(vertical)


class ClassifierDataset:
    """A torch Dataset over SkinData: (float32 image (3, H, W) in [-1, 1], int label), optional random flips
    (flip_variant); call `set_epoch` to change them between epochs.
    """

    def __init__(self, data: SkinData, augment: bool = False, seed: int = 0, transform=None):
        self.images = data.images
        self.labels = data.table["label"].to_numpy(dtype=np.int64)
        self.augment, self.seed, self.epoch = augment, seed, 0
        self.transform = transform  # (image, numpy Generator) -> image, after the flips

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int):
        import torch

        from dermgan.imageops import to_model

        image = to_model(np.array(self.images[index]))[0]  # a copy: cached arrays are read-only memmaps
        if self.augment:
            dims = FLIP_VARIANTS[flip_variant(self.seed, self.epoch, index)]
            if dims:
                image = torch.flip(image, dims)
        if self.transform is not None:
            image = self.transform(image, np.random.default_rng([self.seed, self.epoch, int(index), 1]))
        return image, int(self.labels[index])
