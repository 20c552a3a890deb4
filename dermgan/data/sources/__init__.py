"""Readers for real dermatology datasets, read from a folder the user provides (nothing is downloaded).

    data = load_source("ham10000", "/data/HAM10000", image_size=64)      # -> SkinData
    problems = verify("ham10000", "/data/HAM10000")                     # -> every Problem, in one pass
    table = read_records("ham10000", "/data/HAM10000")                  # -> record table, no pixels decoded
    summary = split_summary("ham10000", "/data/HAM10000", n_images=400)  # -> images per class and split

Every source gives the record table of `dermgan.data.records` (RECORD_COLUMNS, plus `image_path`,
`mask_path` where there are files, and a few dataset-specific columns). Images are centre-cropped to a square
and resized to image_size x image_size; masks the same way with nearest neighbour. The expected folder
layouts are in `SOURCES[name].layout` and docs/real_datasets.md.

The four functions take the same options, so that a check made up front (`split_summary`, `verify`) sees the
data `load_source` will load: the run's data settings `n_images` (at most this many images: a stratified
subsample of a larger dataset), `val_fraction` and `test_fraction` (the shares of the splits a dataset does
not ship itself; None or the default 0.15 leaves a shipped split as it is, another value for it is
refused), and `mask_threshold` (how masks with more than two values are binarised), plus the reader's own
options.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from dermgan.data.records import SkinData
from dermgan.data.sources import challenges, dermamnist, tabular
from dermgan.data.sources.common import Catalogue, Problem, Problems, SourceError
from dermgan.data.sources.imaging import check_threshold, header_side, materialise
from dermgan.data.splits import (
    DEFAULT_FRACTIONS,
    MIN_CLASS_IMAGES,
    SPLIT_SEED,
    SPLITS,
    assign_splits,
    check_settings,
    grouped_split,
    split_groups,
    subsample,
)

__all__ = [
    "SOURCES",
    "SPLIT_SEED",
    "Problem",
    "Source",
    "SourceError",
    "SplitSummary",
    "grouped_split",
    "image_side",
    "load_source",
    "read_records",
    "split_summary",
    "verify",
]


@dataclass(frozen=True)
class Source:
    name: str
    title: str
    layout: str  # expected folder tree
    read: Callable[..., Catalogue | None]  # (root, problems, size, **options)


def _table_reader(spec: tabular.TableSpec):
    def read(root: Path, problems: Problems, size: int | None = None, masks: bool | None = None):
        return tabular.read_table(spec, root, problems, masks=masks)
    return read


def _challenge_reader(spec: challenges.ChallengeSpec):
    def read(root: Path, problems: Problems, size: int | None = None, masks: bool | None = None):
        return challenges.read_challenge(spec, root, problems, masks=masks)
    return read


def _folder_reader(root: Path, problems: Problems, size: int | None = None, masks: bool | None = None,
                   **columns):
    """The generic folder: CSV and column names come from the caller (see tabular.folder_spec)."""
    return tabular.read_table(tabular.folder_spec(**columns), root, problems, masks=masks)


def _registry() -> dict[str, Source]:
    sources = {}
    for spec in (tabular.HAM10000, challenges.ISIC2017, challenges.ISIC2018_TASK1, challenges.ISIC2018_TASK3,
                 challenges.ISIC2019, tabular.ISIC2020, tabular.FITZPATRICK17K, tabular.DDI):
        reader = _table_reader(spec) if isinstance(spec, tabular.TableSpec) else _challenge_reader(spec)
        sources[spec.name] = Source(spec.name, spec.title, spec.layout, reader)
    sources["dermamnist"] = Source("dermamnist", "DermaMNIST (MedMNIST v2)", dermamnist.LAYOUT,
                                   dermamnist.read_dermamnist)
    sources["folder"] = Source("folder", "image folder + CSV", tabular.FOLDER_LAYOUT, _folder_reader)
    return sources


SOURCES: dict[str, Source] = _registry()


def get_source(name: str) -> Source:
    if name not in SOURCES:
        raise ValueError(f"unknown dataset {name!r}; known real datasets: {', '.join(SOURCES)}")
    return SOURCES[name]


SETTINGS = ("n_images", "val_fraction", "test_fraction")


def _catalogue(name: str, root, size: int | None, options: dict) -> tuple[Catalogue | None, Problems]:
    """What the reader finds, with the splits and subsample the settings in `options` ask for."""
    source = get_source(name)
    if root is None:
        raise ValueError(f"dataset {name!r} is read from a folder: pass data_root, the folder laid out as:\n"
                         f"{source.layout}")
    settings = {key: options.pop(key, None) for key in SETTINGS}
    check_settings(**settings)
    threshold = check_threshold(options.pop("mask_threshold", None))
    problems = Problems()
    catalogue = source.read(Path(root).expanduser(), problems, size, **options)
    if catalogue is None:
        return None, problems
    if len(catalogue.table) == 0:
        if not len(problems):
            problems.add(root, "images", "no images found")
        return catalogue, problems
    if threshold is not None:
        catalogue.mask_threshold = threshold
    return settle_splits(name, root, catalogue, problems, **settings), problems


def settle_splits(name: str, root, catalogue: Catalogue, problems: Problems, n_images: int | None = None,
                  val_fraction: float | None = None, test_fraction: float | None = None) -> Catalogue:
    """Keep the splits the dataset ships, carve the missing ones by class and group, then subsample.

    A fraction equal to the default (every profile's 0.15) counts as not asked for, so that a run with the
    profile's settings keeps a shipped split; another value for a shipped split is a problem.
    """
    table = catalogue.table
    official = table["split"].to_numpy(dtype=object)
    catalogue.shipped = tuple(s for s in ("val", "test") if (official == s).any())
    asked = {s: v for s, v in (("val", val_fraction), ("test", test_fraction))
             if v is not None and v != DEFAULT_FRACTIONS[s]}
    for split in catalogue.shipped:
        if split in asked:
            problems.add(root, f"{split}_fraction",
                         f"{name} ships its own {split} split, so {split}_fraction={asked[split]} cannot "
                         f"apply; leave it at {DEFAULT_FRACTIONS[split]} (the default)")
    groups, labels = split_groups(table), table["label"].to_numpy()
    table["split"] = assign_splits(official, labels, groups, {**DEFAULT_FRACTIONS, **asked})
    if not (table["split"] == "train").any():
        found = ", ".join(f"{s}: {n}" for s, n in table["split"].value_counts().items())
        problems.add(root, "split", f"no training images: the dataset's own split puts every image in val or "
                                    f"test ({found}); mark some images train")
    if n_images is None or n_images >= len(table):
        return catalogue
    try:
        rows = subsample(labels, groups, table["split"].to_numpy(dtype=object), n_images)
    except ValueError as error:
        problems.add(root, "n_images", f"{name}: {error}")
        return catalogue
    return catalogue.select(rows)


@dataclass(frozen=True)
class SplitSummary:
    """A real dataset's images per class and split, as a run with the same settings would load them."""

    counts: pd.DataFrame  # index: the dataset's classes, columns: train, val, test
    shipped: tuple[str, ...]  # the val / test splits the dataset ships itself (no fraction applies to them)
    notes: tuple[str, ...]  # one line per class that misses a split (too few images, or too few groups)

    @property
    def n_images(self) -> int:
        return int(self.counts.to_numpy().sum())


def split_counts(catalogue: Catalogue) -> pd.DataFrame:
    """Images per class (rows, the dataset's class order) and split (columns train, val, test)."""
    table = catalogue.table
    counts = pd.crosstab(table["condition"], table["split"])
    return counts.reindex(index=list(catalogue.classes), columns=list(SPLITS), fill_value=0).astype(np.int64)


def sparse_classes(catalogue: Catalogue) -> tuple[str, ...]:
    """One line per class absent from a split that has images: it cannot be trained or measured there."""
    counts = split_counts(catalogue)
    used = [s for s in SPLITS if counts[s].sum() > 0]
    notes = []
    for name, row in counts.iterrows():
        missing = [s for s in used if row[s] == 0]
        if row.sum() == 0:
            notes.append(f"class {name!r} has no images")
        elif missing:
            notes.append(f"class {name!r} has {row.sum()} image(s), none in {' or '.join(missing)}")
    return tuple(notes)


def split_summary(name: str, root, **options) -> SplitSummary:
    """Images per class and split from the record table alone (no image decoded): what a run will get.

    Raises SourceError with every problem (files, columns, settings that cannot apply, no training images).
    """
    catalogue, problems = _catalogue(name, root, None, options)
    if len(problems) or catalogue is None:
        raise SourceError(name, root, problems.items)
    return SplitSummary(split_counts(catalogue), catalogue.shipped, sparse_classes(catalogue))


def verify(name: str, root, **options) -> list[Problem]:
    """Every problem with the dataset at `root`: files, columns, values, unreadable images, masks, splits.

    Decodes every image and mask `load_source` would load (with the same options) once and keeps nothing;
    an empty list means `load_source` will succeed.
    """
    catalogue, problems = _catalogue(name, root, None, options)
    if catalogue is not None:
        materialise(catalogue, None, problems)
    return list(problems.items)


def read_records(name: str, root, **options) -> pd.DataFrame:
    """The record table alone (paths, labels, ids, splits) without decoding images; mask statistics are NA."""
    catalogue, problems = _catalogue(name, root, None, options)
    if len(problems) or catalogue is None:
        raise SourceError(name, root, problems.items)
    return catalogue.table


def image_side(name: str, root, table: pd.DataFrame | None = None, **options) -> int:
    """The side of the largest square every image of the dataset holds without enlarging it (their smallest
    side), from the image headers alone; `table`: its record table when already read (read_records), else it is
    read with `options`. An in-memory source (DermaMNIST) gives its largest resolution. Raises SourceError with
    the reader's problems, ValueError when no image header can be read."""
    if table is None or "image_path" not in table:
        from dermgan.config import MAX_IMAGE_SIZE

        catalogue, problems = _catalogue(name, root, MAX_IMAGE_SIZE, options)  # DermaMNIST: its largest file
        if len(problems) or catalogue is None:
            raise SourceError(name, root, problems.items)
        if catalogue.pixels is not None:
            return int(min(catalogue.pixels.shape[1:3]))
        table = catalogue.table
    side = header_side(table["image_path"])
    if side is None:
        raise ValueError(f"{name}: no image under {root} can be opened; check the folder with "
                         "dermgan.data.sources.verify")
    return side


def load_source(name: str, root, image_size: int, **options) -> SkinData:
    """The dataset at `root` as SkinData with image_size x image_size images.

    Options: the data settings `n_images`, `val_fraction`, `test_fraction` and `mask_threshold` (see the
    module's docstring); `masks=False` ignores mask folders, `masks=True` demands them; DermaMNIST takes
    `resolution=28|64|128|224`; "folder" takes csv=, image_column=, label_column=, mask_column=, id_column=,
    patient_column=, lesion_column=, malignant_column=, fitzpatrick_column=, split_column=, classes=.
    Raises SourceError listing the problems (the first 10 and a count) when anything is wrong; a class that
    misses a split is a warning, given before any image is decoded.
    """
    if not isinstance(image_size, int) or isinstance(image_size, bool) or image_size < 1:
        raise ValueError(f"image_size must be a positive int, got {image_size!r}")
    catalogue, problems = _catalogue(name, root, image_size, options)
    notes = sparse_classes(catalogue) if catalogue is not None and not len(problems) else ()
    if notes:
        warnings.warn(f"{name}: {'; '.join(notes)} (a class needs {MIN_CLASS_IMAGES} images, of as many "
                      "patients or lesions, to reach every split)", stacklevel=2)
    images = masks = None
    if catalogue is not None:
        images, masks = materialise(catalogue, image_size, problems)
    if len(problems) or catalogue is None:
        raise SourceError(name, root, problems.items)
    data = SkinData(name=name, classes=tuple(catalogue.classes), images=images, lesion_masks=masks,
                    skin_masks=None, table=catalogue.table)
    if masks is not None:
        record_skin_colours(data)
    return data


def record_skin_colours(data: SkinData) -> None:
    """Fill skin_r/g/b of a dataset with lesion masks, and `skin_source`: how each colour was obtained.

    Measured once here, on the whole dataset, so that every split and notebook uses the same colours and the
    "dataset median" fallback is the median of the whole dataset. Without masks the whole image would be
    measured, lesion included, which is no skin colour: those tables keep NA. So does a dataset in which no
    image has usable skin; semantic maps of it are refused later, with the reason (loading still works).
    """
    from dermgan.data.semantic import fill_with_median, measure_skin_colours

    colours, sources = measure_skin_colours(data.images, data.lesion_masks, data.skin_masks)
    fill_with_median(colours, sources)
    data.table[["skin_r", "skin_g", "skin_b"]] = colours
    data.table["skin_source"] = pd.Series([s or None for s in sources], dtype=object)
