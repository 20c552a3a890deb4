"""dermgan.synthesis (`python -m dermgan synthesize`): a labelled dataset from a freshly trained smoke
checkpoint reads back through the `folder` reader with zero problems, every image is its map's image, the same
seed gives the same files, refusals come in one line before anything is written, and one image comes from one
call."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from dermgan import synthesis
from dermgan.data import load_for_run
from dermgan.data.conditions import CONDITION_NAMES
from dermgan.data.semantic import SemanticMap, decode_maps, encode_maps, fitzpatrick_palette
from dermgan.data.sources import load_source, verify
from dermgan.integrity import digest_path, file_digest
from dermgan.models import dermgan as dg
from dermgan.models import melanogan as mg
from dermgan.runtime import release_run_dir, start
from dermgan.train import data_fingerprint

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A smoke run directory with a DermGAN and a DCGAN trained for a few steps (32 px)."""
    run_dir = tmp_path_factory.mktemp("run") / "runs" / "smoke"
    ctx = start("smoke", str(run_dir), seed=0, device="cpu", dermgan={"steps": 4}, melanogan={"steps": 4})
    train = load_for_run(ctx).split("train")
    dg.train_variant("dermgan", ctx, train)
    mg.train_model("dcgan", ctx, train)
    release_run_dir(ctx.run_dir)
    return {"run_dir": run_dir, "train": train, "dermgan": run_dir / "checkpoints" / "dermgan",
            "dcgan": run_dir / "checkpoints" / "dcgan"}


@pytest.fixture(scope="module")
def dataset(trained, tmp_path_factory):
    out = tmp_path_factory.mktemp("synth") / "data"
    synthesis.synthesize(trained["dermgan"], out, n=2, fitzpatrick="1,6", seed=3, batch_size=5, device="cpu",
                         log=lambda *a: None)
    return out


def read_png(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path))


def test_the_dataset_reads_back_through_the_folder_reader_with_zero_problems(dataset):
    assert verify("folder", dataset) == []
    data = load_source("folder", dataset, 32)
    table = pd.read_csv(dataset / "labels.csv")
    assert len(data) == len(table) == len(CONDITION_NAMES) * 2 * 2  # 8 conditions x 2 types x n=2
    assert set(data.classes) == set(CONDITION_NAMES)
    assert pd.crosstab(table["label"], table["fitzpatrick"]).to_numpy().tolist() == [[2, 2]] * 8
    for _, row in table.iterrows():
        index = data.table.index[data.table["image_id"] == str(Path(row["image"]).with_suffix(""))][0]
        assert data.classes[data.table.loc[index, "label"]] == row["label"]
        assert np.array_equal(data.images[index], read_png(dataset / row["image"]))
        assert np.array_equal(data.lesion_masks[index].astype(bool), read_png(dataset / row["mask"]) == 255)
        assert data.lesion_masks[index].mean() == pytest.approx(row["lesion_area"], abs=1e-4)


def test_every_image_is_the_generators_image_of_its_map_and_masks_are_the_maps_lesions(dataset, trained):
    table = pd.read_csv(dataset / "labels.csv")
    maps = np.stack([read_png(dataset / m) for m in table["semantic_map"]])
    labels, colours = decode_maps(maps.transpose(0, 3, 1, 2) / 127.5 - 1.0)
    masks = np.stack([read_png(dataset / m) == 255 for m in table["mask"]])
    assert np.array_equal(masks, labels > 0)
    conditions = [CONDITION_NAMES[c] for c in (np.where(labels > 0, labels, 99).min(axis=(1, 2)) - 1)]
    assert conditions == table["label"].tolist()  # each lesion is painted in its condition's colour
    palette = fitzpatrick_palette(trained["train"].table)  # the skin: the training data's colour of the type
    for colour, fitz in zip(colours, table["fitzpatrick"]):
        assert np.abs(colour - palette[fitz]).max() <= 0.5
    G, meta = dg.evaluated_generator(trained["dermgan"], trained_on=None)
    regenerated = dg.generate(G, encode_maps([SemanticMap(lab, col) for lab, col in zip(labels, colours)],
                                             meta["variant"]["encoding"]))
    written = np.stack([read_png(dataset / image) for image in table["image"]])
    assert np.abs(regenerated.astype(int) - written).max() <= 1  # BLAS rounding between batch sizes


