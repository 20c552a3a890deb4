"""ISIC challenge releases: ground truth as one-hot CSVs per official part (training / validation / test).

ISIC 2017 Part 3, ISIC 2018 Task 3 and ISIC 2019 differ only in file and column names (one `ChallengeSpec`
row each). ISIC 2018 Task 1 has no CSV: its records are the images of the input folders, each with a mask.
Parts other than training are optional; a missing val or test part is carved out of training (by class and
lesion) when the catalogue's splits are settled (dermgan.data.sources).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from dermgan.data.sources.common import (
    Catalogue,
    Problems,
    check_root,
    clean_text,
    duplicates,
    find_file,
    index_images,
    make_table,
    missing_folder,
    pick_column,
    read_csv,
    resolve_images,
)


@dataclass(frozen=True)
class Part:
    """One official part of a challenge release."""

    split: str
    images: str  # folder of <image_id>.jpg
    csv: str | None = None  # one-hot ground truth; None: every image in `images` is a record
    masks: str | None = None  # folder of <image_id>_segmentation.png
    required: bool = False


@dataclass(frozen=True)
class ChallengeSpec:
    name: str
    title: str
    layout: str
    parts: tuple[Part, ...]
    id_column: str = "image"
    class_columns: tuple[str, ...] = ()  # the one-hot columns, in the release's own order
    malignant: frozenset[str] = frozenset()
    unknown: frozenset[str] = frozenset()  # classes that say nothing about malignancy (ISIC 2019 UNK)
    # class of an all-zero row (ISIC 2017: nevus); None: such a row is an error
    implicit_class: str | None = None
    groupings: tuple[str, ...] = ()  # optional CSVs with `id_column` and lesion_id
    masks_required: bool = False

    @property
    def classes(self) -> tuple[str, ...]:
        return self.class_columns + ((self.implicit_class,) if self.implicit_class else ())


def _present_parts(spec: ChallengeSpec, root: Path, problems: Problems) -> list[tuple[Part, Path | None]]:
    """Parts whose files are there, with their CSV; a missing required part or image folder is a problem."""
    present = []
    for part in spec.parts:
        csv = find_file(root, (part.csv,)) if part.csv else None
        images = root / part.images
        if not (part.required or (csv is not None if part.csv else images.is_dir())):
            continue  # an optional part that is simply not there
        if part.csv and csv is None:
            problems.add(root / part.csv, "file", f"{part.csv} not found; put the {spec.title} files "
                                                  f"in {root}, laid out as:\n{spec.layout}")
        if not images.is_dir():
            missing_folder(problems, images, f"{spec.title} {part.split} image", spec.layout)
        elif csv is not None or not part.csv:
            present.append((part, csv))
    return present


def _use_masks(spec: ChallengeSpec, root: Path, parts, masks: bool | None, problems: Problems) -> bool:
    """Masks for all parts or none: a SkinData holds masks for every image or for no image."""
    if masks is False or not any(part.masks for part, _ in parts):
        return False
    found = [(root / part.masks).is_dir() for part, _ in parts if part.masks]
    wanted = masks or spec.masks_required or any(found)
    if wanted:
        for part, _ in parts:
            if part.masks and not (root / part.masks).is_dir():
                missing_folder(problems, root / part.masks, f"{spec.title} {part.split} mask",
                               f"{part.masks}/<image_id>_segmentation.png  (or pass masks=False)")
    return bool(wanted)


def _one_hot(spec: ChallengeSpec, frame: pd.DataFrame, csv: Path, problems: Problems) -> pd.Series:
    """Class index of each row; a row with no 1, several 1s or a value other than 0/1 is a problem (-1)."""
    columns = list(spec.class_columns)
    values = frame[columns].apply(pd.to_numeric, errors="coerce")
    binary = values.isin([0, 1]).all(axis=1)
    n_hot = (values == 1).sum(axis=1)
    labels = pd.Series(np.argmax(values.fillna(0).to_numpy() == 1, axis=1), index=frame.index, dtype="int64")
    if spec.implicit_class:
        labels[binary & (n_hot == 0)] = len(columns)
    good = binary & ((n_hot == 1) | ((n_hot == 0) & bool(spec.implicit_class)))
    for row in frame.index[~good]:
        if not binary[row]:
            found = ", ".join(map(str, frame.loc[row, columns]))
            message = f"one-hot values must be 0 or 1, got {found}"
        else:
            message = f"expected exactly one class marked 1 among {', '.join(columns)}, found {n_hot[row]}"
        problems.add(csv, columns[0], f"line {row + 2}: {message}")
    return labels.where(good, -1)


def _csv_part(spec: ChallengeSpec, root: Path, part: Part, csv: Path, problems: Problems) -> dict | None:
    frame = read_csv(csv, problems)
    if frame is None:
        return None
    before = len(problems)
    id_col = pick_column(frame, csv, (spec.id_column,), problems)
    for column in spec.class_columns:
        pick_column(frame, csv, (column,), problems)
    if len(problems) > before:
        return None
    ids = clean_text(frame[id_col])
    duplicates(ids, csv, id_col, problems)
    labels = _one_hot(spec, frame, csv, problems)
    paths = resolve_images(ids, root, [root / part.images], csv, id_col, problems)
    return {"image_id": ids, "label": labels, "image_path": paths}


def _folder_part(root: Path, part: Part) -> dict:
    """ISIC 2018 Task 1: the input folder lists the records (superpixel files of old releases are skipped)."""
    index = index_images([root / part.images])
    paths = sorted({p for found in index.values() for p in found
                    if p.suffix.lower() == ".jpg" and "superpixels" not in p.stem})
    ids = pd.Series([p.stem for p in paths], dtype=object)
    return {"image_id": ids, "label": pd.Series(0, index=ids.index), "image_path": [str(p) for p in paths]}


def _lesion_ids(spec: ChallengeSpec, root: Path, problems: Problems) -> dict[str, str]:
    """image id -> lesion id from the optional grouping / metadata CSVs."""
    lesions: dict[str, str] = {}
    for name in spec.groupings:
        csv = find_file(root, (name,))
        frame = read_csv(csv, problems) if csv else None
        if frame is None:
            continue
        id_col = pick_column(frame, csv, (spec.id_column,), problems)
        lesion_col = pick_column(frame, csv, ("lesion_id",), problems)
        if id_col and lesion_col:
            for image, lesion in zip(clean_text(frame[id_col]), clean_text(frame[lesion_col])):
                if image and lesion:
                    lesions[image] = lesion
    return lesions


def _malignant(spec: ChallengeSpec, conditions: pd.Series) -> pd.array:
    flags = [pd.NA if c in spec.unknown or c is None else c in spec.malignant for c in conditions]
    return pd.array(flags, dtype="boolean")


def read_challenge(spec: ChallengeSpec, root: Path, problems: Problems,
                   masks: bool | None = None) -> Catalogue | None:
    if not check_root(root, problems, spec.title, spec.layout):
        return None
    parts = _present_parts(spec, root, problems)
    with_masks = _use_masks(spec, root, parts, masks, problems)
    pieces = []
    for part, csv in parts:
        piece = _csv_part(spec, root, part, csv, problems) if csv else _folder_part(root, part)
        if piece is None:
            continue
        piece = {k: pd.Series(v).reset_index(drop=True) for k, v in piece.items()}
        piece["split"] = pd.Series(part.split, index=piece["image_id"].index)
        if with_masks and part.masks:
            piece["mask_path"] = [str(root / part.masks / f"{i}_segmentation.png") for i in piece["image_id"]]
        pieces.append(pd.DataFrame(piece))
    if not pieces:
        return None
    found = pd.concat(pieces, ignore_index=True)
    found = found[found["image_path"].notna() & found["image_id"].notna()].reset_index(drop=True)
    spans = found.groupby("image_id")["split"].nunique()
    for image in spans.index[spans > 1]:
        problems.add(root, "image_id", f"image {image!r} is listed in more than one official part")
    classes = spec.classes or ("lesion",)
    found["condition"] = [classes[i] if i >= 0 else None for i in found["label"]]
    found["malignant"] = _malignant(spec, found["condition"]) if spec.class_columns else pd.NA
    found["lesion_id"] = found["image_id"].map(_lesion_ids(spec, root, problems))
    return Catalogue(make_table({c: found[c] for c in found.columns}), classes)


# ------------------------------------------------------------------------------------------------ specs

def _parts(prefix: str, splits: dict[str, str], csv: str | None, masks: str | None) -> tuple[Part, ...]:
    """Parts named by one pattern: {s} = the release's name of the part (Training, Validation, ...)."""
    return tuple(Part(split=split, images=prefix.format(s=s), csv=csv.format(s=s) if csv else None,
                      masks=masks.format(s=s) if masks else None, required=split == "train")
                 for split, s in splits.items())


