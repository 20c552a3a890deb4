"""Datasets described by one CSV with a label column: HAM10000, ISIC 2020, Fitzpatrick17k, DDI, a user folder.

They differ only in file names and column names, so each is one `TableSpec` row read by `read_table`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from dermgan.data.sources.common import (
    Catalogue,
    Problems,
    check_classes,
    check_root,
    clean_text,
    duplicates,
    existing,
    find_file,
    make_table,
    missing_folder,
    parse_fitzpatrick,
    parse_flag,
    pick_column,
    read_csv,
    resolve_images,
)
from dermgan.data.splits import SPLITS


@dataclass(frozen=True)
class Col:
    """A column role: accepted header names (variants across releases), and whether the CSV must have it."""

    names: tuple[str, ...]
    required: bool = True


@dataclass(frozen=True)
class TableSpec:
    name: str
    title: str
    layout: str  # the expected folder tree, shown in "put the files here" errors and in docs/real_datasets.md
    csv: tuple[str, ...]  # accepted CSV names; the first one found is read
    image_dirs: tuple[str, ...]  # folders searched for image files, "." = the root itself
    label: Col
    id: Col | None = None  # None: the image id is the image file name without its suffix
    image: Col | None = None  # column naming the image file; None: look the id up among the image files
    classes: tuple[str, ...] | None = None  # fixed class order; None: sorted labels found in the CSV
    malignant: Col | None = None  # a flag column (1/0, True/False, malignant/benign)
    malignant_classes: frozenset[str] | None = None  # or: malignant = the label is one of these
    fitzpatrick: Col | None = None  # exact type 1..6 (-1 = unknown)
    fitzpatrick_group: Col | None = None  # DDI's skin_tone 12 / 34 / 56: kept as an extra column
    patient: Col | None = None
    lesion: Col | None = None
    mask: Col | None = None  # column naming a mask file
    mask_dir: str | None = None  # or: folder of <image_id><mask_suffix> masks, used when present
    mask_suffix: str = "_segmentation.png"
    # masks with more than two values: lesion = value >= this share of the full scale (None: refused)
    mask_threshold: float | None = None
    split: Col | None = None  # official split column with train / val / test
    extras: tuple[str, ...] = ()  # optional CSV columns copied into the record table as they are


def _columns(spec: TableSpec, frame: pd.DataFrame, csv: Path, problems: Problems) -> dict[str, str] | None:
    """Role -> CSV column for every role the spec uses; None when a required column is missing."""
    names = ("id", "image", "label", "malignant", "fitzpatrick", "fitzpatrick_group", "patient", "lesion",
             "mask", "split")
    roles = {role: getattr(spec, role) for role in names}
    found, before = {}, len(problems)
    for role, col in roles.items():
        if col is not None:
            found[role] = pick_column(frame, csv, col.names, problems, col.required)
    return None if len(problems) > before else {k: v for k, v in found.items() if v is not None}


def _mask_paths(spec: TableSpec, root: Path, ids: pd.Series, frame: pd.DataFrame, cols: dict[str, str],
                csv: Path, masks: bool | None, problems: Problems) -> pd.Series | None:
    if masks is False:
        return None
    if "mask" in cols:
        # SkinData holds a mask for every image or for none, so a mask column must be filled in every row
        names = clean_text(frame[cols["mask"]])
        for row in names.index[names.isna()]:
            problems.add(csv, cols["mask"], f"line {row + 2}: empty mask name")
        return names.map(lambda v: str(root / v), na_action="ignore")
    if spec.mask_dir is None:
        if masks:
            problems.add(csv, "mask", f"masks=True but {csv.name} has no mask column")
        return None
    folder = root / spec.mask_dir
    if not folder.is_dir():
        if masks:  # asked for explicitly: its absence is a problem, not a reason to go on without masks
            missing_folder(problems, folder, f"{spec.title} mask",
                           f"{spec.mask_dir}/<image_id>{spec.mask_suffix}")
        return None
    return ids.map(lambda i: str(folder / f"{i}{spec.mask_suffix}"))


def _labels(spec: TableSpec, frame: pd.DataFrame, cols: dict[str, str], csv: Path, problems: Problems):
    conditions = clean_text(frame[cols["label"]])
    for row in conditions.index[conditions.isna()]:
        problems.add(csv, cols["label"], f"line {row + 2}: empty label")
    classes = spec.classes or tuple(sorted(conditions.dropna().unique()))
    return conditions, classes, check_classes(conditions.dropna(), classes, csv, cols["label"], problems)


def _malignant(spec: TableSpec, frame, cols, conditions, csv, problems) -> pd.Series | None:
    if spec.malignant_classes is not None:
        flags = pd.array(conditions.isin(spec.malignant_classes), dtype="boolean")
        return pd.Series(flags, index=frame.index)
    if "malignant" in cols:
        return parse_flag(frame[cols["malignant"]], csv, cols["malignant"], problems)
    return None


def _fitzpatrick_group(values: pd.Series, csv: Path, column: str, problems: Problems) -> pd.Series:
    """DDI's skin_tone: 12 = types I-II, 34 = III-IV, 56 = V-VI."""
    numbers = pd.to_numeric(values, errors="coerce")
    for row in values.index[values.notna() & ~numbers.isin([12, 34, 56])]:
        problems.add(csv, column, f"line {row + 2}: skin tone {values[row]!r} is not 12, 34 or 56")
    return numbers.where(numbers.isin([12, 34, 56])).astype("Int64")


