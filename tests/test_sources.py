"""Readers of real datasets, on small fixtures written in each dataset's own on-disk layout.

Truth is independent of the readers: labels and flags are written into the fixtures by hand, mask statistics
are worked out from the rectangle drawn into the mask, and splits are checked as properties.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from dermgan.data.dataset import RECORD_COLUMNS, SkinData
from dermgan.data.sources import (
    SOURCES,
    Problem,
    SourceError,
    grouped_split,
    load_source,
    read_records,
    split_summary,
    verify,
)

W, H = 60, 45  # HAM10000's 600 x 450, scaled down; the centre square is columns 7..51
BOX = (17, 5, 27, 15)  # lesion rectangle (left, top, right, bottom) -> columns 10..19 of the centre square


# ------------------------------------------------------------------------------------------- writers

def write_image(path: Path, size=(W, H), seed=0, fmt=None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:size[1], 0:size[0]]
    base = rng.integers(40, 200, 3)
    pixels = np.clip(base + 0.5 * x[..., None] + 0.3 * y[..., None], 0, 255).astype(np.uint8)
    Image.fromarray(pixels).save(path, format=fmt)


def write_mask(path: Path, size=(W, H), box=BOX) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    mask = np.zeros((size[1], size[0]), np.uint8)
    left, top, right, bottom = box
    mask[top:bottom, left:right] = 255
    Image.fromarray(mask).save(path)


def write_csv(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows).to_csv(path, index=False)


def truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


# ------------------------------------------------------------------------------------------- fixtures

HAM_DX = ["nv", "mel", "bkl", "bcc", "akiec", "vasc", "df"]
HAM_MASKS = "HAM10000_segmentations_lesion_tschandl"


def make_ham(root: Path, n_lesions=12, masks=True) -> pd.DataFrame:
    rows = []
    for lesion in range(n_lesions):
        for k in range(1 + lesion % 3):  # 1-3 images per lesion, as in HAM10000
            rows.append({"lesion_id": f"HAM_{lesion:07d}", "image_id": f"ISIC_{len(rows):07d}",
                         "dx": HAM_DX[lesion % 7], "dx_type": "histo", "age": 50.0, "sex": "male",
                         "localization": "back"})
    for i, row in enumerate(rows):
        part = "HAM10000_images_part_1" if i % 2 else "HAM10000_images_part_2"
        write_image(root / part / f"{row['image_id']}.jpg", seed=i)
        if masks:
            write_mask(root / HAM_MASKS / f"{row['image_id']}_segmentation.png")
    write_csv(root / "HAM10000_metadata.csv", rows)
    return pd.DataFrame(rows)


def one_hot(columns, name):
    return {c: float(c == name) for c in columns}


def make_isic2017(root: Path) -> None:
    labels = {"Training": ["melanoma", "seborrheic_keratosis", "nevus", "nevus"],
              "Validation": ["melanoma", "nevus"], "Test_v2": ["seborrheic_keratosis"]}
    n = 0
    for part, names in labels.items():
        rows = []
        for name in names:
            image_id = f"ISIC_{n:07d}"
            n += 1
            rows.append({"image_id": image_id, "melanoma": float(name == "melanoma"),
                         "seborrheic_keratosis": float(name == "seborrheic_keratosis")})
            write_image(root / f"ISIC-2017_{part}_Data" / f"{image_id}.jpg", seed=n)
            write_image(root / f"ISIC-2017_{part}_Data" / f"{image_id}_superpixels.png", seed=n)
            write_mask(root / f"ISIC-2017_{part}_Part1_GroundTruth" / f"{image_id}_segmentation.png")
        write_csv(root / f"ISIC-2017_{part}_Part3_GroundTruth.csv", rows)


TASK3 = ["MEL", "NV", "BCC", "AKIEC", "BKL", "DF", "VASC"]


def make_isic2018_task3(root: Path, n=21) -> None:
    rows, groups = [], []
    for i in range(n):
        image = f"ISIC_{i:07d}"
        rows.append({"image": image, **one_hot(TASK3, TASK3[i % 7])})
        groups.append({"image": image, "lesion_id": f"HAM_{i // 2:07d}", "diagnosis_confirm_type": "histo"})
        write_image(root / "ISIC2018_Task3_Training_Input" / f"{image}.jpg", seed=i)
    # The official zip unpacks the CSV into a folder of its own name.
    write_csv(root / "ISIC2018_Task3_Training_GroundTruth" / "ISIC2018_Task3_Training_GroundTruth.csv", rows)
    write_csv(root / "ISIC2018_Task3_Training_LesionGroupings.csv", groups)


def make_isic2018_task1(root: Path) -> None:
    for part, n in (("Training", 3), ("Validation", 1), ("Test", 1)):
        for i in range(n):
            image = f"ISIC_{part[:2]}{i:05d}"
            write_image(root / f"ISIC2018_Task1-2_{part}_Input" / f"{image}.jpg", seed=i)
            write_mask(root / f"ISIC2018_Task1_{part}_GroundTruth" / f"{image}_segmentation.png")
        (root / f"ISIC2018_Task1-2_{part}_Input" / "LICENSE.txt").write_text("CC-BY-NC")


ISIC2019 = ["MEL", "NV", "BCC", "AK", "BKL", "DF", "VASC", "SCC", "UNK"]


def make_isic2019(root: Path) -> None:
    rows, meta = [], []
    for i, name in enumerate(ISIC2019):
        image = f"ISIC_{i:07d}" + ("_downsampled" if i == 1 else "")
        rows.append({"image": image, **one_hot(ISIC2019, name)})
        meta.append({"image": image, "age_approx": 55, "anatom_site_general": "torso",
                     "lesion_id": f"BCN_{i // 3:07d}" if i < 6 else None, "sex": "female"})
        write_image(root / "ISIC_2019_Training_Input" / f"{image}.jpg", seed=i)
    write_csv(root / "ISIC_2019_Training_GroundTruth.csv", rows)
    write_csv(root / "ISIC_2019_Training_Metadata.csv", meta)


def make_isic2020(root: Path, n_patients=10) -> pd.DataFrame:
    rows = []
    for p in range(n_patients):
        for k in range(1 + p % 4):
            melanoma = (p + k) % 5 == 0
            rows.append({"image_name": f"ISIC_{len(rows):07d}", "patient_id": f"IP_{p:07d}", "sex": "male",
                         "age_approx": 45.0, "anatom_site_general_challenge": "torso",
                         "diagnosis": "melanoma" if melanoma else "nevus",
                         "benign_malignant": "malignant" if melanoma else "benign", "target": int(melanoma)})
    for i, row in enumerate(rows):
        write_image(root / "jpeg" / "train" / f"{row['image_name']}.jpg", size=(64, 48), seed=i)
    write_csv(root / "train.csv", rows)
    return pd.DataFrame(rows)


def make_fitzpatrick(root: Path) -> pd.DataFrame:
    spec = [("psoriasis", 3, "non-neoplastic"), ("basal cell carcinoma", -1, "malignant"),
            ("seborrheic keratosis", 6, "benign"), ("psoriasis", 1, "non-neoplastic")]
    rows = []
    for i, (label, fst, three) in enumerate(spec):
        md5 = f"{i:032x}"
        rows.append({"md5hash": md5, "fitzpatrick_scale": fst, "fitzpatrick_centaur": fst, "label": label,
                     "nine_partition_label": "x", "three_partition_label": three, "qc": None,
                     "url": f"https://example.org/{md5}.jpg", "url_alphanum": "x"})
        write_image(root / "images" / f"{md5}.jpg", size=(50, 70), seed=i)
    write_csv(root / "fitzpatrick17k.csv", rows)
    return pd.DataFrame(rows)


def make_ddi(root: Path, malignant_column="malignant") -> None:
    spec = [("melanoma-in-situ", 12, True), ("verruca-vulgaris", 34, False), ("melanoma-in-situ", 56, True)]
    rows = []
    for i, (disease, tone, malignant) in enumerate(spec):
        name = f"{i + 1:06d}.png"
        flag = malignant if malignant_column == "malignant" else int(malignant)
        rows.append({"DDI_ID": i + 1, "DDI_file": name, "skin_tone": tone, malignant_column: flag,
                     "disease": disease})
        write_image(root / name, size=(40, 40), seed=i, fmt="PNG")
    write_csv(root / "ddi_metadata.csv", rows)


def make_dermamnist(root: Path, name="dermamnist.npz", side=28) -> dict:
    rng = np.random.default_rng(0)
    arrays = {}
    for split, n in (("train", 7), ("val", 2), ("test", 3)):
        arrays[f"{split}_images"] = rng.integers(0, 256, (n, side, side, 3), dtype=np.uint8)
        arrays[f"{split}_labels"] = (np.arange(n) % 7).reshape(n, 1).astype(np.uint8)
    root.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(root / name, **arrays)
    return arrays


def make_folder(root: Path) -> None:
    rows = []
    for i, (label, split) in enumerate([("eczema", "train"), ("acne", "train"), ("eczema", "val"),
                                        ("acne", "test")]):
        write_image(root / "photos" / label / f"img{i}.jpg", seed=i)
        write_mask(root / "masks" / f"img{i}.png")
        rows.append({"file": f"photos/{label}/img{i}.jpg", "diagnosis": label, "seg": f"masks/img{i}.png",
                     "fold": split})
    write_csv(root / "labels.csv", rows)


def messages(problems: list[Problem]) -> str:
    return "\n".join(str(p) for p in problems)


# ---------------------------------------------------------------------------------------- per reader

def test_registry_names_and_unknown_name():
    assert list(SOURCES) == ["ham10000", "isic2017", "isic2018_task1", "isic2018_task3", "isic2019",
                             "isic2020", "fitzpatrick17k", "ddi", "dermamnist", "folder"]
    with pytest.raises(ValueError, match="known real datasets: ham10000, isic2017"):
        load_source("ham1000", "/nowhere", 32)


def test_ham10000_records_masks_and_lesion_grouped_splits(tmp_path):
    truth = make_ham(tmp_path)
    data = load_source("ham10000", tmp_path, image_size=32)
    assert isinstance(data, SkinData) and len(data) == len(truth)
    assert data.images.shape == (len(truth), 32, 32, 3) and data.images.dtype == np.uint8
    assert data.lesion_masks.shape == (len(truth), 32, 32) and set(np.unique(data.lesion_masks)) == {0, 1}
    assert data.skin_masks is None
    assert data.classes == ("akiec", "bcc", "bkl", "df", "mel", "nv", "vasc")
    table = data.table.set_index("image_id").loc[truth["image_id"]]
    assert list(table["condition"]) == list(truth["dx"])
    assert [data.classes[i] for i in table["label"]] == list(truth["dx"])
    assert list(table["malignant"]) == [dx in ("mel", "bcc", "akiec") for dx in truth["dx"]]
    assert list(table["lesion_id"]) == list(truth["lesion_id"])
    assert table["fitzpatrick"].isna().all() and table["patient_id"].isna().all()
    # The 10 x 10 box in the 45 x 45 centre square: columns 10..19 (mean 14.5), rows 5..14 (mean 9.5).
    assert np.allclose(table["lesion_area"], 100 / 45 ** 2)
    assert np.allclose(table["centroid_x"], 14.5 / 45) and np.allclose(table["centroid_y"], 9.5 / 45)
    assert set(data.table["split"]) == {"train", "val", "test"}
    assert (data.table.groupby("lesion_id")["split"].nunique() == 1).all()
    assert list(data.table.columns[: len(RECORD_COLUMNS)]) == list(RECORD_COLUMNS)
    assert {"image_path", "mask_path", "dx_type", "localization"} <= set(data.table.columns)
    assert data.table["age"].dtype.kind == "f"  # numeric extras stay numbers
    assert verify("ham10000", tmp_path) == []


def test_ham10000_without_mask_folder_has_no_masks_and_na_areas(tmp_path):
    make_ham(tmp_path, n_lesions=4, masks=False)
    data = load_source("ham10000", tmp_path, image_size=16)
    assert data.lesion_masks is None
    assert data.table[["lesion_area", "centroid_x", "centroid_y"]].isna().all().all()


def test_resize_is_centre_crop_then_resize(tmp_path):
    # left third red, middle green, right third blue: the centre square of a 90 x 30 image is all green.
    pixels = np.zeros((30, 90, 3), np.uint8)
    pixels[:, :30, 0] = pixels[:, 30:60, 1] = pixels[:, 60:, 2] = 255
    (tmp_path / "photos").mkdir()
    Image.fromarray(pixels).save(tmp_path / "photos" / "wide.png")
    write_csv(tmp_path / "labels.csv", [{"image": "photos/wide.png", "label": "x"}])
    data = load_source("folder", tmp_path, image_size=8)
    assert data.images.shape == (1, 8, 8, 3)
    assert (data.images[0, :, :, 1] > 250).all() and (data.images[0, :, :, [0, 2]] < 5).all()


def test_grouped_split_is_deterministic_and_keeps_groups_together():
    groups = np.array([f"g{i % 37}" for i in range(200)], dtype=object)
    first = grouped_split(groups, ("train", "val", "test"), (0.7, 0.15, 0.15))
    again = grouped_split(groups[::-1], ("train", "val", "test"), (0.7, 0.15, 0.15))[::-1]
    assert (first == again).all()  # independent of row order
    assert pd.DataFrame({"g": groups, "s": first}).groupby("g")["s"].nunique().max() == 1
    shares = pd.Series(first).value_counts(normalize=True)
    assert abs(shares["train"] - 0.7) < 0.08 and abs(shares["val"] - 0.15) < 0.08


def test_isic2017_official_parts_and_implicit_nevus(tmp_path):
    make_isic2017(tmp_path)
    data = load_source("isic2017", tmp_path, image_size=16)
    assert data.classes == ("melanoma", "seborrheic_keratosis", "nevus")
    t = data.table
    assert list(t["condition"]) == ["melanoma", "seborrheic_keratosis", "nevus", "nevus", "melanoma", "nevus",
                                    "seborrheic_keratosis"]
    assert list(t["split"]) == ["train"] * 4 + ["val"] * 2 + ["test"]
    assert list(t["malignant"]) == [c == "melanoma" for c in t["condition"]]
    assert data.lesion_masks.shape == (7, 16, 16)
    assert np.allclose(t["lesion_area"], 100 / 45 ** 2)


def test_isic2018_task3_one_hot_and_lesion_groupings(tmp_path):
    make_isic2018_task3(tmp_path)
    data = load_source("isic2018_task3", tmp_path, image_size=16)
    assert data.classes == tuple(TASK3)
    t = data.table
    assert list(t["condition"]) == [TASK3[i % 7] for i in range(21)]
    assert list(t["malignant"]) == [TASK3[i % 7] in ("MEL", "BCC", "AKIEC") for i in range(21)]
    assert list(t["lesion_id"]) == [f"HAM_{i // 2:07d}" for i in range(21)]
    # no official val / test part here: both are carved out of training, by lesion
    assert set(t["split"]) == {"train", "val", "test"}
    assert (t.groupby("lesion_id")["split"].nunique() == 1).all()
    assert data.lesion_masks is None


def test_isic2018_task1_images_with_masks(tmp_path):
    make_isic2018_task1(tmp_path)
    data = load_source("isic2018_task1", tmp_path, image_size=20)
    assert data.classes == ("lesion",) and (data.table["label"] == 0).all()
    assert data.table["malignant"].isna().all()
    assert list(data.table["split"]) == ["train"] * 3 + ["val", "test"]
    assert data.lesion_masks.shape == (5, 20, 20)
    assert np.allclose(data.table["centroid_x"], 14.5 / 45)


def test_isic2019_unknown_class_downsampled_names_and_metadata(tmp_path):
    make_isic2019(tmp_path)
    t = load_source("isic2019", tmp_path, image_size=16).table
    assert list(t["condition"]) == ISIC2019
    assert t["image_id"][1] == "ISIC_0000001_downsampled"
    malignant = dict(zip(t["condition"], t["malignant"]))
    assert malignant["MEL"] and malignant["SCC"] and malignant["BCC"] and malignant["AK"]
    assert not malignant["NV"] and not malignant["VASC"] and pd.isna(malignant["UNK"])
    assert list(t["lesion_id"][:6]) == [f"BCN_{i // 3:07d}" for i in range(6)]
    assert t["lesion_id"][6:].isna().all()


def test_isic2020_patient_grouped_splits_and_target(tmp_path):
    truth = make_isic2020(tmp_path)
    data = load_source("isic2020", tmp_path, image_size=16)
    t = data.table.set_index("image_id").loc[truth["image_name"]]
    assert list(t["malignant"]) == list(truth["target"].astype(bool))
    assert list(t["patient_id"]) == list(truth["patient_id"])
    assert data.classes == ("melanoma", "nevus")
    assert set(t["split"]) == {"train", "val", "test"}
    assert (data.table.groupby("patient_id")["split"].nunique() == 1).all()


def test_isic2020_ground_truth_csv_without_target_column(tmp_path):
    truth = make_isic2020(tmp_path, n_patients=4)
    (tmp_path / "train.csv").rename(tmp_path / "ISIC_2020_Training_GroundTruth.csv")
    frame = pd.read_csv(tmp_path / "ISIC_2020_Training_GroundTruth.csv").drop(columns="target")
    frame.to_csv(tmp_path / "ISIC_2020_Training_GroundTruth.csv", index=False)
    (tmp_path / "jpeg").rename(tmp_path / "ISIC_2020_Training_JPEG")
    t = read_records("isic2020", tmp_path)
    assert list(t["malignant"]) == list(truth["target"].astype(bool))


def test_fitzpatrick17k_unknown_type_and_three_partition(tmp_path):
    truth = make_fitzpatrick(tmp_path)
    data = load_source("fitzpatrick17k", tmp_path, image_size=24)
    t = data.table
    assert list(t["image_id"]) == list(truth["md5hash"])
    assert t["fitzpatrick"].tolist()[0] == 3 and pd.isna(t["fitzpatrick"][1]) and t["fitzpatrick"][2] == 6
    assert list(t["malignant"]) == [False, True, False, False]
    assert data.classes == ("basal cell carcinoma", "psoriasis", "seborrheic keratosis")
    assert data.images.shape == (4, 24, 24, 3)


@pytest.mark.parametrize("column", ["malignant", "malignancy(malig=1)"])
def test_ddi_both_malignancy_columns_and_skin_tone_groups(tmp_path, column):
    make_ddi(tmp_path, column)
    t = load_source("ddi", tmp_path, image_size=16).table
    assert list(t["image_id"]) == ["000001", "000002", "000003"]
    assert list(t["malignant"]) == [True, False, True]
    assert t["fitzpatrick"].isna().all()
    assert list(t["fitzpatrick_group"]) == [12, 34, 56]


def test_dermamnist_official_split_labels_and_resize(tmp_path):
    arrays = make_dermamnist(tmp_path)
    data = load_source("dermamnist", tmp_path, image_size=32)
    assert data.images.shape == (12, 32, 32, 3) and data.lesion_masks is None
    assert list(data.table["split"]) == ["train"] * 7 + ["val"] * 2 + ["test"] * 3
    labels = np.concatenate([arrays[f"{s}_labels"].ravel() for s in ("train", "val", "test")])
    assert (data.table["label"].to_numpy() == labels).all()
    assert list(data.table["malignant"]) == [int(v) in (0, 1, 4) for v in labels]  # akiec, bcc, mel
    native = load_source("dermamnist", tmp_path, image_size=28)
    assert (native.images[:7] == arrays["train_images"]).all()


def test_dermamnist_picks_the_smallest_file_at_least_the_size(tmp_path):
    make_dermamnist(tmp_path)
    big = make_dermamnist(tmp_path, "dermamnist_64.npz", side=64)
    data = load_source("dermamnist", tmp_path, image_size=64)
    assert (data.images[:7] == big["train_images"]).all()


def test_folder_with_named_columns_masks_and_split(tmp_path):
    make_folder(tmp_path)
    data = load_source("folder", tmp_path, 16, image_column="file", label_column="diagnosis",
                       mask_column="seg", split_column="fold")
    assert data.classes == ("acne", "eczema")
    assert list(data.table["image_id"]) == [f"photos/{c}/img{i}" for i, c in
                                            enumerate(["eczema", "acne", "eczema", "acne"])]
    assert list(data.table["split"]) == ["train", "train", "val", "test"]
    assert data.lesion_masks.shape == (4, 16, 16) and data.table["malignant"].isna().all()


def test_read_records_decodes_nothing_and_keeps_paths(tmp_path):
    make_ham(tmp_path, n_lesions=3)
    table = read_records("ham10000", tmp_path)
    assert all(Path(p).is_file() for p in table["image_path"])
    assert all(p.endswith("_segmentation.png") for p in table["mask_path"])


# ------------------------------------------------------------------------------------------ bad input

def test_missing_folder_says_what_to_put_there(tmp_path):
    with pytest.raises(SourceError) as error:
        load_source("ham10000", tmp_path / "absent", 16)
    text = str(error.value)
    assert "absent" in text and "put the HAM10000 files here" in text and "HAM10000_metadata.csv" in text


def test_missing_csv_and_image_folder_are_both_named(tmp_path):
    problems = verify("isic2020", tmp_path)
    text = messages(problems)
    assert "train.csv not found" in text and "jpeg/train" in text and len(problems) == 2


def test_missing_column_names_column_csv_and_columns_found(tmp_path):
    make_ham(tmp_path, n_lesions=2, masks=False)
    frame = pd.read_csv(tmp_path / "HAM10000_metadata.csv").drop(columns="dx")
    frame.to_csv(tmp_path / "HAM10000_metadata.csv", index=False)
    with pytest.raises(SourceError, match=r"column 'dx' missing from HAM10000_metadata.csv; "
                                          r"columns found: lesion_id, image_id, dx_type"):
        load_source("ham10000", tmp_path, 16)


def test_missing_image_is_named(tmp_path):
    truth = make_ham(tmp_path, n_lesions=3, masks=False)
    absent = truth["image_id"][2]
    next(tmp_path.glob(f"*/{absent}.jpg")).unlink()
    with pytest.raises(SourceError, match=f"image '{absent}' .* not found in HAM10000_images_part_1/"):
        load_source("ham10000", tmp_path, 16)


def test_truncated_jpeg_is_named_as_corrupt(tmp_path):
    truth = make_isic2020(tmp_path, n_patients=3)
    bad = tmp_path / "jpeg" / "train" / f"{truth['image_name'][1]}.jpg"
    truncate(bad)
    with pytest.raises(SourceError) as error:
        load_source("isic2020", tmp_path, 16)
    assert str(bad) in str(error.value) and "corrupt" in str(error.value)


def test_mask_of_wrong_size_is_named_with_both_sizes(tmp_path):
    truth = make_ham(tmp_path, n_lesions=2)
    mask = tmp_path / HAM_MASKS / f"{truth['image_id'][0]}_segmentation.png"
    write_mask(mask, size=(W + 1, H))
    with pytest.raises(SourceError) as error:
        load_source("ham10000", tmp_path, 16)
    assert str(mask) in str(error.value) and "61x45 but its image is 60x45" in str(error.value)


def test_verify_reports_every_problem_in_one_pass(tmp_path):
    truth = make_ham(tmp_path, n_lesions=6)
    ids = list(truth["image_id"])
    next(tmp_path.glob(f"HAM*part*/{ids[0]}.jpg")).unlink()  # missing image
    truncate(next(tmp_path.glob(f"HAM*part*/{ids[1]}.jpg")))  # corrupt image
    write_mask(tmp_path / HAM_MASKS / f"{ids[2]}_segmentation.png", size=(10, 10))  # wrong size
    (tmp_path / HAM_MASKS / f"{ids[3]}_segmentation.png").unlink()  # missing mask
    frame = pd.read_csv(tmp_path / "HAM10000_metadata.csv")
    frame.loc[4, "dx"] = "melanomaa"  # a class outside the list
    frame.to_csv(tmp_path / "HAM10000_metadata.csv", index=False)

    problems = verify("ham10000", tmp_path)
    fields = sorted(p.field for p in problems)
    assert fields == ["dx", "image", "image_id", "mask", "mask"], messages(problems)
    text = messages(problems)
    assert ids[0] in text and ids[1] in text and "10x10" in text and "melanomaa" in text
    with pytest.raises(SourceError, match="5 problem"):
        load_source("ham10000", tmp_path, 16)
    assert verify("ham10000", tmp_path / "absent")[0].field == "folder"


def test_load_error_lists_ten_problems_and_counts_the_rest(tmp_path):
    make_ham(tmp_path, n_lesions=10, masks=False)
    for path in tmp_path.glob("HAM*part*/*.jpg"):
        path.unlink()
    with pytest.raises(SourceError) as error:
        load_source("ham10000", tmp_path, 16)
    assert len(error.value.problems) == 19 and "... and 9 more" in str(error.value)


def test_one_hot_row_with_two_classes_and_missing_part_folder(tmp_path):
    make_isic2018_task3(tmp_path, n=7)
    csv = tmp_path / "ISIC2018_Task3_Training_GroundTruth" / "ISIC2018_Task3_Training_GroundTruth.csv"
    frame = pd.read_csv(csv)
    frame.loc[3, "MEL"] = 1.0
    frame.to_csv(csv, index=False)
    text = messages(verify("isic2018_task3", tmp_path))
    assert "line 5: expected exactly one class marked 1" in text


def test_task1_without_masks_and_isic2017_with_partial_masks(tmp_path):
    make_isic2018_task1(tmp_path / "t1")
    for mask in (tmp_path / "t1" / "ISIC2018_Task1_Validation_GroundTruth").iterdir():
        mask.unlink()
    assert "mask file not found" in messages(verify("isic2018_task1", tmp_path / "t1"))

    make_isic2017(tmp_path / "i17")
    for mask in (tmp_path / "i17" / "ISIC-2017_Test_v2_Part1_GroundTruth").iterdir():
        mask.unlink()
    (tmp_path / "i17" / "ISIC-2017_Test_v2_Part1_GroundTruth").rmdir()
    assert "ISIC-2017_Test_v2_Part1_GroundTruth" in messages(verify("isic2017", tmp_path / "i17"))
    assert load_source("isic2017", tmp_path / "i17", 16, masks=False).lesion_masks is None


def test_bad_values_are_named(tmp_path):
    make_fitzpatrick(tmp_path / "fitz")
    frame = pd.read_csv(tmp_path / "fitz" / "fitzpatrick17k.csv")
    frame.loc[0, "fitzpatrick_scale"] = 7
    frame.to_csv(tmp_path / "fitz" / "fitzpatrick17k.csv", index=False)
    assert "Fitzpatrick type '7'" in messages(verify("fitzpatrick17k", tmp_path / "fitz"))

    make_ddi(tmp_path / "ddi")
    frame = pd.read_csv(tmp_path / "ddi" / "ddi_metadata.csv")
    frame["malignant"] = frame["malignant"].astype(object)
    frame.loc[1, "malignant"] = "maybe"
    frame.loc[2, "skin_tone"] = 78
    frame.to_csv(tmp_path / "ddi" / "ddi_metadata.csv", index=False)
    text = messages(verify("ddi", tmp_path / "ddi"))
    assert "'maybe' as malignant/benign" in text and "skin tone '78'" in text


def test_dermamnist_corrupt_file_and_missing_key(tmp_path):
    make_dermamnist(tmp_path / "a")
    truncate(tmp_path / "a" / "dermamnist.npz")
    assert "corrupt .npz" in messages(verify("dermamnist", tmp_path / "a"))

    arrays = make_dermamnist(tmp_path / "b")
    del arrays["val_labels"]
    np.savez(tmp_path / "b" / "dermamnist.npz", **arrays)
    with pytest.raises(SourceError, match="key 'val_labels' missing from dermamnist.npz"):
        load_source("dermamnist", tmp_path / "b", 28)
    assert verify("dermamnist", tmp_path / "c")[0].field == "folder"


def test_folder_empty_mask_cell_is_named(tmp_path):
    make_folder(tmp_path)
    frame = pd.read_csv(tmp_path / "labels.csv")
    frame.loc[2, "seg"] = None
    frame.to_csv(tmp_path / "labels.csv", index=False)
    problems = verify("folder", tmp_path, image_column="file", label_column="diagnosis", mask_column="seg")
    assert [(p.field, p.message) for p in problems] == [("seg", "line 4: empty mask name")]


def test_folder_missing_named_column_and_no_data_root(tmp_path):
    make_folder(tmp_path)
    with pytest.raises(SourceError, match="column 'path' missing from labels.csv; columns found: file"):
        load_source("folder", tmp_path, 16, image_column="path", label_column="diagnosis")
    with pytest.raises(ValueError, match="pass data_root"):
        load_source("ham10000", None, 16)


def test_docs_cover_every_source():
    text = (Path(__file__).resolve().parents[1] / "docs" / "real_datasets.md").read_text()
    for name in SOURCES:
        assert f'dataset="{name}"' in text


# ------------------------------------------------------------------------ real-data robustness (issue 9)

def write_flat(path: Path, colour, size=(W, H), centre=None) -> None:
    """A lossless image of one colour, optionally with a lesion of another colour in the mask's BOX."""
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.zeros((size[1], size[0], 3), np.uint8) + np.asarray(colour, np.uint8)
    if centre is not None:
        left, top, right, bottom = BOX
        pixels[top:bottom, left:right] = centre
    Image.fromarray(pixels).save(path)