ISIC2017 = ChallengeSpec(
    name="isic2017",
    title="ISIC 2017 (Part 3 classification)",
    layout="""\
<root>/
  ISIC-2017_Training_Part3_GroundTruth.csv     (image_id, melanoma, seborrheic_keratosis)
  ISIC-2017_Training_Data/ISIC_0000000.jpg ...
  ISIC-2017_Training_Part1_GroundTruth/ISIC_0000000_segmentation.png ...   (optional masks)
  ISIC-2017_Validation_Part3_GroundTruth.csv + ISIC-2017_Validation_Data/ + ..._Part1_GroundTruth/  (optional)
  ISIC-2017_Test_v2_Part3_GroundTruth.csv + ISIC-2017_Test_v2_Data/ + ..._Part1_GroundTruth/  (optional)""",
    parts=_parts("ISIC-2017_{s}_Data", {"train": "Training", "val": "Validation", "test": "Test_v2"},
                 "ISIC-2017_{s}_Part3_GroundTruth.csv", "ISIC-2017_{s}_Part1_GroundTruth"),
    id_column="image_id",
    class_columns=("melanoma", "seborrheic_keratosis"),
    implicit_class="nevus",  # Part 3 marks neither melanoma nor seborrheic keratosis for benign nevi
    malignant=frozenset({"melanoma"}),
)