def _maybe_numeric(values: pd.Series) -> pd.Series:
    """An extra column as numbers when every filled cell is one (age, DDI_ID), else as text."""
    numbers = pd.to_numeric(values, errors="coerce")
    return numbers if numbers.notna().sum() == values.notna().sum() else values


def _official_split(frame, cols, csv, problems) -> np.ndarray:
    if "split" not in cols:
        return np.full(len(frame), "train", dtype=object)
    values = clean_text(frame[cols["split"]])
    for row in values.index[~values.isin(SPLITS)]:
        problems.add(csv, cols["split"], f"line {row + 2}: split {values[row]!r} is not train, val or test")
    return values.where(values.isin(SPLITS), "train").to_numpy(dtype=object)


def read_table(spec: TableSpec, root: Path, problems: Problems,
               masks: bool | None = None) -> Catalogue | None:
    """The catalogue of a one-CSV dataset; every problem found goes to `problems`."""
    if not check_root(root, problems, spec.title, spec.layout):
        return None
    csv = find_file(root, spec.csv)
    if csv is None:
        problems.add(root / spec.csv[0], "file", f"{spec.csv[0]} not found; put the {spec.title} files "
                                                 f"in {root}, laid out as:\n{spec.layout}")
    folders = existing(root, spec.image_dirs)
    if not folders:
        missing_folder(problems, root / spec.image_dirs[0], f"{spec.title} image", spec.layout)
    frame = read_csv(csv, problems) if csv is not None else None
    cols = _columns(spec, frame, csv, problems) if frame is not None else None
    if cols is None or not folders:
        return None

    file_column = cols.get("image", cols.get("id"))
    files = clean_text(frame[file_column])
    stems = files.map(lambda v: v and str(Path(v).with_suffix("")))
    ids = clean_text(frame[cols["id"]]) if "id" in cols else stems
    for row in ids.index[ids.isna()]:
        problems.add(csv, file_column, f"line {row + 2}: empty image name")
    duplicates(ids, csv, cols.get("id", file_column), problems)
    conditions, classes, labels = _labels(spec, frame, cols, csv, problems)
    columns = {
        "image_id": ids, "condition": conditions, "label": labels.reindex(frame.index, fill_value=-1),
        "image_path": resolve_images(files, root, folders, csv, file_column, problems),
    }
    malignant = _malignant(spec, frame, cols, conditions, csv, problems)
    if malignant is not None:
        columns["malignant"] = malignant
    if "fitzpatrick" in cols:
        column = cols["fitzpatrick"]
        columns["fitzpatrick"] = parse_fitzpatrick(frame[column], csv, column, problems)
    if "fitzpatrick_group" in cols:
        columns["fitzpatrick_group"] = _fitzpatrick_group(frame[cols["fitzpatrick_group"]], csv,
                                                          cols["fitzpatrick_group"], problems)
    for role in ("patient", "lesion"):
        if role in cols:
            columns[f"{role}_id"] = clean_text(frame[cols[role]])
    mask_paths = _mask_paths(spec, root, ids, frame, cols, csv, masks, problems)
    if mask_paths is not None:
        columns["mask_path"] = mask_paths
    columns.update({c: _maybe_numeric(frame[c]) for c in spec.extras if c in frame.columns})
    columns["split"] = _official_split(frame, cols, csv, problems)

    table = make_table(columns)
    # Rows whose image is missing were reported already; dropping them keeps the decode pass from repeating.
    table = table[table["image_path"].notna() & table["image_id"].notna()].reset_index(drop=True)
    return Catalogue(table, classes, mask_threshold=spec.mask_threshold)


# ------------------------------------------------------------------------------------------------ specs

# Alphabetical, the order DermaMNIST numbers them in.
HAM10000_CLASSES = ("akiec", "bcc", "bkl", "df", "mel", "nv", "vasc")
# akiec (actinic keratosis / Bowen's disease = intraepithelial carcinoma) is malignant, as in DermaMNIST.
HAM10000_MALIGNANT = frozenset({"akiec", "bcc", "mel"})

