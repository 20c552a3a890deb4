"""Dataset assembly, splits, the on-disk cache, the torch view and the classifier plumbing."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from dermgan.config import ClassifierConfig
from dermgan.data import RECORD_COLUMNS, ClassifierDataset, load_dataset, load_for_run, stratified_split
from dermgan.data.conditions import CONDITIONS, MALIGNANT

N, SIZE = 120, 32


@pytest.fixture(scope="module")
def cached(tmp_path_factory):
    folder = tmp_path_factory.mktemp("cache")
    return folder, load_dataset(image_size=SIZE, n_images=N, seed=1, cache_dir=folder)


def test_contract_columns_and_types(cached):
    _, data = cached
    assert len(data) == N and data.image_size == SIZE
    assert list(data.table.columns[: len(RECORD_COLUMNS)]) == list(RECORD_COLUMNS)
    assert data.table["image_id"].is_unique
    assert data.table["fitzpatrick"].dtype == "Int64"
    assert data.table["fitzpatrick"].between(1, 6).all()
    assert data.table["lesion_area"].between(0, 1).all()
    assert data.healthy is not None and data.healthy.shape == data.images.shape
    assert data.table["malignant"].tolist() == [MALIGNANT[i] for i in data.table["label"]]


def test_class_counts_follow_prevalences(cached):
    _, data = cached
    counts = data.table["label"].value_counts().reindex(range(len(CONDITIONS)), fill_value=0).to_numpy()
    expected = np.array([c.prevalence for c in CONDITIONS]) * N
    assert np.all(np.abs(counts - expected) < 1)
    # (the exact counts at n = 4000 are checked in test_synth.test_class_counts_follow_the_prevalences)


def test_split_is_stratified_disjoint_and_stable(cached):
    _, data = cached
    split = data.table["split"]
    assert set(split) == {"train", "val", "test"}
    parts = [set(data.split(s).table["image_id"]) for s in ("train", "val", "test")]
    assert sum(map(len, parts)) == N
    assert not (parts[0] & parts[1] or parts[0] & parts[2] or parts[1] & parts[2])
    for label in data.table["label"].unique():  # every class with >= 3 images is in every split
        if (data.table["label"] == label).sum() >= 3:
            assert set(split[data.table["label"] == label]) == {"train", "val", "test"}
    labels = data.table["label"].to_numpy()
    assert np.array_equal(stratified_split(labels, 0.15, 0.15, 1), split.to_numpy())


def test_split_fractions_per_class():
    labels = np.repeat(np.arange(3), [100, 40, 10])
    split = stratified_split(labels, 0.2, 0.1, seed=0)
    table = pd.crosstab(labels, split)
    assert table.loc[0, "val"] == 20 and table.loc[0, "test"] == 10 and table.loc[1, "val"] == 8
    assert table.loc[2, "test"] == 1 and table.loc[2, "val"] == 2


def test_cache_hit_is_identical_and_memory_mapped(cached):
    folder, data = cached
    again = load_dataset(image_size=SIZE, n_images=N, seed=1, cache_dir=folder)
    assert isinstance(again.images, np.memmap)
    for name in ("images", "lesion_masks", "skin_masks", "healthy"):
        assert np.array_equal(getattr(again, name), getattr(data, name))
    pd.testing.assert_frame_equal(again.table, data.table)
    assert len([p for p in folder.iterdir() if not p.name.startswith(".")]) == 1
    assert not any(p.name.startswith(".") for p in folder.iterdir())  # no temporary folder left behind


def test_in_memory_equals_cached(cached):
    _, data = cached
    fresh = load_dataset(image_size=SIZE, n_images=N, seed=1, cache_dir=None)
    assert np.array_equal(fresh.images, data.images)
    assert fresh.table["split"].tolist() == data.table["split"].tolist()


def test_changed_parameter_misses_the_cache(cached, tmp_path):
    folder, data = cached
    other = load_dataset(image_size=SIZE, n_images=N, seed=1, cache_dir=folder, val_fraction=0.2)
    assert len([p for p in folder.iterdir()]) == 2
    assert np.array_equal(other.images, data.images)  # same images, other split
    assert not other.table["split"].equals(data.table["split"])
    small = load_dataset(image_size=SIZE, n_images=40, seed=2, cache_dir=tmp_path)
    assert len(small) == 40 and not np.array_equal(small.images[:5], data.images[:5])


@pytest.mark.parametrize("kwargs, word", [
    ({"image_size": 31}, "size"), ({"image_size": 600}, "size"), ({"n_images": 0}, "n_images"),
    ({"n_images": -5}, "n_images"), ({"val_fraction": -0.1}, "val_fraction"),
    ({"test_fraction": 1.0}, "test"),
    ({"val_fraction": 0.5, "test_fraction": 0.5}, "no training"),
])
def test_impossible_parameters_are_clear_errors(kwargs, word, tmp_path):
    with pytest.raises(ValueError, match=word):
        load_dataset(**{"n_images": 10, "image_size": 32, "cache_dir": tmp_path, **kwargs})


def test_unknown_dataset_is_refused_naming_it_and_the_known_ones(tmp_path):
    with pytest.raises(ValueError, match=r"^unknown dataset 'no_such_source'; known real datasets: ham10000, "
                                         r"isic2017, .*, folder$"):
        load_dataset("no_such_source", data_root=tmp_path, image_size=32)


def test_data_modules_depend_one_way_sources_never_on_dataset():
    """records / splits <- sources <- dataset: no module of sources/ imports dataset.py (or the package that
    imports it), and dataset.py imports sources at the top, not lazily inside a function."""
    import ast
    from pathlib import Path

    import dermgan.data

    def imports(path: Path) -> list[tuple[str, bool]]:
        """(module, at top level) of every import in a file."""
        tree = ast.parse(path.read_text())
        top = {id(node) for node in tree.body}
        found = []
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module:
                found.append((node.module, id(node) in top))
            elif isinstance(node, ast.Import):
                found += [(alias.name, id(node) in top) for alias in node.names]
        return found

    package = Path(dermgan.data.__file__).parent
    for path in sorted((package / "sources").glob("*.py")):
        bad = [m for m, _ in imports(path) if m in ("dermgan.data", "dermgan.data.dataset")
               or m.startswith("dermgan.data.synth")]
        assert bad == [], f"{path.name} imports {bad}"
    dataset = imports(package / "dataset.py")
    assert ("dermgan.data.sources", True) in dataset
    assert not [m for m, top in dataset if m.startswith("dermgan.data.sources") and not top]


def test_load_for_run(tmp_path):
    from dermgan.runtime import start

    ctx = start("smoke", run_dir=str(tmp_path / "run"), data={"n_images": 24, "image_size": 32})
    data = load_for_run(ctx)
    assert len(data) == 24 and (tmp_path / "run" / "data").is_dir()


def test_classifier_dataset_and_flips(cached):
    _, data = cached
    plain, flipped = ClassifierDataset(data), ClassifierDataset(data, augment=True, seed=0)
    image, label = plain[3]
    assert image.shape == (3, SIZE, SIZE) and image.dtype == torch.float32 and isinstance(label, int)
    expected = torch.from_numpy(np.asarray(data.images[3], np.float32) / 127.5 - 1.0).permute(2, 0, 1)
    assert torch.allclose(image, expected, atol=1e-6)  # uint8 v -> v / 127.5 - 1, channels first
    assert label == int(data.table["label"][3])
    candidates = [image, image.flip(2), image.flip(1), image.flip(1).flip(2)]
    for epoch in range(3):
        flipped.set_epoch(epoch)
        assert any(torch.equal(flipped[3][0], c) for c in candidates)
        assert torch.equal(flipped[3][0], flipped[3][0])  # the same within an epoch


def test_evaluation_scores_worked_by_hand():
    """Six test images of three classes, labels 0 0 0 1 1 2; a network that answers 0 0 1 1 1 0 (read from
    the image's brightness). Recall per class 2/3, 2/2, 0/1 -> balanced accuracy 5/9; accuracy 4/6; F1
    per class 2/3 (precision 2/3, recall 2/3), 4/5 (2/3, 1), 0 -> macro F1 22/45."""
    from dermgan.classify import evaluate
    from dermgan.data import SkinData

    answers = np.array([0, 0, 1, 1, 1, 0])
    images = np.repeat((answers * 100).astype(np.uint8), 8 * 8 * 3).reshape(6, 8, 8, 3)
    table = pd.DataFrame({c: [pd.NA] * 6 for c in RECORD_COLUMNS})
    table["label"] = [0, 0, 0, 1, 1, 2]

    class ReadsBrightness(torch.nn.Module):
        def forward(self, x):  # x = v / 127.5 - 1 for the pixel value v = 100 * answer
            answer = ((x.mean((1, 2, 3)) + 1) * 127.5 / 100).round().long()
            return torch.nn.functional.one_hot(answer, 3).float()

    scores = evaluate(ReadsBrightness(), SkinData("toy", ("a", "b", "c"), images, None, None, table))
    assert scores["balanced_accuracy"] == pytest.approx(5 / 9)
    assert scores["accuracy"] == pytest.approx(4 / 6)
    assert scores["macro_f1"] == pytest.approx(22 / 45)
    assert scores["per_class_recall"] == pytest.approx({"a": 2 / 3, "b": 1.0, "c": 0.0})
    assert scores["confusion_matrix"] == [[2, 1, 0], [0, 2, 0], [1, 0, 0]]


def test_classifier_trains_and_evaluates(cached):
    from dermgan.classify import evaluate, train_classifier
    from dermgan.models.classifier import SkinClassifier

    _, data = cached
    cfg = ClassifierConfig(width=4, epochs=1, batch_size=32)
    model, history = train_classifier(data.split("train"), data.split("val"), cfg, "cpu", seed=0,
                                      extra=data.split("val"))
    assert len(history) == 1 and np.isfinite(history[0]["loss"])
    scores = evaluate(model, data.split("test"), "cpu")
    assert np.asarray(scores["confusion_matrix"]).sum() == len(data.split("test"))
    assert set(scores["per_class_recall"]) == set(data.classes)
    net = SkinClassifier(8, width=4)
    assert net.features(torch.zeros(2, 3, 32, 32)).shape == (2, 16)
    assert net(torch.zeros(2, 3, 48, 48)).shape == (2, 8)
    with pytest.raises(ValueError, match="balance"):
        train_classifier(data.split("train"), None, ClassifierConfig(width=4, epochs=1, balance="x"), "cpu")