def test_skin_colour_fallbacks_are_measured_and_recorded(tmp_path):
    # Image 0: ordinary (skin outside a lesion box). Image 1: its mask covers the whole image (six official
    # HAM10000 masks do), so the colour comes from the border ring. Image 2: black everywhere (no usable
    # skin), so it gets the median of the others. The fixture's images are PNG: exact colours.
    rows = [{"lesion_id": f"HAM_{i}", "image_id": f"ISIC_{i}", "dx": dx} for i, dx in enumerate(["nv", "mel", "bkl"])]
    write_csv(tmp_path / "HAM10000_metadata.csv", rows)
    part, masks = tmp_path / "HAM10000_images_part_1", tmp_path / HAM_MASKS
    write_flat(part / "ISIC_0.png", (200, 150, 120), centre=(60, 40, 30))
    write_flat(part / "ISIC_1.png", (180, 120, 100), centre=(90, 50, 40))
    write_flat(part / "ISIC_2.png", (0, 0, 0))
    write_mask(masks / "ISIC_0_segmentation.png")
    for i in (1, 2):
        write_mask(masks / f"ISIC_{i}_segmentation.png", box=(0, 0, W, H))
    table = load_source("ham10000", tmp_path, image_size=32).table.set_index("image_id")
    colours = table[["skin_r", "skin_g", "skin_b"]].to_numpy()
    assert list(table["skin_source"]) == ["healthy pixels", "border ring", "dataset median"]
    # Lanczos resizing blends the lesion's edge into a few healthy pixels: a few units of tolerance
    assert np.allclose(colours[0], [200, 150, 120], atol=4)
    assert np.allclose(colours[1], [180, 120, 100], atol=1)  # the ring misses the "lesion" box
    assert np.allclose(colours[2], np.median(colours[:2], axis=0))