HAM10000 = TableSpec(
    name="ham10000",
    title="HAM10000",
    layout="""\
<root>/
  HAM10000_metadata.csv          (lesion_id, image_id, dx, dx_type, age, sex, localization)
  HAM10000_images_part_1/ISIC_0024306.jpg ...
  HAM10000_images_part_2/ISIC_0029306.jpg ...
  HAM10000_segmentations_lesion_tschandl/ISIC_0024306_segmentation.png ...   (optional)""",
    csv=("HAM10000_metadata.csv", "HAM10000_metadata.tab", "HAM10000_metadata"),
    image_dirs=("HAM10000_images_part_1", "HAM10000_images_part_2", "ham10000_images_part_1",
                "ham10000_images_part_2", "HAM10000_images"),
    id=Col(("image_id",)),
    label=Col(("dx",)),
    classes=HAM10000_CLASSES,
    malignant_classes=HAM10000_MALIGNANT,
    lesion=Col(("lesion_id",)),
    mask_dir="HAM10000_segmentations_lesion_tschandl",
    # The official masks are 0/255; copies resized by others have anti-aliased edges (up to ~220 grey levels).
    # Half the full scale keeps a pixel that is at least half lesion: the resize's own boundary.
    mask_threshold=0.5,
    extras=("dx_type", "age", "sex", "localization", "dataset"),
)

ISIC2020 = TableSpec(
    name="isic2020",
    title="ISIC 2020 (SIIM-ISIC melanoma)",
    layout="""\
<root>/
  train.csv  or  ISIC_2020_Training_GroundTruth.csv  (or ..._GroundTruth_v2.csv)
             (image_name, patient_id, sex, age_approx, anatom_site_general_challenge,
              diagnosis, benign_malignant, target)
  jpeg/train/ISIC_2637011.jpg ...     (Kaggle layout)
  or ISIC_2020_Training_JPEG/train/ISIC_2637011.jpg ...   (ISIC archive layout)""",
    csv=("train.csv", "ISIC_2020_Training_GroundTruth_v2.csv", "ISIC_2020_Training_GroundTruth.csv"),
    image_dirs=("jpeg/train", "ISIC_2020_Training_JPEG/train", "ISIC_2020_Training_JPEG", "train"),
    id=Col(("image_name",)),
    label=Col(("diagnosis",)),
    malignant=Col(("target", "benign_malignant")),
    patient=Col(("patient_id",)),
    lesion=Col(("lesion_id",), required=False),
    extras=("sex", "age_approx", "anatom_site_general_challenge", "benign_malignant"),
)

FITZPATRICK17K = TableSpec(
    name="fitzpatrick17k",
    title="Fitzpatrick17k",
    layout="""\
<root>/
  fitzpatrick17k.csv   (md5hash, fitzpatrick_scale, fitzpatrick_centaur, label, nine_partition_label,
                        three_partition_label, qc, url, url_alphanum)
  images/<md5hash>.jpg ...     (or the images directly in <root>/)""",
    csv=("fitzpatrick17k.csv",),
    image_dirs=("images", "finalfitz17k", "data", "."),
    id=Col(("md5hash",)),
    label=Col(("label",)),
    malignant=Col(("three_partition_label",)),  # malignant / benign / non-neoplastic
    fitzpatrick=Col(("fitzpatrick_scale",)),
    extras=("fitzpatrick_centaur", "nine_partition_label", "three_partition_label", "qc"),
)

DDI = TableSpec(
    name="ddi",
    title="DDI (Diverse Dermatology Images)",
    layout="""\
<root>/
  ddi_metadata.csv   (DDI_ID, DDI_file, skin_tone, malignant, disease)
                     (older releases: malignancy(malig=1) instead of malignant)
  000001.png 000002.png ...    (flat, or in <root>/images/)""",
    csv=("ddi_metadata.csv",),
    image_dirs=(".", "images"),
    image=Col(("DDI_file",)),
    label=Col(("disease",)),
    malignant=Col(("malignant", "malignancy(malig=1)")),
    fitzpatrick_group=Col(("skin_tone",)),
    extras=("DDI_ID",),
)

FOLDER_LAYOUT = """\
<root>/
  labels.csv        (one row per image: image, label[, mask][, split]; other column names are options)
  any/relative/path/img001.jpg ...   (paths in the CSV are relative to <root>)"""


def folder_spec(csv: str = "labels.csv", image_column: str = "image", label_column: str = "label",
                mask_column: str | None = None, id_column: str | None = None,
                patient_column: str | None = None, lesion_column: str | None = None,
                malignant_column: str | None = None, fitzpatrick_column: str | None = None,
                split_column: str | None = None, classes: tuple[str, ...] | None = None) -> TableSpec:
    """A TableSpec for a user's own folder + CSV; every column the user names must exist.

    The documented optional columns `mask` and `split` are read whenever the CSV has them, with no option
    passed (the CLI and the notebooks pass none): a user's test rows must never end up in training.
    """
    def col(name):
        return None if name is None else Col((name,))

    def named_or_documented(name, documented):
        return Col((name,)) if name is not None else Col((documented,), required=False)

    return TableSpec(
        name="folder", title="image folder", layout=FOLDER_LAYOUT.replace("labels.csv", csv), csv=(csv,),
        image_dirs=(".",), image=Col((image_column,)), label=Col((label_column,)), id=col(id_column),
        classes=tuple(classes) if classes else None, malignant=col(malignant_column),
        fitzpatrick=col(fitzpatrick_column), patient=col(patient_column), lesion=col(lesion_column),
        mask=named_or_documented(mask_column, "mask"), split=named_or_documented(split_column, "split"),
    )