def test_the_same_seed_gives_the_same_files_and_another_seed_other_maps(dataset, trained, tmp_path):
    again, other = tmp_path / "again", tmp_path / "other"
    quiet = dict(log=lambda *a: None, device="cpu", batch_size=5)
    synthesis.synthesize(trained["dermgan"], again, n=2, fitzpatrick="1,6", seed=3, **quiet)
    synthesis.synthesize(trained["dermgan"], other, n=2, fitzpatrick="1,6", seed=4, **quiet)

    def files(folder):
        return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
                if p.is_file() and p.name != "provenance.json"}

    assert files(again) == files(dataset)
    areas = [pd.read_csv(folder / "labels.csv")["lesion_area"] for folder in (other, dataset)]
    assert (areas[0] != areas[1]).any()


def test_provenance_names_the_checkpoint_its_digest_training_data_seed_and_settings(dataset, trained):
    record = json.loads((dataset / "provenance.json").read_text())
    checkpoint = trained["dermgan"] / "generator.pt"
    assert record["checkpoint"]["path"] == str(checkpoint.resolve())
    sidecar = digest_path(checkpoint).read_text().split()[0]
    assert record["checkpoint"]["sha256"] == file_digest(checkpoint) == sidecar
    assert data_fingerprint(trained["train"], None).items() <= record["checkpoint"]["provenance"].items()
    assert record["checkpoint"]["step"] == 4 and record["checkpoint"]["family"] == "map-conditioned"
    assert record["run"]["dataset"] == "synthetic" and record["run"]["profile"] == "smoke"
    assert record["request"]["seed"] == 3 and record["request"]["n"] == 2
    assert record["request"]["fitzpatrick"] == [1, 6] and record["n_images"] == 32


@pytest.mark.parametrize("kwargs, message", [
    (dict(conditions="melanoma,melanomaa"), "unknown condition 'melanomaa'; this generator knows: nevus"),
    (dict(n=0), "n must be an integer >= 1, got 0"),
    (dict(n=True), "n must be an integer >= 1, got True"),
    (dict(batch_size=-1), "batch_size must be an integer >= 1"),
    (dict(fitzpatrick="7"), "fitzpatrick is 'all', 'none' or types 1..6"),
    (dict(fitzpatrick="light"), "fitzpatrick is 'all', 'none' or types 1..6"),
])
def test_a_bad_request_is_one_line_and_writes_nothing(trained, tmp_path, kwargs, message):
    out = tmp_path / "out"
    with pytest.raises(synthesis.SynthesisError, match=message) as refused:
        synthesis.synthesize(trained["dermgan"], out, **{"device": "cpu", **kwargs})
    assert "\n" not in str(refused.value)
    assert not out.exists() and list(tmp_path.iterdir()) == []


def test_a_non_empty_folder_is_refused_and_overwrite_replaces_only_a_synthesized_one(trained, tmp_path):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("mine")
    with pytest.raises(synthesis.SynthesisError, match="is not empty; give a new folder, or --overwrite"):
        synthesis.synthesize(trained["dermgan"], mine, device="cpu")
    with pytest.raises(synthesis.SynthesisError, match="holds files synthesize did not write"):
        synthesis.synthesize(trained["dermgan"], mine, device="cpu", overwrite=True)
    assert [p.name for p in mine.iterdir()] == ["notes.txt"]
    replaced = tmp_path / "replaced"
    quiet = dict(log=lambda *a: None, device="cpu")
    synthesis.synthesize(trained["dermgan"], replaced, n=1, fitzpatrick="none", **quiet)
    synthesis.synthesize(trained["dermgan"], replaced, n=1, conditions="acne", fitzpatrick="3",
                         overwrite=True, **quiet)
    assert pd.read_csv(replaced / "labels.csv")["label"].tolist() == ["acne"]
    assert len(list((replaced / "images").rglob("*.png"))) == 1  # nothing left of the replaced dataset
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temporary folder left


def test_skin_as_drawn_keeps_the_donors_types(trained, tmp_path):
    out = synthesis.synthesize(trained["dermgan"], tmp_path / "drawn", n=3, conditions=["melanoma", "acne"],
                               fitzpatrick="none", device="cpu", log=lambda *a: None)
    table = pd.read_csv(out / "labels.csv")
    assert table["label"].tolist() == ["melanoma"] * 3 + ["acne"] * 3
    assert table["fitzpatrick"].between(1, 6).all()