def test_dataset_without_usable_skin_loads_but_maps_are_refused(tmp_path):
    from dermgan.data.semantic import MapDataset

    write_csv(tmp_path / "HAM10000_metadata.csv", [{"lesion_id": "HAM_0", "image_id": "ISIC_0", "dx": "nv"}])
    write_flat(tmp_path / "HAM10000_images_part_1" / "ISIC_0.png", (5, 5, 5))
    write_mask(tmp_path / HAM_MASKS / "ISIC_0_segmentation.png")
    data = load_source("ham10000", tmp_path, image_size=16)
    assert data.table[["skin_r", "skin_g", "skin_b"]].isna().all().all()
    with pytest.raises(ValueError, match="no image has skin_r/g/b in its table or .* usable skin"):
        MapDataset(data)


def test_folder_reads_its_documented_mask_and_split_columns_without_options(tmp_path):
    from dermgan.data import load_dataset

    rows = []
    for i, (label, split) in enumerate([("acne", "train"), ("eczema", "train"), ("acne", "test"),
                                        ("eczema", "val")]):
        write_image(tmp_path / "img" / f"{i}.jpg", seed=i)
        write_mask(tmp_path / "masks" / f"{i}.png")
        rows.append({"image": f"img/{i}.jpg", "label": label, "mask": f"masks/{i}.png", "split": split})
    write_csv(tmp_path / "labels.csv", rows)
    data = load_dataset("folder", tmp_path, image_size=16)  # what the CLI and the notebooks call
    assert list(data.table["split"]) == ["train", "train", "test", "val"]
    assert data.lesion_masks is not None and np.allclose(data.table["lesion_area"], 100 / 45 ** 2)
    assert load_source("folder", tmp_path, 16, masks=False).lesion_masks is None
    write_csv(tmp_path / "plain.csv", [{k: r[k] for k in ("image", "label")} for r in rows])
    with pytest.raises(SourceError, match="masks=True but plain.csv has no mask column"):
        load_source("folder", tmp_path, 16, masks=True, csv="plain.csv")