ISIC2018_TASK3 = ChallengeSpec(
    name="isic2018_task3",
    title="ISIC 2018 Task 3",
    layout="""\
<root>/
  ISIC2018_Task3_Training_GroundTruth/ISIC2018_Task3_Training_GroundTruth.csv
                      (image, MEL, NV, BCC, AKIEC, BKL, DF, VASC; the CSV may also sit in <root>)
  ISIC2018_Task3_Training_Input/ISIC_0024306.jpg ...
  ISIC2018_Task3_Training_LesionGroupings.csv   (image, lesion_id, ...; optional)
  ISIC2018_Task3_Validation_GroundTruth/... + ISIC2018_Task3_Validation_Input/   (optional)
  ISIC2018_Task3_Test_GroundTruth/... + ISIC2018_Task3_Test_Input/               (optional)""",
    parts=_parts("ISIC2018_Task3_{s}_Input", {"train": "Training", "val": "Validation", "test": "Test"},
                 "ISIC2018_Task3_{s}_GroundTruth.csv", None),
    class_columns=("MEL", "NV", "BCC", "AKIEC", "BKL", "DF", "VASC"),
    malignant=frozenset({"MEL", "BCC", "AKIEC"}),
    groupings=("ISIC2018_Task3_Training_LesionGroupings.csv",),
)

ISIC2018_TASK1 = ChallengeSpec(
    name="isic2018_task1",
    title="ISIC 2018 Task 1 (lesion segmentation)",
    layout="""\
<root>/
  ISIC2018_Task1-2_Training_Input/ISIC_0000000.jpg ...
  ISIC2018_Task1_Training_GroundTruth/ISIC_0000000_segmentation.png ...
  ISIC2018_Task1-2_Validation_Input/ + ISIC2018_Task1_Validation_GroundTruth/   (optional)
  ISIC2018_Task1-2_Test_Input/ + ISIC2018_Task1_Test_GroundTruth/               (optional)""",
    parts=_parts("ISIC2018_Task1-2_{s}_Input", {"train": "Training", "val": "Validation", "test": "Test"},
                 None, "ISIC2018_Task1_{s}_GroundTruth"),
    masks_required=True,
)

ISIC2019 = ChallengeSpec(
    name="isic2019",
    title="ISIC 2019",
    layout="""\
<root>/
  ISIC_2019_Training_GroundTruth.csv   (image, MEL, NV, BCC, AK, BKL, DF, VASC, SCC, UNK)
  ISIC_2019_Training_Input/ISIC_0000000.jpg ... (some named ..._downsampled.jpg, as in the CSV)
  ISIC_2019_Training_Metadata.csv      (image, age_approx, anatom_site_general, lesion_id, sex; optional)
  ISIC_2019_Test_GroundTruth.csv + ISIC_2019_Test_Input/   (optional)""",
    parts=_parts("ISIC_2019_{s}_Input", {"train": "Training", "test": "Test"},
                 "ISIC_2019_{s}_GroundTruth.csv", None),
    class_columns=("MEL", "NV", "BCC", "AK", "BKL", "DF", "VASC", "SCC", "UNK"),
    # AK holds HAM10000's akiec images (AK and Bowen's disease), malignant there too.
    malignant=frozenset({"MEL", "BCC", "AK", "SCC"}),
    unknown=frozenset({"UNK"}),
    groupings=("ISIC_2019_Training_Metadata.csv",),
)
