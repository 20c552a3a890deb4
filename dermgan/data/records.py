"""The common in-memory form of every dataset, synthetic or real: uint8 arrays plus one record table.

Everything under dermgan.data builds or reads SkinData; this module imports nothing of dermgan, so the
synthetic assembly (dataset.py) and the real-data readers (sources/) both depend on it and not on each other.
"""

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