def test_alpha_channel_opaque_is_dropped_transparent_is_refused(tmp_path):
    rgba = np.zeros((H, W, 4), np.uint8)
    rgba[..., :3], rgba[..., 3] = (10, 200, 30), 255
    (tmp_path / "img").mkdir()
    Image.fromarray(rgba, "RGBA").save(tmp_path / "img" / "opaque.png")
    rgba[:9, :, 3] = 0  # the top 9 of 45 rows see-through
    Image.fromarray(rgba, "RGBA").save(tmp_path / "img" / "clear.png")
    write_csv(tmp_path / "labels.csv", [{"image": "img/opaque.png", "label": "a"}])
    assert (load_source("folder", tmp_path, 8).images == (10, 200, 30)).all()
    write_csv(tmp_path / "labels.csv", [{"image": "img/clear.png", "label": "a"}])
    problems = verify("folder", tmp_path)
    assert [p.field for p in problems] == ["image"] and "20.0% of the pixels are transparent" in messages(problems)


def test_too_large_image_is_called_large_not_corrupt(tmp_path, monkeypatch):
    make_isic2020(tmp_path, n_patients=1)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # the 64 x 48 fixture is over twice this
    text = messages(verify("isic2020", tmp_path))
    assert "image too large to decode safely" in text and "MAX_IMAGE_PIXELS" in text
    assert "corrupt" not in text


