"""Pieces every reader shares: problem collection, finding files, reading CSVs, parsing flags.

Readers never raise on bad input while they look at a dataset: they add a `Problem` and carry on, so that
`verify` can report everything wrong with a folder in one pass. `load_source` raises once at the end.
"""

from __future__ import annotations

import filecmp
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from dermgan.data.records import RECORD_COLUMNS

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff")
MAX_LISTED = 10  # problems spelled out in a load error; the rest are counted


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a dataset folder: which file, which field (column, key or kind), what is wrong."""

    path: str
    field: str
    message: str

    def __str__(self) -> str:
        return f"{self.path} [{self.field}]: {self.message}"


class SourceError(ValueError):
    """A dataset folder that cannot be loaded; `problems` holds every problem found."""

    def __init__(self, name: str, root: str | Path, problems: list[Problem]):
        self.problems = list(problems)
        shown = "\n".join(f"  - {p}" for p in self.problems[:MAX_LISTED])
        more = len(self.problems) - MAX_LISTED
        tail = f"\n  ... and {more} more (dermgan.data.sources.verify lists them all)" if more > 0 else ""
        super().__init__(f"{name}: {len(self.problems)} problem(s) in {root}:\n{shown}{tail}")


@dataclass
class Problems:
    """Collects problems in the order they are found."""

    items: list[Problem] = field(default_factory=list)

    def add(self, path: str | Path, field_: str, message: str) -> None:
        self.items.append(Problem(str(path), field_, message))

    def extend(self, others: list[Problem]) -> None:
        self.items.extend(others)

    def __len__(self) -> int:
        return len(self.items)


@dataclass
class Catalogue:
    """What a reader found before any pixel is decoded.

    `table` has every RECORD_COLUMNS column (mask statistics still NA) plus `image_path` and, for sources with
    masks, `mask_path`. In-memory sources (DermaMNIST) give `pixels` instead of paths.
    """

    table: pd.DataFrame
    classes: tuple[str, ...]
    pixels: np.ndarray | None = None
    # Masks with more than two values: lesion = value >= this share of the full scale (None: refused).
    mask_threshold: float | None = None
    shipped: tuple[str, ...] = ()  # the val / test splits the dataset ships itself (set with the splits)

    @property
    def has_masks(self) -> bool:
        return "mask_path" in self.table.columns

    def select(self, rows: np.ndarray) -> "Catalogue":
        """The records at the given row positions (table index reset)."""
        pixels = None if self.pixels is None else self.pixels[rows]
        table = self.table.iloc[rows].reset_index(drop=True)
        return Catalogue(table, self.classes, pixels, self.mask_threshold, self.shipped)


# ----------------------------------------------------------------------------------------------- files

def missing_folder(problems: Problems, folder: Path, title: str, layout: str) -> None:
    problems.add(folder, "folder", f"folder not found; put the {title} files here, laid out as:\n{layout}")


def check_root(root: Path, problems: Problems, title: str, layout: str) -> bool:
    if root.is_dir():
        return True
    missing_folder(problems, root, title, layout)
    return False


def find_file(root: Path, names: tuple[str, ...]) -> Path | None:
    """The first of `names` found in `root` or in a folder named after the file (how ISIC zips unpack)."""
    for name in names:
        for candidate in (root / name, root / Path(name).stem / name):
            if candidate.is_file():
                return candidate
    return None


def index_images(folders: list[Path]) -> dict[str, list[Path]]:
    """File name and stem -> every image file of that name in `folders` (not recursive), in folder order."""
    index: dict[str, list[Path]] = {}
    for folder in folders:
        for path in sorted(folder.iterdir()):
            if path.suffix.lower() in IMAGE_SUFFIXES and path.is_file():
                for key in {path.name, path.stem}:
                    index.setdefault(key, []).append(path)
    return index


def different_copies(paths: list[Path]) -> list[Path]:
    """The files among `paths[1:]` whose bytes differ from `paths[0]`'s. Byte-identical copies are harmless
    (Kaggle's HAM10000 ships every image in an upper- and a lower-case folder); any other one is ambiguous."""
    return [p for p in paths[1:] if not filecmp.cmp(paths[0], p, shallow=False)]


def existing(root: Path, names: tuple[str, ...]) -> list[Path]:
    return [root / n for n in names if (root / n).is_dir()]


def clean_text(values: pd.Series) -> pd.Series:
    """Stripped strings; empty cells become None."""
    cleaned = [None if pd.isna(v) or str(v).strip() == "" else str(v).strip() for v in values]
    return pd.Series(cleaned, index=values.index, dtype=object)


def resolve_images(values: pd.Series, root: Path, folders: list[Path], csv: Path, column: str,
                    problems: Problems) -> pd.Series:
    """Path of each listed image: a path relative to the root, else a file name or stem in the folders."""
    index = index_images(folders)
    where = ", ".join(f"{f.relative_to(root)}/" for f in folders)
    paths = []
    for row, value in values.items():
        direct = root / value if value else None
        if direct is not None and direct.is_file():
            paths.append(str(direct))
        elif value in index:
            found = index[value]
            others = different_copies(found)
            for other in others:
                problems.add(csv, column, f"image {value!r} (CSV line {row + 2}) is both {found[0]} and "
                                          f"{other}, with different content; keep the right one")
            paths.append(None if others else str(found[0]))
        else:
            problems.add(csv, column, f"image {value!r} (CSV line {row + 2}) is listed but not found "
                                      f"in {where}")
            paths.append(None)
    return pd.Series(paths, index=values.index, dtype=object)



# ------------------------------------------------------------------------------------------------ CSVs

def read_csv(path: Path, problems: Problems) -> pd.DataFrame | None:
    """All cells as strings (ids such as DDI's 000001 keep their zeros); header names stripped."""
    try:
        frame = pd.read_csv(path, dtype=str, sep="\t" if path.suffix == ".tab" else ",")
    except (OSError, ValueError, UnicodeDecodeError, pd.errors.ParserError) as error:
        problems.add(path, "file", f"cannot read CSV ({error})")
        return None
    frame.columns = [str(c).strip() for c in frame.columns]
    return frame


def pick_column(frame: pd.DataFrame, path: Path, names: tuple[str, ...], problems: Problems,
                required: bool = True) -> str | None:
    """The first of `names` present in the CSV; a problem naming the column, the file and what was found."""
    for name in names:
        if name in frame.columns:
            return name
    if required:
        wanted = " or ".join(repr(n) for n in names)
        problems.add(path, names[0], f"column {wanted} missing from {path.name}; "
                                     f"columns found: {', '.join(map(str, frame.columns))}")
    return None


def duplicates(ids: pd.Series, path: Path, column: str, problems: Problems) -> None:
    for value in sorted(set(ids[ids.duplicated()].dropna())):
        problems.add(path, column, f"{value!r} appears more than once in {path.name}")


# ----------------------------------------------------------------------------------------------- values

_TRUE = {"1", "1.0", "true", "malignant", "yes", "y"}
_FALSE = {"0", "0.0", "false", "benign", "non-neoplastic", "no", "n"}


def parse_flag(values: pd.Series, path: Path, column: str, problems: Problems) -> pd.Series:
    """Malignancy flags written as 1/0, True/False or malignant/benign; anything else is a problem."""
    out = []
    for row, value in values.items():
        text = str(value).strip().lower()
        if pd.isna(value) or text == "":
            out.append(pd.NA)
        elif text in _TRUE or text in _FALSE:
            out.append(text in _TRUE)
        else:
            problems.add(path, column, f"line {row + 2}: cannot read {value!r} as malignant/benign")
            out.append(pd.NA)
    return pd.Series(pd.array(out, dtype="boolean"), index=values.index)


def parse_fitzpatrick(values: pd.Series, path: Path, column: str, problems: Problems) -> pd.Series:
    """Fitzpatrick types 1..6; empty or -1 (Fitzpatrick17k's "unknown") become NA."""
    numbers = pd.to_numeric(values, errors="coerce")
    bad = values.notna() & (numbers.isna() | ~numbers.isin([-1, 1, 2, 3, 4, 5, 6]))
    for row in values.index[bad]:
        problems.add(path, column, f"line {row + 2}: Fitzpatrick type {values[row]!r} is not 1..6 "
                                   f"or -1 (unknown)")
    numbers = numbers.where(numbers.isin([1, 2, 3, 4, 5, 6]))
    return numbers.astype("Int64")


def check_classes(conditions: pd.Series, classes: tuple[str, ...], path: Path, column: str,
                  problems: Problems) -> pd.Series:
    """Class index of each condition (-1 for one outside the list, which is a problem)."""
    lookup = {c: i for i, c in enumerate(classes)}
    for row, value in conditions.items():
        if value not in lookup:
            problems.add(path, column, f"line {row + 2}: class {value!r} is not one of {', '.join(classes)}")
    return conditions.map(lambda v: lookup.get(v, -1)).astype("int64")


# ----------------------------------------------------------------------------------------------- tables

_FLOAT_COLUMNS = ("ita", "lesion_area", "centroid_x", "centroid_y", "skin_r", "skin_g", "skin_b")
_TEXT_COLUMNS = ("image_id", "condition", "patient_id", "lesion_id", "split")


def make_table(columns: dict[str, object]) -> pd.DataFrame:
    """A record table from what a reader knows: NA for the rest, contract dtypes, RECORD_COLUMNS first."""
    n = len(columns["image_id"])
    # Positional values only: readers pass Series with CSV row labels, which must not realign here.
    data = {k: (v.array if isinstance(v, pd.Series) else v) for k, v in columns.items()}
    table = pd.DataFrame(data, index=pd.RangeIndex(n))
    for column in RECORD_COLUMNS:
        if column not in table.columns:
            table[column] = np.nan if column in _FLOAT_COLUMNS else pd.NA
    table = table.astype({"malignant": "boolean", "fitzpatrick": "Int64", "label": "int64",
                          **{c: "float64" for c in _FLOAT_COLUMNS}})
    for column in _TEXT_COLUMNS:
        table[column] = table[column].map(lambda v: None if pd.isna(v) else str(v)).astype("str")
    extras = [c for c in table.columns if c not in RECORD_COLUMNS]
    return table[list(RECORD_COLUMNS) + extras]