def test_an_unconditional_model_writes_its_class_without_masks(trained, tmp_path):
    out = synthesis.synthesize(trained["dcgan"], tmp_path / "lesions", n=12, seed=2, batch_size=5,
                               device="cpu", log=lambda *a: None)
    assert verify("folder", out) == []
    table = pd.read_csv(out / "labels.csv")
    assert table["label"].unique().tolist() == ["lesion"] and "mask" not in table
    G, _ = mg.load_generator(trained["dcgan"])
    expected = mg.sample_images(G, 12, seed=2)  # one batch here, batches of 5 in synthesize
    written = np.stack([read_png(out / image) for image in table["image"]])
    assert np.abs(expected.astype(int) - written).max() <= 1
    with pytest.raises(synthesis.SynthesisError, match="unconditional model: it makes lesion images only"):
        synthesis.synthesize(trained["dcgan"], tmp_path / "x", conditions="melanoma", device="cpu")


def test_a_checkpoint_of_no_known_family_is_refused(tmp_path):
    from dermgan.train import save_atomic

    save_atomic({"format": "x", "recipe": {"something": 1}, "generator": {}}, tmp_path / "generator.pt")
    with pytest.raises(synthesis.SynthesisError, match="not a generator of a known family"):
        synthesis.load(tmp_path)
    with pytest.raises(synthesis.SynthesisError, match="no generator.pt there"):
        synthesis.load(tmp_path / "missing")


def test_one_image_is_the_generators_image_of_the_map_it_describes(trained):
    image, mask = synthesis.one_image(trained["dermgan"], "melanoma", size=0.1, x=0.3, y=0.6, skin=5, seed=1)
    assert image.dtype == np.uint8 and image.shape == (32, 32, 3) and mask.dtype == bool
    assert mask.mean() == pytest.approx(0.1, rel=0.2)
    ys, xs = np.nonzero(mask)
    assert (xs.mean() + 0.5) / 32 == pytest.approx(0.3, abs=0.04)
    assert (ys.mean() + 0.5) / 32 == pytest.approx(0.6, abs=0.04)
    G, meta = dg.evaluated_generator(trained["dermgan"], trained_on=None)
    semantic = SemanticMap.blank(32, 5).add_lesion("melanoma", 0.1, 0.3, 0.6, seed=1)
    assert np.array_equal(mask, semantic.lesion_mask())
    assert np.array_equal(image, dg.generate(G, encode_maps([semantic], meta["variant"]["encoding"]))[0])
    loaded = synthesis.load(trained["dermgan"], "cpu")
    again, _ = synthesis.one_image(loaded, "melanoma", 0.1, 0.3, 0.6, 5, seed=1)
    assert np.array_equal(again, image)


@pytest.mark.parametrize("kwargs, message", [
    (dict(condition=True), "not the bool True"),
    (dict(condition="melanomaa"), "unknown condition 'melanomaa'"),
    (dict(condition="acne", size=1.5), "area fraction in \\(0, 1\\)"),
    (dict(condition="acne", skin=7), "Fitzpatrick type must be 1..6"),
])
def test_one_image_refuses_a_bool_condition_an_unknown_one_and_impossible_sizes(trained, kwargs, message):
    with pytest.raises(ValueError, match=message):
        synthesis.one_image(trained["dermgan"], **kwargs)


def test_one_image_of_an_unconditional_model_is_refused(trained):
    with pytest.raises(synthesis.SynthesisError, match="unconditional model: it takes no condition"):
        synthesis.one_image(trained["dcgan"], "melanoma")


def test_the_command_line_refuses_in_one_line(trained, tmp_path):
    result = subprocess.run([sys.executable, "-m", "dermgan", "synthesize", str(trained["dermgan"]),
                             str(tmp_path / "out"), "--conditions", "warts", "--device", "cpu"],
                            capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert result.returncode == 1
    assert result.stderr.startswith("error: unknown condition 'warts'; this generator knows: nevus")
    assert result.stderr.count("\n") == 1 and not (tmp_path / "out").exists()