# ------------------------------------------------------------- inputs read as they are (issue 24)

def write_folder(root: Path, files: dict[str, Image.Image], masks: dict[str, Image.Image] | None = None,
                 labels=None) -> None:
    """A "folder" dataset: each image (and mask) saved as given, whatever its mode; one CSV row per image."""
    rows = []
    for i, (name, image) in enumerate(files.items()):
        (root / "img").mkdir(parents=True, exist_ok=True)
        image.save(root / "img" / name)
        row = {"image": f"img/{name}", "label": labels[i] if labels else "x"}
        if masks:
            (root / "masks").mkdir(exist_ok=True)
            masks[name].save(root / "masks" / f"{Path(name).stem}.png")
            row["mask"] = f"masks/{Path(name).stem}.png"
        rows.append(row)
    write_csv(root / "labels.csv", rows)


def flat(mode: str, value, size=(W, H)) -> Image.Image:
    return Image.new(mode, size, value)


def test_sixteen_bit_and_float_grey_images_are_scaled_to_8_bits_by_their_full_scale(tmp_path):
    # Each file one grey level; the rule: 8-bit = round(value * 255 / full scale), 65535 for 16 and 32-bit
    # integers, 1 for floats. PIL's own conversion made the 16-bit ones white and the float one black.
    grey16 = Image.fromarray(np.full((H, W), 32768, np.uint16))
    assert grey16.mode == "I;16"
    big_endian = Image.frombytes("I;16B", (W, H), np.full((H, W), 16384, ">u2").tobytes())
    files = {"half.png": grey16, "quarter.tif": big_endian,
             "int32.tif": Image.fromarray(np.full((H, W), 1000, np.int32)),
             "float.tif": Image.fromarray(np.full((H, W), 0.25, np.float32))}
    write_folder(tmp_path, files)
    assert [Image.open(tmp_path / "img" / n).mode for n in files] == ["I;16", "I;16B", "I", "F"]
    data = load_source("folder", tmp_path, 8)
    assert [int(v) for v in data.images[:, 4, 4, 0]] == [128, 64, 4, 64]  # 127.5, 63.75, 3.89, 63.75 rounded
    assert (data.images == data.images[:, :1, :1, :1]).all()  # grey in all three channels


