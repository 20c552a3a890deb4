"""The augmentation experiment's helpers: scores worked by hand and against scikit-learn, bootstrap and seed
intervals against known answers, the choice of rare classes, map drawing and one arm end to end."""

import dataclasses

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from dermgan import augmentation_experiment as ax
from dermgan.config import get_profile
from dermgan.data.dataset import make_synthetic


@pytest.fixture(scope="module")
def small():
    return make_synthetic(32, 240, seed=3)


def test_scores_match_hand_worked_values():
    truth = np.array([0, 0, 1, 1, 2, 2])
    # argmax predictions: 0, 1, 1, 1, 2, 0 -> recalls 1/2, 2/2, 1/2; balanced accuracy 2/3; accuracy 4/6
    probs = np.array([[.7, .2, .1], [.3, .6, .1], [.1, .8, .1], [.2, .5, .3], [.1, .2, .7], [.5, .1, .4]])
    s = ax.scores(truth, probs, ("a", "b", "c"), fitzpatrick=pd.array([1, 1, 2, 2, None, 2], dtype="Int64"))
    assert s["recall"] == {"a": 0.5, "b": 1.0, "c": 0.5}
    assert s["balanced_accuracy"] == pytest.approx(2 / 3)
    assert s["accuracy"] == pytest.approx(4 / 6)
    # class a one-vs-rest: positives score .7,.3; negatives .1,.2,.1,.5 -> pairs won 4 + 2.0 = 7 of 8 -> 0.875
    # class b: positives .8,.5; negatives .2,.6,.2,.1 -> 4 + 3 = 7/8; class c: positives .7,.4; negatives
    # .1,.1,.1,.3 -> 8/8 -> macro (0.875 + 0.875 + 1) / 3
    assert s["macro_auroc"] == pytest.approx((0.875 + 0.875 + 1.0) / 3)
    # type 1: rows 0,1 -> right, wrong; type 2: rows 2,3,5 -> right, right, wrong; row 4 has no type
    assert s["accuracy_by_fitzpatrick"] == {1: 0.5, 2: pytest.approx(2 / 3)}


def test_macro_auroc_agrees_with_scikit_learn_on_random_data():
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(0)
    truth = rng.integers(0, 4, 300)
    probs = rng.dirichlet(np.ones(4), 300) + np.eye(4)[truth] * 0.3
    probs /= probs.sum(1, keepdims=True)
    ours = ax.scores(truth, probs, list("abcd"))["macro_auroc"]
    assert ours == pytest.approx(roc_auc_score(truth, probs, multi_class="ovr", average="macro"))


def test_the_reported_tables_metric_agrees_with_scikit_learn_on_random_data_and_rows():
    # summary_table scores every arm, seed and bootstrap resample through _metric: it must equal scikit-learn's
    # per-class recall, accuracy, balanced accuracy and one-vs-rest macro AUROC on the same rows
    from sklearn.metrics import accuracy_score, balanced_accuracy_score, recall_score, roc_auc_score

    rng = np.random.default_rng(7)
    truth = rng.integers(0, 4, 400)
    probs = rng.dirichlet(np.ones(4), 400) + np.eye(4)[truth] * rng.uniform(0, 0.6, (400, 1))
    probs /= probs.sum(1, keepdims=True)
    rows = rng.choice(400, 400, replace=True)  # a bootstrap resample, with repeated rows
    t, p = truth[rows], probs[rows]
    recall = recall_score(t, p.argmax(1), labels=range(4), average=None)
    for c in range(4):
        assert ax._metric(probs, truth, list("abcd"), f"recall_{'abcd'[c]}", c, rows) == pytest.approx(recall[c])
    assert ax._metric(probs, truth, list("abcd"), "accuracy", None, rows) == pytest.approx(accuracy_score(t, p.argmax(1)))
    assert ax._metric(probs, truth, list("abcd"), "balanced_accuracy", None, rows) == pytest.approx(
        balanced_accuracy_score(t, p.argmax(1)))
    assert ax._metric(probs, truth, list("abcd"), "macro_auroc", None, rows) == pytest.approx(
        roc_auc_score(t, p, multi_class="ovr", average="macro"))
    # a class absent from the resampled rows has no recall (nan), not 0
    assert np.isnan(ax._metric(probs, truth, list("abcd"), "recall_a", 0, np.flatnonzero(truth != 0)))


