"""Readers for real dermatology datasets, read from a folder the user provides (nothing is downloaded).

    data = load_source("ham10000", "/data/HAM10000", image_size=64)      # -> SkinData
    problems = verify("ham10000", "/data/HAM10000")                     # -> every Problem, in one pass
    table = read_records("ham10000", "/data/HAM10000")                  # -> record table, no pixels decoded

Every source gives the record table of `dermgan.data.dataset` (RECORD_COLUMNS, plus `image_path`,
`mask_path` where there are files, and a few dataset-specific columns). Images are centre-cropped to a square
and resized to image_size x image_size; masks the same way with nearest neighbour. The expected folder
layouts are in `SOURCES[name].layout` and docs/real_datasets.md.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from dermgan.data.dataset import SkinData
from dermgan.data.sources import challenges, dermamnist, tabular
from dermgan.data.sources.common import SPLIT_SEED, Catalogue, Problem, Problems, SourceError, grouped_split
from dermgan.data.sources.imaging import materialise

__all__ = [
    "SOURCES",
    "SPLIT_SEED",
    "Problem",
    "Source",
    "SourceError",
    "grouped_split",
    "load_source",
    "read_records",
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


def _catalogue(name: str, root, size: int | None, options: dict) -> tuple[Catalogue | None, Problems]:
    source = get_source(name)
    if root is None:
        raise ValueError(f"dataset {name!r} is read from a folder: pass data_root, the folder laid out as:\n"
                         f"{source.layout}")
    problems = Problems()
    catalogue = source.read(Path(root).expanduser(), problems, size, **options)
    if catalogue is not None and len(catalogue.table) == 0 and not len(problems):
        problems.add(root, "images", "no images found")
    return catalogue, problems


def verify(name: str, root, **options) -> list[Problem]:
    """Every problem with the dataset at `root`: files, columns, values, unreadable images, mask sizes.

    Decodes every image and mask once and keeps nothing; an empty list means `load_source` will succeed.
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


def load_source(name: str, root, image_size: int, **options) -> SkinData:
    """The dataset at `root` as SkinData with image_size x image_size images.

    Options: `masks=False` ignores mask folders, `masks=True` demands them; DermaMNIST takes
    `resolution=28|64|128|224`; "folder" takes csv=, image_column=, label_column=, mask_column=, id_column=,
    patient_column=, lesion_column=, malignant_column=, fitzpatrick_column=, split_column=, classes=.
    Raises SourceError listing the problems (the first 10 and a count) when anything is wrong.
    """
    if not isinstance(image_size, int) or isinstance(image_size, bool) or image_size < 1:
        raise ValueError(f"image_size must be a positive int, got {image_size!r}")
    catalogue, problems = _catalogue(name, root, image_size, options)
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