def test_palette_cmyk_one_bit_and_grey_alpha_images_are_read_by_their_mode(tmp_path):
    palette = Image.new("P", (W, H), 1)
    palette.putpalette([0, 0, 0, 10, 120, 230] + [0] * 762)
    files = {"palette.png": palette, "cmyk.tif": flat("CMYK", (0, 255, 0, 64)), "bits.png": flat("1", 1),
             "grey_alpha.png": flat("LA", (90, 255))}
    write_folder(tmp_path, files)
    data = load_source("folder", tmp_path, 8)
    # CMYK without a profile: R = 255 - C - K, G = 255 - M - K, B = 255 - Y - K, clipped at 0
    assert [tuple(int(v) for v in data.images[i, 4, 4]) for i in range(4)] == [
        (10, 120, 230), (191, 0, 191), (255, 255, 255), (90, 90, 90)]


def test_images_whose_values_cannot_be_mapped_are_refused_naming_file_and_mode(tmp_path):
    files = {"over.tif": Image.fromarray(np.full((H, W), 70000, np.int32)),
             "bright.tif": Image.fromarray(np.full((H, W), 2.0, np.float32)),
             "lab.tif": flat("LAB", (50, 0, 0)), "fine.png": flat("L", 50)}
    write_folder(tmp_path, files)
    problems = verify("folder", tmp_path)
    assert [(Path(p.path).name, p.field) for p in problems] == [
        ("over.tif", "image"), ("bright.tif", "image"), ("lab.tif", "image")]
    text = messages(problems)
    assert "mode 'I' values 70000..70000 are outside 0..65535" in text
    assert "mode 'F' values 2..2 are outside 0..1" in text and "image mode 'LAB' is not supported" in text
    assert all("\n" not in str(p) for p in problems)