def test_the_melanogan_arm_takes_the_melanoma_model_closest_in_colour_to_the_training_melanomas(tmp_path):
    import json

    names = ["dcgan-melanoma", "lapgan-melanoma", "ddgan-deconv-melanoma"]
    # without 03's statistics the choice is the first by name, and says so
    chosen, why = ax.choose_melanoma_model(tmp_path, names)
    assert chosen == "dcgan-melanoma" and "missing" in why
    rows = [{"set": "real test vs real train (floor)", "JSD": 0.001}, {"set": "dcgan", "JSD": 0.002},
            {"set": "dcgan-melanoma", "JSD": 0.45}, {"set": "lapgan-melanoma", "JSD": 0.006},
            {"set": "ddgan-deconv-melanoma", "JSD": 0.019}]
    (tmp_path / "metrics").mkdir()
    (tmp_path / "metrics" / "03_colour_statistics.json").write_text(json.dumps({"rows": rows}))
    chosen, why = ax.choose_melanoma_model(tmp_path, names)
    assert chosen == "lapgan-melanoma"  # not the floor or a full-data model, though their JSD is lower
    assert why.index("lapgan-melanoma 0.0060") < why.index("ddgan-deconv-melanoma") < why.index("dcgan-melanoma 0.45")
    with pytest.raises(ValueError, match="scores none"):
        ax.choose_melanoma_model(tmp_path, ["furger-melanoma"])
    with pytest.raises(ValueError, match="run 03"):
        ax.choose_melanoma_model(tmp_path, [])


def test_bootstrap_interval_of_an_accuracy_matches_the_binomial_standard_error():
    rng = np.random.default_rng(1)
    n, p = 2000, 0.7
    correct = rng.random(n) < p
    low, high = ax.bootstrap_interval(lambda rows: correct[rows].mean(), n, n_boot=2000, seed=0)
    estimate = correct.mean()
    half = 1.96 * np.sqrt(estimate * (1 - estimate) / n)
    assert low == pytest.approx(estimate - half, abs=0.15 * half)
    assert high == pytest.approx(estimate + half, abs=0.15 * half)


def test_bootstrap_drops_undefined_replicates():
    """Resamples that draw row 0 are undefined (NaN) and dropped. Of the others (8/27 of all), those that draw
    row 1 alone (1/27) have max 1, the rest max 2: 1 is 1/8 of the defined replicates, more than the 2.5 %
    tail, so the 95 % interval is exactly [1, 2] (NaN if undefined ones were kept, 0 if counted as 0)."""
    values = np.array([np.nan, 1.0, 2.0])
    low, high = ax.bootstrap_interval(lambda rows: values[rows].max() if 0 not in rows else np.nan, 3, 2000)
    assert (low, high) == (1.0, 2.0)


def test_paired_seed_difference_equals_scipys_paired_t_interval():
    base, arm = [0.61, 0.58, 0.64, 0.60], [0.66, 0.60, 0.65, 0.67]
    ours = ax.paired_seed_difference(base, arm)
    ci = stats.ttest_rel(arm, base).confidence_interval(0.95)
    assert ours["mean"] == pytest.approx(np.mean(np.subtract(arm, base)))
    assert (ours["low"], ours["high"]) == (pytest.approx(ci.low), pytest.approx(ci.high))


def test_rare_malignant_classes_of_ham10000_counts():
    classes = ("akiec", "bcc", "bkl", "df", "mel", "nv", "vasc")
    counts = {"akiec": 327, "bcc": 514, "bkl": 1099, "df": 115, "mel": 1113, "nv": 6705, "vasc": 142}
    malignant = {"akiec": True, "bcc": True, "mel": True}
    labels = np.repeat(np.arange(7), [counts[c] for c in classes])
    table = pd.DataFrame({"label": labels, "malignant": [malignant.get(classes[i], False) for i in labels]})
    train = dataclasses.make_dataclass("T", ["name", "classes", "table"])("ham10000", classes, table)
    assert [classes[c] for c in ax.rare_malignant_classes(train)] == ["akiec", "bcc", "mel"]
    assert ax.rare_malignant_classes(train, ["df"]) == [3]
    with pytest.raises(ValueError, match="not classes of ham10000"):
        ax.rare_malignant_classes(train, ["melanoma"])


