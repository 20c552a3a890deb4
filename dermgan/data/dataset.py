"""The dataset a notebook works on: the synthetic one (assembled, cached) or a real one (data.sources).

SkinData and RECORD_COLUMNS live in dermgan.data.records and the splits in dermgan.data.splits; both are
importable from here as before. This module is the only one that knows both kinds of data: it imports the
real-data readers, which import neither it nor the synthetic renderer.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from dermgan.data.records import RECORD_COLUMNS, SkinData
from dermgan.data.sources import load_source
from dermgan.data.splits import check_settings, stratified_split

__all__ = ["RECORD_COLUMNS", "ClassifierDataset", "SkinData", "load_dataset", "load_for_run",
           "make_synthetic", "stratified_split"]

# ---------------------------------------------------------------------------------------------------------
# Assembly of the synthetic dataset, its on-disk cache, and the torch view used by classifiers
# ---------------------------------------------------------------------------------------------------------

_ARRAYS = ("images", "lesion_masks", "skin_masks", "healthy")


def _check_parameters(image_size, n_images, val_fraction, test_fraction) -> None:
    from dermgan.data.synth import check_size

    check_size(image_size)
    if n_images is None:  # real data may leave it unset (all images); the synthetic dataset needs a number
        raise ValueError("n_images must be a positive integer, got None")
    check_settings(n_images, val_fraction, test_fraction)


def synthetic_labels_and_splits(n_images: int, seed: int, val_fraction: float,
                                test_fraction: float) -> tuple[np.ndarray, np.ndarray]:
    """Condition index and split of every image of the synthetic dataset, without rendering a pixel (the
    pipeline checks a run's data with them before anything runs)."""
    from dermgan.data.synth import dataset_conditions

    labels = dataset_conditions(n_images, seed)
    return labels, stratified_split(labels, val_fraction, test_fraction, seed)


def make_synthetic(image_size: int = 64, n_images: int = 4000, seed: int = 0, val_fraction: float = 0.15,
                   test_fraction: float = 0.15, workers: int | None = None, progress=None) -> SkinData:
    """Render the synthetic dataset in memory (no cache): class counts follow the prevalences."""
    from dermgan.data.conditions import CONDITION_NAMES
    from dermgan.data.synth import records_frame, render_images

    _check_parameters(image_size, n_images, val_fraction, test_fraction)
    labels, splits = synthetic_labels_and_splits(n_images, seed, val_fraction, test_fraction)
    rendered = render_images(range(n_images), labels, image_size, seed, workers=workers, progress=progress)
    table = records_frame(rendered["records"])
    table.insert(0, "image_id", [f"syn{seed}_{i:06d}" for i in range(n_images)])
    table["patient_id"] = [f"synp{seed}_{i:06d}" for i in range(n_images)]  # one synthetic patient per image
    table["lesion_id"] = [f"synl{seed}_{i:06d}" for i in range(n_images)]
    table["split"] = splits
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


_CACHE_FILES = tuple(f"{name}.npy" for name in _ARRAYS) + ("table.csv", "params.json")  # params.json last


def _write_cache(data: SkinData, folder, params: dict) -> None:
    """Write atomically: everything goes into a temporary sibling folder that is renamed at the end. Every
    file carries its SHA-256 (dermgan.integrity), checked by _read_cache."""
    import json
    import os
    import shutil
    import tempfile
    from pathlib import Path

    from dermgan.integrity import write_with_digest

    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    # named by process, so that the next start can remove it if this process is killed (remove_stale_temps)
    temp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.tmp-{os.getpid()}-", dir=folder.parent))
    try:
        for name in _ARRAYS:
            write_with_digest(temp / f"{name}.npy", lambda f, array=getattr(data, name): np.save(f, array))
        table = data.table.to_csv(index=False).encode()
        write_with_digest(temp / "table.csv", lambda f: f.write(table))
        record = json.dumps({**params, "classes": list(data.classes)}, indent=2) + "\n"
        write_with_digest(temp / "params.json", lambda f: f.write(record.encode()))
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
    """The cached dataset, after checking every file against its SHA-256; a damaged, incomplete or older cache
    is an IntegrityError naming the file and the way out (delete the folder: it is built again)."""
    import json
    from pathlib import Path

    from dermgan.integrity import IntegrityError, verify_digest

    folder = Path(folder)
    remedy = f"delete the dataset cache {folder} (the next notebook builds it again), or restore a good copy"
    for name in _CACHE_FILES:
        if not (folder / name).is_file():
            raise IntegrityError(f"dataset cache {folder} lacks {name} (damaged, or left by an older "
                                 f"version); {remedy}")
        verify_digest(folder / name, remedy)
    params = json.loads((folder / "params.json").read_text())
    arrays = {name: np.load(folder / f"{name}.npy", mmap_mode="r") for name in _ARRAYS}
    table = pd.read_csv(folder / "table.csv", dtype={"image_id": str, "condition": str, "patient_id": str,
                                                     "lesion_id": str, "split": str})
    table["fitzpatrick"] = table["fitzpatrick"].astype("Int64")
    table["malignant"] = table["malignant"].astype(bool)
    return SkinData(params["dataset"], tuple(params["classes"]), arrays["images"], arrays["lesion_masks"],
                    arrays["skin_masks"], table, arrays["healthy"])


def load_dataset(dataset: str = "synthetic", data_root=None, image_size: int = 64, n_images: int | None = 4000,
                 seed: int = 0, cache_dir=None, val_fraction: float = 0.15,
                 test_fraction: float = 0.15) -> SkinData:
    """The dataset a notebook works on, as SkinData.

    "synthetic": the procedural dataset (dermgan.data.synth), rendered once and cached under
    `cache_dir`/<hash of the parameters>/ as memory-mapped uint8 .npy files plus table.csv, each with its
    SHA-256 (checked on every load); without cache_dir it is rendered in memory. Any other name is read by
    dermgan.data.sources.load_source with the same settings: at most `n_images` images (a stratified subsample of
    a larger dataset) and the fractions for the splits the dataset does not ship itself (see
    docs/real_datasets.md). Real splits do not depend on `seed`.
    """
    from pathlib import Path

    if dataset != "synthetic":
        return load_source(dataset, data_root, image_size, n_images=n_images, val_fraction=val_fraction,
                           test_fraction=test_fraction)
    _check_parameters(image_size, n_images, val_fraction, test_fraction)
    if cache_dir is None:
        return make_synthetic(image_size, n_images, seed, val_fraction, test_fraction)
    params = {"dataset": dataset, "image_size": int(image_size), "n_images": int(n_images), "seed": int(seed),
              "val_fraction": float(val_fraction), "test_fraction": float(test_fraction)}
    folder = Path(cache_dir) / cache_key(params)
    from dermgan.train import remove_stale_temps  # lazy: the loop module imports torch

    remove_stale_temps(cache_dir)  # half-written caches of killed runs
    if not folder.exists():  # one without params.json is damaged: _read_cache says so, nothing overwrites it
        from dermgan.runtime import progress  # a bar while rendering (silent in batch runs)

        def bar(items, **options):
            return progress(items, desc="rendering images", leave=False, **options)

        rendered = make_synthetic(image_size, n_images, seed, val_fraction, test_fraction, progress=bar)
        _write_cache(rendered, folder, params)
    return _read_cache(folder)


def load_for_run(ctx) -> SkinData:
    """load_dataset with everything taken from a dermgan.runtime.RunContext; cached in <run_dir>/data. A real
    dataset is capped by the profile's `real_images` (None: all of it), the synthetic one has `n_images`."""
    cfg = ctx.profile.data
    n_images = cfg.n_images if ctx.dataset == "synthetic" else cfg.real_images
    return load_dataset(ctx.dataset, ctx.data_root, image_size=cfg.image_size, n_images=n_images,
                        seed=ctx.seed, cache_dir=ctx.run_dir / "data", val_fraction=cfg.val_fraction,
                        test_fraction=cfg.test_fraction)


class ClassifierDataset:
    """A torch Dataset over SkinData: (float32 image (3, H, W) in [-1, 1], int label), optional random flips.

    Flips use a torch.Generator seeded per item from (seed, epoch, index), so an epoch's augmentation does not
    depend on the data loader's workers; call `set_epoch` to change them between epochs.
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
            flips = np.random.default_rng([self.seed, self.epoch, int(index)]).random(2) < 0.5
            dims = [d for d, flip in zip((2, 1), flips) if flip]  # horizontal (W), vertical (H)
            if dims:
                image = torch.flip(image, dims)
        if self.transform is not None:
            image = self.transform(image, np.random.default_rng([self.seed, self.epoch, int(index), 1]))
        return image, int(self.labels[index])