def box_mask(mode: str, lesion, background=0, size=(W, H), box=BOX) -> Image.Image:
    """A mask of `mode` with `lesion` inside BOX and `background` elsewhere."""
    mask = Image.new(mode, size, background)
    mask.paste(lesion, box)
    return mask


BOX_AREA = 100 / 45 ** 2  # the 10 x 10 box in the 45 x 45 centre square


def test_a_mask_of_any_two_values_has_the_larger_as_lesion(tmp_path):
    red_on_black = box_mask("P", 1)
    red_on_black.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)  # red's grey level, 76, was "no lesion"
    masks = {"a.png": box_mask("L", 100), "b.png": box_mask("L", 1), "c.png": box_mask("1", 1),
             "d.png": red_on_black, "e.png": Image.fromarray(np.asarray(box_mask("L", 255), np.uint16) * 257),
             "f.png": box_mask("L", 7, background=3)}
    write_folder(tmp_path, {n: flat("RGB", (200, 160, 140)) for n in masks}, masks)
    data = load_source("folder", tmp_path, 16)
    assert np.allclose(data.table["lesion_area"], BOX_AREA)
    assert np.allclose(data.table["centroid_x"], 14.5 / 45)
    assert np.allclose(data.table["centroid_y"], 9.5 / 45)
    assert (data.lesion_masks == data.lesion_masks[0]).all() and data.lesion_masks[0].sum() > 0


def test_a_mask_of_more_than_two_values_is_refused_unless_a_threshold_is_given(tmp_path):
    mask = box_mask("L", 255)
    mask.paste(100, (0, 0, W, 5))  # a band of grey along the top: three values
    write_folder(tmp_path, {"a.png": flat("RGB", (200, 160, 140))}, {"a.png": mask})
    problems = verify("folder", tmp_path)
    assert [(Path(p.path).name, p.field) for p in problems] == [("a.png", "mask")]
    assert "mask has 3 distinct values (0, 100, 255)" in problems[0].message
    assert "\n" not in problems[0].message
    # half the full scale: 255 is lesion, 100 is not; a third of it: both are
    assert np.allclose(load_source("folder", tmp_path, 16, mask_threshold=0.5).table["lesion_area"], BOX_AREA)
    band = 5 * 45 / 45 ** 2  # rows 0..4 of the centre square, BOX starts at row 5
    assert np.allclose(load_source("folder", tmp_path, 16, mask_threshold=1 / 3).table["lesion_area"],
                       BOX_AREA + band)
    for bad in (0, 1.5, True, "0.5"):
        with pytest.raises(ValueError, match="mask_threshold must be a share of the full scale"):
            verify("folder", tmp_path, mask_threshold=bad)


def test_ham10000_anti_aliased_palette_masks_follow_its_declared_threshold(tmp_path):
    # HAM10000 masks resized by third parties are greyscale / grey-palette PNGs with anti-aliased edges.
    # Its spec declares lesion = value >= half the full scale: here columns of 0, 64, 127, 128, 200, 255.
    truth = make_ham(tmp_path, n_lesions=2)
    levels = np.repeat(np.array([0, 64, 127, 128, 200, 255], np.uint8), 10)[:W]
    values = np.tile(levels, (H, 1))
    for image_id in truth["image_id"]:
        grey = Image.fromarray(values, "L").convert("P")  # a palette mask whose palette holds grey levels
        grey.save(tmp_path / HAM_MASKS / f"{image_id}_segmentation.png")
    assert Image.open(tmp_path / HAM_MASKS / f"{truth['image_id'][0]}_segmentation.png").mode == "P"
    table = load_source("ham10000", tmp_path, 16).table
    centre = values[:, 7:52]  # the centre square, columns 7..51
    assert np.allclose(table["lesion_area"], (centre >= 128).mean())
    assert np.allclose(table["centroid_x"], np.flatnonzero(centre[0] >= 128).mean() / 45)


def test_the_same_image_id_in_both_parts_is_reported_with_both_paths(tmp_path):
    truth = make_ham(tmp_path, n_lesions=3, masks=False)
    image_id = truth["image_id"][1]  # in part_1
    first = tmp_path / "HAM10000_images_part_1" / f"{image_id}.jpg"
    copy = tmp_path / "HAM10000_images_part_2" / f"{image_id}.jpg"
    write_image(copy, seed=99)  # other pixels under the same name: which one is the record?
    problems = verify("ham10000", tmp_path)
    assert len(problems) == 1 and str(first) in problems[0].message and str(copy) in problems[0].message
    with pytest.raises(SourceError, match="with different content"):
        load_source("ham10000", tmp_path, 16)
    copy.write_bytes(first.read_bytes())  # a byte-identical copy (Kaggle ships two copies of each part)
    assert verify("ham10000", tmp_path) == []


# ------------------------------------------------------------------ real-data settings (issue 24)

def write_ham(root: Path, lesions: list[tuple[str, int]]) -> pd.DataFrame:
    """HAM10000's layout with the given (dx, number of images) per lesion; images alternate between parts."""
    rows = []
    for k, (dx, n) in enumerate(lesions):
        rows += [{"lesion_id": f"HAM_{k:07d}", "image_id": f"ISIC_{len(rows) + j:07d}", "dx": dx}
                 for j in range(n)]
    for i, row in enumerate(rows):
        part = root / f"HAM10000_images_part_{1 + i % 2}"
        write_image(part / f"{row['image_id']}.png", size=(8, 6), seed=i)
    write_csv(root / "HAM10000_metadata.csv", rows)
    return pd.DataFrame(rows)


# Like HAM10000 at 1/50: many nevi (lesions of 1-3 images), a few of each rarer class, df only three lesions.
HAM_LIKE = ([("nv", 1 + k % 3) for k in range(60)] + [("mel", 1 + k % 2) for k in range(12)]
            + [("bkl", 1)] * 10 + [("bcc", 1)] * 6 + [("akiec", 1)] * 4 + [("vasc", 1)] * 3 + [("df", 1)] * 3)


def split_counts(table: pd.DataFrame) -> pd.DataFrame:
    return pd.crosstab(table["condition"], table["split"]).reindex(columns=["train", "val", "test"],
                                                                   fill_value=0)


def test_derived_splits_are_stratified_by_class_and_never_cut_a_lesion(tmp_path):
    truth = write_ham(tmp_path, HAM_LIKE)
    table = read_records("ham10000", tmp_path)
    counts = split_counts(table)
    assert (counts > 0).all().all(), counts  # every class (all have >= 3 lesions) reaches every split
    assert (table.groupby("lesion_id")["split"].nunique() == 1).all()
    shares = table["split"].value_counts(normalize=True)
    assert abs(shares["val"] - 0.15) < 0.04 and abs(shares["test"] - 0.15) < 0.04
    # the split is a function of the records, not of their order in the CSV
    truth.sample(frac=1, random_state=3).to_csv(tmp_path / "HAM10000_metadata.csv", index=False)
    again = read_records("ham10000", tmp_path).set_index("image_id").loc[table["image_id"]]
    assert list(again["split"]) == list(table["split"])