def test_top_up_counts_go_towards_the_largest_class_but_at_most_max_ratio(small):
    train = small.split("train")
    counts = ax.class_counts(train)
    rare = [int(np.argmin(counts))]
    added = ax.top_up_counts(train, rare, max_ratio=2)[rare[0]]
    assert added == min(counts.max() - counts[rare[0]], 2 * counts[rare[0]])
    with pytest.raises(ValueError, match="max_ratio"):
        ax.top_up_counts(train, rare, 0)


def test_drawn_maps_carry_the_requested_class_on_skin_and_are_reproducible(small):
    train = small.split("train")
    maps, labels, donors = ax.draw_maps(train, {7: 5, 5: 3}, seed=4)
    assert labels.tolist() == [7] * 5 + [5] * 3 and len(maps) == len(donors) == 8
    for m, c in zip(maps, labels):
        lesion = m.labels > 0
        assert lesion.any() and set(np.unique(m.labels[lesion])) == {c + 1}
        assert m.skin_mask()[lesion].all()
    again, _, _ = ax.draw_maps(train, {7: 5, 5: 3}, seed=4)
    assert all((a.labels == b.labels).all() for a, b in zip(maps, again))


def test_classic_augmentation_keeps_the_range_and_shape():
    import torch

    image = torch.rand(3, 16, 16) * 2 - 1
    out = ax.classic_augmentation(image, np.random.default_rng(0))
    assert out.shape == image.shape and out.min() >= -1 and out.max() <= 1
    assert not torch.equal(out, image)


def test_oversample_copies_real_images_of_the_asked_classes(small):
    train = small.split("train")
    extra = ax.oversample(train, {7: 6, 6: 2}, seed=0)
    assert sorted(extra.table["label"].tolist()) == [6, 6] + [7] * 6
    ids = set(train.table["image_id"])
    assert set(extra.table["image_id"]) <= ids


def test_one_arm_trains_and_an_identical_arm_differs_by_exactly_zero(small):
    cfg = dataclasses.replace(get_profile("smoke").classifier, epochs=1, balance="none")
    train, test = small.split("train"), small.split("test")
    base = ax.run_arm("real", train, None, test, None, cfg, seed=0)
    assert base.probabilities.shape == (len(test), len(small.classes))
    assert np.allclose(base.probabilities.sum(1), 1, atol=1e-5)
    twin = dataclasses.replace(base, arm="copy")
    table = ax.summary_table([base, twin], test, rare=[7], n_boot=50)
    diffs = table[table.arm == "copy"]
    assert np.allclose(diffs[["diff", "diff_low", "diff_high"]].to_numpy(dtype=float), 0)


def test_resnet18_is_built_from_scratch_and_refuses_a_foreign_weights_file(tmp_path):
    import torch

    model = ax.build_classifier("resnet18", 7, width=0)
    assert model.fc.out_features == 7
    torch.save({"conv.weight": torch.zeros(1)}, tmp_path / "w.pt")
    with pytest.raises(ValueError, match="not a torchvision ResNet-18"):
        ax.build_classifier("resnet18", 7, 0, str(tmp_path / "w.pt"))
    with pytest.raises(ValueError, match="unknown classifier architecture"):
        ax.build_classifier("vgg", 7, 8)


def test_maps_for_a_real_class_list_use_its_own_lesion_masks_and_encode_with_its_channels(small):
    import dataclasses as dc

    from dermgan.data.semantic import encode_maps, n_channels

    classes = ("akiec", "bcc", "bkl", "df", "mel", "nv", "vasc", "extra")[:7]
    table = small.table.assign(label=small.table["label"] % 7)
    real = dc.replace(small, name="ham-like", classes=classes, table=table).split("train")
    maps, labels, _ = ax.draw_maps(real, {4: 3}, seed=0)
    assert all(m.classes == classes for m in maps) and labels.tolist() == [4, 4, 4]
    assert encode_maps(maps, "onehot").shape[1] == n_channels("onehot", len(classes))