def test_fractions_and_real_images_of_a_run_apply_to_real_data(tmp_path):
    from dermgan.data import load_for_run
    from dermgan.runtime import start

    write_ham(tmp_path / "ham", HAM_LIKE)
    n = len(read_records("ham10000", tmp_path / "ham"))
    # the synthetic dataset's size does not cap a real one: by default all of it is used
    whole = start("smoke", run_dir=str(tmp_path / "whole"), dataset="ham10000", data_root=str(tmp_path / "ham"),
                  data={"image_size": 32, "n_images": 60, "allow_upsampling": True})  # the fixture's 6 px images
    assert len(load_for_run(whole)) == n
    ctx = start("smoke", run_dir=str(tmp_path / "run"), dataset="ham10000", data_root=str(tmp_path / "ham"),
                data={"image_size": 32, "val_fraction": 0.3, "test_fraction": 0.2, "real_images": 60,
                      "allow_upsampling": True})
    data = load_for_run(ctx)
    assert abs(len(data) - 60) <= 3 < n - 60  # whole lesions: a few images either side of the quota
    shares = data.table["split"].value_counts(normalize=True)
    assert abs(shares["val"] - 0.3) < 0.06 and abs(shares["test"] - 0.2) < 0.06
    assert (split_counts(data.table) > 0).all().all()  # 60 images still hold every class in every split


def test_a_subsample_keeps_each_split_and_class_share_and_whole_lesions(tmp_path):
    write_ham(tmp_path, HAM_LIKE)
    full = read_records("ham10000", tmp_path)
    part = read_records("ham10000", tmp_path, n_images=80)
    assert set(part["image_id"]) < set(full["image_id"])
    # nested: an image keeps its split, so test images of a small run are never training images of a big one
    placed = full.set_index("image_id")["split"]
    assert list(placed.loc[part["image_id"]]) == list(part["split"])
    whole = full.groupby("lesion_id").size()
    assert (part.groupby("lesion_id").size() == whole.loc[part["lesion_id"].unique()]).all()
    expected = split_counts(full) * len(part) / len(full)
    assert (split_counts(part) >= 1).all().all() and (abs(split_counts(part) - expected) <= 2).all().all()
    pd.testing.assert_frame_equal(part, read_records("ham10000", tmp_path, n_images=80))  # fixed seed
    with pytest.raises(SourceError, match="n_images=5 is too few to keep every class in every split"):
        read_records("ham10000", tmp_path, n_images=5)


def test_official_splits_are_kept_and_other_fractions_for_them_refused(tmp_path):
    make_isic2017(tmp_path)
    official = list(read_records("isic2017", tmp_path)["split"])
    assert official == ["train"] * 4 + ["val"] * 2 + ["test"]
    # the profiles' fractions (0.15) are the default: they leave a shipped split as it is
    default = read_records("isic2017", tmp_path, val_fraction=0.15, test_fraction=0.15)
    assert list(default["split"]) == official
    with pytest.raises(SourceError) as error:
        load_source("isic2017", tmp_path, 16, val_fraction=0.3, test_fraction=0.1)
    assert [p.field for p in error.value.problems] == ["val_fraction", "test_fraction"]
    assert "isic2017 ships its own val split, so val_fraction=0.3 cannot apply" in str(error.value)
    # a subsample keeps every image's official split
    part = read_records("isic2017", tmp_path, n_images=6)  # one of the two training nevi goes
    assert len(part) == 6 and set(part["split"]) == {"train", "val", "test"}
    assert list(part["split"]) == [dict(zip(read_records("isic2017", tmp_path)["image_id"], official))[i]
                                   for i in part["image_id"]]


def test_a_split_column_without_training_images_is_refused_before_any_decoding(tmp_path):
    rows = []
    for i, label in enumerate(["acne", "eczema"] * 3):
        write_image(tmp_path / "img" / f"{i}.jpg", seed=i)
        rows.append({"image": f"img/{i}.jpg", "label": label, "split": "test"})
    write_csv(tmp_path / "labels.csv", rows)
    with pytest.raises(SourceError, match="no training images"):  # once a ZeroDivisionError in notebook 02
        load_source("folder", tmp_path, 16)
    truncate(tmp_path / "img" / "0.jpg")  # a decode would find this; the split problem comes without one
    with pytest.raises(SourceError, match=r"no training images: the dataset's own split puts every image in "
                                          r"val or test \(test: 6\)") as error:
        split_summary("folder", tmp_path)
    assert [p.field for p in error.value.problems] == ["split"]


def test_classes_too_small_for_every_split_are_reported_up_front(tmp_path):
    labels = ["acne"] * 6 + ["eczema"] * 2
    write_folder(tmp_path, {f"{i}.png": flat("RGB", (i, 100, 100)) for i in range(8)}, labels=labels)
    with pytest.warns(UserWarning, match=r"folder: class 'eczema' has 2 image\(s\), none in (val|test) \(a "
                                         r"class needs 3 images") as caught:
        load_source("folder", tmp_path, 8)
    assert len(caught) == 1 and "\n" not in str(caught[0].message)
    summary = split_summary("folder", tmp_path)
    # two images reach train and one of val / test
    assert len(summary.notes) == 1
    assert re.fullmatch(r"class 'eczema' has 2 image\(s\), none in (val|test)", summary.notes[0])


def test_split_summary_counts_what_a_run_loads_from_the_records_alone(tmp_path):
    write_ham(tmp_path, HAM_LIKE)
    summary = split_summary("ham10000", tmp_path, n_images=80, val_fraction=0.2)
    data = load_source("ham10000", tmp_path, 8, n_images=80, val_fraction=0.2)
    expected = split_counts(data.table).reindex(list(data.classes))
    assert (summary.counts.to_numpy() == expected.to_numpy()).all() and summary.n_images == len(data)
    assert list(summary.counts.index) == list(data.classes) and summary.shipped == () and summary.notes == ()
    for path in tmp_path.glob("HAM10000_images_part_*/*.png"):
        truncate(path)  # nothing decoded: the same answer from broken image files
    assert split_summary("ham10000", tmp_path, n_images=80, val_fraction=0.2).counts.equals(summary.counts)
