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


def test_every_tabled_metric_agrees_with_scikit_learn_on_bootstrap_resamples():
    # summary_table scores every arm, seed and bootstrap resample through all_metric_values (multiplicities,
    # not index arrays): each must equal scikit-learn on the rows repeated as often as a resample has them
    from sklearn.metrics import accuracy_score, balanced_accuracy_score, recall_score, roc_auc_score

    rng = np.random.default_rng(7)
    truth = rng.integers(0, 4, 400)
    probs = rng.dirichlet(np.ones(4), (3, 400)) + np.eye(4)[truth] * rng.uniform(0, 0.6, (3, 400, 1))
    probs[0, :50, 1] = probs[0, :50, 2] = 0.3  # ties in the scores, as a saturated network gives
    probs /= probs.sum(2, keepdims=True)
    weights = ax.bootstrap_weights(400, 4, seed=2)
    values = ax.all_metric_values(probs, truth, weights)
    for r, w in enumerate(weights):
        rows = np.repeat(np.arange(400), w.astype(int))
        for s in range(3):
            t, p = truth[rows], probs[s, rows]
            recall = recall_score(t, p.argmax(1), labels=range(4), average=None)
            for c in range(4):
                assert values[f"recall_{c}"][r, s] == pytest.approx(recall[c])
                assert values[f"auroc_{c}"][r, s] == pytest.approx(roc_auc_score(t == c, p[:, c]))
            assert values["accuracy"][r, s] == pytest.approx(accuracy_score(t, p.argmax(1)))
            assert values["balanced_accuracy"][r, s] == pytest.approx(balanced_accuracy_score(t, p.argmax(1)))
            assert values["macro_auroc"][r, s] == pytest.approx(roc_auc_score(t, p, multi_class="ovr"))
    assert np.array_equal(weights[0], np.ones(400))  # row 0: the test set itself
    # a class absent from the rows has no recall or AUROC (nan), not 0
    absent = (truth != 0).astype(float)[None]
    assert np.isnan(ax.metric_values(probs, truth, "recall_0", absent)).all()
    assert np.isnan(ax.metric_values(probs, truth, "auroc_0", absent)).all()
    with pytest.raises(ValueError, match="unknown metric"):
        ax.metric_values(probs, truth, "f1", absent)


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


def _recipe(architecture="efficientnet_lite0", **changes):
    aug = dataclasses.replace(get_profile("smoke").augmentation, **changes)
    aug = dataclasses.replace(aug, architecture=architecture)
    return ax.recipes(aug, get_profile("smoke").classifier)["main"]


@pytest.mark.parametrize("architecture", ["small", "efficientnet_lite0"])
def test_the_same_arm_trained_twice_as_two_separate_arms_is_bit_identical(small, architecture):
    # The seed must fix everything, initial weights included: two Trainers built separately, each training the
    # arm from scratch, give identical probabilities (on main before this change the network was built before
    # the seed was set, and the probabilities differed by up to 0.039).
    import torch

    from dermgan.classify import seeded_build, train_classifier

    train, val, test = small.split("train"), small.split("val"), small.split("test")
    recipe = _recipe(architecture)
    first = ax.Trainer(recipe, test, val).run("real", train, seeds=[1])[0]
    second = ax.Trainer(recipe, test, val).run("real", train, seeds=[1])[0]
    assert np.array_equal(first.probabilities, second.probabilities)
    assert np.array_equal(first.val_probabilities, second.val_probabilities)
    assert np.allclose(first.probabilities.sum(1), 1, atol=1e-5)
    build = recipe.builder(len(small.classes))
    a, b = seeded_build(build, 5).state_dict(), seeded_build(build, 5).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)  # initial weights
    other = seeded_build(build, 6).state_dict()
    assert not all(torch.equal(a[k], other[k]) for k in a)  # the seed is what fixes them
    trained = [train_classifier(train, val, recipe.classifier, seed=5, build=build)[0].state_dict()
               for _ in range(2)]
    assert all(torch.equal(trained[0][k], trained[1][k]) for k in trained[0])  # trained weights


def test_the_aa_arm_is_a_separate_seed_stream_and_arms_are_paired_by_seed_index():
    paired = [ax.training_seed(0, ax.BASELINE_STREAM, i) for i in range(5)]
    aa = [ax.training_seed(0, ax.AA_STREAM, i) for i in range(5)]
    assert len(set(paired) | set(aa)) == 10
    assert paired == [ax.training_seed(0, 0, i) for i in range(5)]  # every arm's index i: paired[i]
    assert ax.training_seed(1, 0, 0) != paired[0]  # the run seed moves every stream


def test_a_summary_table_row_is_its_seeds_differences_with_their_intervals_mde_and_verdict(small):
    test = small.split("test")
    truth = test.table["label"].to_numpy()
    rng = np.random.default_rng(3)

    def arm(name, shift, seed):
        p = rng.dirichlet(np.ones(8), len(truth)) + np.eye(8)[truth] * shift
        return ax.ArmResult(name, seed, 100, 0, p / p.sum(1, keepdims=True), {})

    results = [arm("real", 0.3, s) for s in range(4)] + [arm("better", 0.6, s) for s in range(4)]
    table = ax.summary_table(results, test, classes=[0], n_boot=300)
    row = table[(table.arm == "better") & (table.metric == "balanced_accuracy")].iloc[0]
    per_seed = [ax.scores(truth, r.probabilities, small.classes)["balanced_accuracy"] for r in results]
    diffs = np.subtract(per_seed[4:], per_seed[:4])
    ci = stats.ttest_rel(per_seed[4:], per_seed[:4]).confidence_interval(0.95)
    assert row["diff"] == pytest.approx(diffs.mean())
    assert (row.seed_diff_low, row.seed_diff_high) == (pytest.approx(ci.low), pytest.approx(ci.high))
    assert row.seed_diff_sd == pytest.approx(diffs.std(ddof=1))
    assert row.mde == pytest.approx(ax.minimal_detectable_effect(diffs.std(ddof=1), 4))
    assert row.diff_low < row["diff"] < row.diff_high
    assert row.verdict == ax.verdict(row["diff"], row.diff_low, row.diff_high, row.seed_diff_low,
                                     row.seed_diff_high, row.mde)
    # without an A/A arm the noise SD is the comparison's own; with one, every arm's MDE rests on the noise of
    # two independent trainings: the baseline's and the A/A arm's seed SDs combined
    aa = [dataclasses.replace(r, arm="real A/A", probabilities=r.probabilities[::-1].copy())
          for r in results[4:]]  # any other predictions: a different SD
    with_aa = ax.summary_table(results + aa, test, classes=[0], n_boot=50).set_index(["arm", "metric"])
    noise = np.hypot(with_aa.loc[("real", "balanced_accuracy"), "seed_sd"],
                     with_aa.loc[("real A/A", "balanced_accuracy"), "seed_sd"])
    other = with_aa.loc[("better", "balanced_accuracy")]
    assert other.noise_sd == pytest.approx(noise) and other.noise_sd != other.seed_diff_sd
    assert other.mde == pytest.approx(ax.minimal_detectable_effect(noise, 4))
    given = ax.summary_table(results, test, classes=[0], n_boot=50, noise={"balanced_accuracy": 0.0})
    row = given[(given.arm == "better") & (given.metric == "balanced_accuracy")].iloc[0]
    assert np.isnan(row.mde) and row.verdict == "no detectable effect (MDE n/a)"  # zero noise: no estimate
    base = table[(table.arm == "real") & (table.metric == "balanced_accuracy")].iloc[0]
    assert base["mean"] == pytest.approx(np.mean(per_seed[:4])) and pd.isna(base["diff"])
    assert base.mean_low < base["mean"] < base.mean_high
    assert set(table.metric) == {"balanced_accuracy", "accuracy", "macro_auroc", f"recall_{small.classes[0]}",
                                 f"auroc_{small.classes[0]}"}


def test_the_mde_is_detected_with_the_stated_power_in_simulation():
    # Paired normal differences with known SD and true mean = the MDE: a two-sided paired t-test at alpha 0.05
    # must reject in 80 % of 40,000 simulated experiments (binomial SE 0.002; tolerance 0.01 = 5 SE); at 0.6 x
    # the MDE it must reject clearly less often (the check can fail).
    rng = np.random.default_rng(11)
    for n, sd in ((4, 0.03), (10, 1.0)):
        mde = ax.minimal_detectable_effect(sd, n)
        for effect, low, high in ((mde, 0.79, 0.81), (0.6 * mde, 0.0, 0.55)):
            d = rng.normal(effect, sd, (40_000, n))
            t = d.mean(1) / (d.std(1, ddof=1) / np.sqrt(n))
            rate = np.mean(np.abs(t) > stats.t.ppf(0.975, n - 1))
            assert low <= rate <= high, (n, effect, rate)
    # the normal approximation (z_0.975 + z_0.8) sd / sqrt(n) is a lower bound the t-distribution exceeds
    assert ax.minimal_detectable_effect(1.0, 10) > (1.959964 + 0.841621) / np.sqrt(10)
    assert np.isnan(ax.minimal_detectable_effect(1.0, 1)) and ax.minimal_detectable_effect(0.0, 5) == 0.0


def test_seeds_needed_is_the_fewest_seeds_whose_mde_reaches_the_target():
    pilot = np.random.default_rng(2).normal(0.0, 0.04, 6)
    sd = pilot.std(ddof=1)
    n = ax.seeds_needed(pilot, target=0.05)
    assert ax.minimal_detectable_effect(sd, n) <= 0.05 < ax.minimal_detectable_effect(sd, n - 1)
    assert ax.seeds_needed([0.0, 1.0], target=1e-6, most=50) is None


@pytest.mark.parametrize("case, expected", [
    ((+0.10, +0.05, +0.15, +0.02, +0.18, 0.05), "helps"),
    ((-0.10, -0.15, -0.05, -0.18, -0.02, 0.05), "hurts"),
    # both intervals exclude zero, but the change is smaller than the MDE
    ((+0.04, +0.01, +0.07, +0.02, +0.06, 0.05), "no detectable effect (MDE 0.050)"),
    # exactly the MDE does not exceed it
    ((+0.05, +0.01, +0.09, +0.02, +0.08, 0.05), "no detectable effect (MDE 0.050)"),
    # the seed interval includes zero (a bootstrap interval alone is not enough)
    ((+0.10, +0.05, +0.15, -0.02, +0.22, 0.05), "no detectable effect (MDE 0.050)"),
    # an interval ending at zero includes it
    ((+0.10, 0.00, +0.15, +0.02, +0.18, 0.05), "no detectable effect (MDE 0.050)"),
    # intervals on opposite sides of zero
    ((+0.01, +0.005, +0.02, -0.30, -0.01, 0.001), "no detectable effect (MDE 0.001)"),
    # an unknown MDE (one seed) decides nothing
    ((+0.10, +0.05, +0.15, float("nan"), float("nan"), float("nan")), "no detectable effect (MDE n/a)"),
])
def test_the_verdict_rule_on_hand_made_intervals(case, expected):
    assert ax.verdict(*case) == expected


def test_the_power_table_reads_the_noise_of_baseline_and_aa_and_the_worst_arm():
    table = pd.DataFrame([
        {"arm": "real A/A", "metric": "balanced_accuracy", "seed_sd": 0.008, "seed_diff_sd": 0.01, "n_seeds": 5},
        {"arm": "real+x", "metric": "balanced_accuracy", "seed_sd": 0.02, "seed_diff_sd": 0.03, "n_seeds": 5},
        {"arm": "real", "metric": "balanced_accuracy", "seed_sd": 0.006, "seed_diff_sd": np.nan, "n_seeds": 5}])
    row = ax.power_table(table, {"balanced_accuracy": 0.02}).iloc[0]
    assert row.noise_sd == pytest.approx(0.010)  # sqrt(0.006^2 + 0.008^2)
    assert row.mde == pytest.approx(ax.minimal_detectable_effect(0.010, 5))
    assert row.seeds_for_target == ax.seeds_needed_for_sd(0.010, 0.02)
    assert row.largest_sd_arm == "real+x"
    assert row["seeds_for_target (largest diff sd)"] == ax.seeds_needed_for_sd(0.03, 0.02)


def test_resnet18_is_built_from_scratch_and_refuses_a_foreign_weights_file(tmp_path):
    import torch

    model = ax.build_classifier("resnet18", 7, width=0)
    assert model.fc.out_features == 7
    torch.save({"conv.weight": torch.zeros(1)}, tmp_path / "w.pt")
    with pytest.raises(ValueError, match="not a torchvision ResNet-18"):
        ax.build_classifier("resnet18", 7, 0, str(tmp_path / "w.pt"))
    with pytest.raises(ValueError, match="unknown classifier architecture"):
        ax.build_classifier("vgg", 7, 8)
    assert ax.build_classifier("efficientnet_lite0", 7, 8, input_size=32).net._fc.out_features == 7


def test_the_recipe_settings_are_checked_before_anything_runs():
    from dermgan.config import AugmentationConfig

    for bad, field in (({"train_from": 9}, "train_from"), ({"keep_candidates": ()}, "keep_candidates"),
                       ({"architecture": "vgg"}, "architecture"), ({"melanoma_keep": 1.0}, "melanoma_keep"),
                       ({"input_size": 16}, "input_size")):
        with pytest.raises(ValueError, match=f"augmentation.{field} must be"):
            AugmentationConfig(**bad)


# ------------------------------------------------------------------------------------------------------------
# The imbalance protocol


def test_a_smaller_cut_keeps_a_subset_of_a_larger_ones_melanomas(small):
    train = small.split("train")
    melanoma = small.classes.index("melanoma")
    half, removed_half = ax.cut_melanoma(train, melanoma, 0.5, seed=1)
    quarter, removed_quarter = ax.cut_melanoma(train, melanoma, 0.25, seed=1)
    n = int(ax.class_counts(train)[melanoma])
    assert ax.class_counts(half)[melanoma] == round(0.5 * n) and removed_half == n - round(0.5 * n)
    ids = lambda d: set(d.table.loc[d.table.label == melanoma, "image_id"])  # noqa: E731
    assert ids(quarter) <= ids(half)
    assert ax.class_counts(half)[np.arange(8) != melanoma].tolist() == \
        ax.class_counts(train)[np.arange(8) != melanoma].tolist()


class _StubTrainer:
    """Scores validation melanoma recall by how many melanomas a training set has: recall[count]."""

    def __init__(self, val, melanoma, recall_by_count):
        self.val, self.melanoma, self.recall_by_count = val, melanoma, recall_by_count
        self.run_seed, self.trained = 0, []

    def run(self, arm, train, extra=None, seeds=range(1), stream=0, classic=False):
        count = int(ax.class_counts(train)[self.melanoma])
        self.trained.append(count)
        return [self._result(arm, s, self.recall_by_count[count]) for s in seeds]

    def _result(self, arm, seed, recall):
        truth = self.val.table["label"].to_numpy()
        positives = np.flatnonzero(truth == self.melanoma)
        predicted = np.where(truth == self.melanoma, (self.melanoma + 1) % 8, truth)
        predicted[positives[:int(round(recall * len(positives)))]] = self.melanoma
        return ax.ArmResult(arm, seed, 0, 0, None, {}, val_probabilities=np.eye(8)[predicted])


def test_the_cut_is_the_largest_share_that_opens_the_stated_gap_on_validation(small):
    train, val = small.split("train"), small.split("val")
    melanoma = small.classes.index("melanoma")
    n = int(ax.class_counts(train)[melanoma])
    counts = {share: round(share * n) for share in (0.5, 0.25, 0.1)}
    stub = _StubTrainer(val, melanoma, {n: 1.0, counts[0.5]: 0.75, counts[0.25]: 0.25, counts[0.1]: 0.0})
    all_real = stub.run("real", train, seeds=range(2))
    keep, rows, why, cut = ax.choose_melanoma_keep(stub, train, melanoma, (0.1, 0.5, 0.25), 0.4, all_real)
    # keep 0.5 lowers validation recall by about 0.25 (< 0.4), keep 0.25 by about 0.75: the largest to open it
    assert keep == 0.25 and "0.25" in why and rows.keep.tolist() == [0.5, 0.25]
    assert rows["drop"][0] < 0.4 <= rows["drop"][1]
    assert stub.trained == [n, counts[0.5], counts[0.25]]  # 0.1 is never trained: the rule stops there
    assert len(cut) == 2 and all(r.arm == "melanoma cut" for r in cut)  # the chosen cut's runs are the arm
    keep, rows, why, _ = ax.choose_melanoma_keep(stub, train, melanoma, (0.5, 0.25, 0.1), 1.5, all_real)
    assert keep == 0.1 and "no share opened a gap" in why and len(rows) == 3
def test_maps_for_a_real_class_list_use_its_own_lesion_masks_and_encode_with_its_channels(small):
    import dataclasses as dc

    from dermgan.data.semantic import encode_maps, n_channels

    classes = ("akiec", "bcc", "bkl", "df", "mel", "nv", "vasc", "extra")[:7]
    table = small.table.assign(label=small.table["label"] % 7)
    real = dc.replace(small, name="ham-like", classes=classes, table=table).split("train")
    maps, labels, _ = ax.draw_maps(real, {4: 3}, seed=0)
    assert all(m.classes == classes for m in maps) and labels.tolist() == [4, 4, 4]
    assert encode_maps(maps, "onehot").shape[1] == n_channels("onehot", len(classes))


# ------------------------------------------------------------------------------------------------------------
# Out of distribution


def test_the_perceptual_hash_sees_through_resizing_and_jpeg_but_not_other_images(small):
    import io

    from PIL import Image

    images = np.asarray(small.images[:40])
    hashes = ax.perceptual_hash(images)

    def jpeg_resized(image):
        buffer = io.BytesIO()
        Image.fromarray(image).resize((48, 48), Image.BILINEAR).resize((32, 32), Image.BILINEAR).save(
            buffer, "JPEG", quality=70)
        return np.asarray(Image.open(buffer).convert("RGB"))

    altered = ax.perceptual_hash(np.stack([jpeg_resized(i) for i in images]))
    same = np.bitwise_count(hashes ^ altered)
    others = np.bitwise_count(hashes[:, None] ^ hashes[None, :])[~np.eye(40, dtype=bool)]
    assert np.median(same) <= 4 and np.median(others) >= 20


def test_a_near_duplicate_needs_close_features_and_a_close_hash_in_some_view(small):
    images = np.asarray(small.images)
    reference = images[:100]
    rng = np.random.default_rng(0)
    ref_features = rng.normal(size=(100, 16))
    # query 0: a copy of reference 3, features alike; 1: features alike to reference 42 but other pixels (a
    # look-alike lesion); 2: unrelated; 3: a copy of reference 7 that only the second view lines up
    query = np.stack([images[3], images[150], images[160], images[170]])
    features = np.stack([ref_features[3] + 0.01, ref_features[42] * 2, rng.normal(size=16), rng.normal(size=16)])
    second = query.copy()
    second[3] = images[7]
    second_features = features.copy()
    second_features[3] = ref_features[7]
    views = {"as loaded": (query, features), "other": (second, second_features)}
    found = ax.near_duplicates(views, reference, ref_features, max_bits=4, min_cosine=0.9)
    assert found["duplicate"].tolist() == [True, False, False, True]
    assert found.nearest.tolist()[:2] == [3, 42] and found.nearest[3] == 7 and found.view[3] == "other"
    assert found.bits[0] == 0 and found.bits[1] > 4 and found.cosine[1] > 0.99


def test_unsquash_undoes_squashing_a_landscape_photograph_to_a_square():
    from PIL import Image

    rng = np.random.default_rng(1)
    photo = (rng.random((48, 64, 3)) * 40 + np.linspace(0, 200, 64)[None, :, None]).astype(np.uint8)  # 4:3
    centre = np.asarray(Image.fromarray(photo[:, 8:56]).resize((32, 32), Image.BILINEAR))  # our readers' crop
    squashed = np.asarray(Image.fromarray(photo).resize((32, 32), Image.BILINEAR))
    restored = ax.unsquash(squashed[None])[0]
    assert np.abs(restored.astype(int) - centre).mean() < np.abs(squashed.astype(int) - centre).mean() / 3


def _isic_like(small):
    """A three-class 'isic2017' dataset made of synthetic images, with a test split."""
    classes = ("melanoma", "seborrheic_keratosis", "nevus")
    table = small.table.copy()
    table["label"] = table["label"] % 3
    table["condition"] = [classes[i] for i in table["label"]]
    return dataclasses.replace(small, name="isic2017", classes=classes, table=table)


def test_the_ood_set_keeps_the_shared_classes_without_duplicates_and_answers_among_them(small):
    ham_classes = ("akiec", "bcc", "bkl", "df", "mel", "nv", "vasc")
    ham = dataclasses.replace(small, name="ham10000", classes=ham_classes,
                              table=small.table.assign(label=small.table["label"] % 7))
    isic = _isic_like(small)
    test = isic.split("test")
    duplicates = pd.DataFrame({"duplicate": np.arange(len(test)) < 2})
    ood = ax.ood_test_set(ham, isic, duplicates)
    assert len(ood.data) == len(test) - 2 and len(ood.removed) == 2
    assert ood.data.classes == ("melanoma", "seborrheic_keratosis", "nevus")
    assert ood.columns == [4, 2, 5]  # mel, bkl, nv in HAM10000's class order
    assert (ood.data.table["condition"] == [ood.data.classes[i] for i in ood.data.table["label"]]).all()
    p = np.random.default_rng(0).dirichlet(np.ones(7), 5)
    restricted = ood.probabilities(p)
    shared = p[:, [4, 2, 5]]
    assert np.allclose(restricted.sum(1), 1)
    assert np.allclose(restricted * shared.sum(1, keepdims=True), shared)
    with pytest.raises(ValueError, match="no shared-class mapping from isic2017 to ham10000"):
        ax.ood_test_set(isic, ham, duplicates)
    with pytest.raises(ValueError, match="search that split"):
        ax.ood_test_set(ham, isic, duplicates.iloc[:3])


def test_the_recall_figure_draws_both_intervals_and_marks_undetectable_changes(small):
    import matplotlib

    matplotlib.use("Agg")
    rows = []
    for arm, shift in (("real A/A", 0.0), ("real+x", 0.2)):
        for c, name in enumerate(small.classes):
            diff = shift + 0.01 * c
            rows.append({"arm": arm, "metric": f"recall_{name}", "diff": diff, "diff_low": diff - 0.05,
                         "diff_high": diff + 0.05, "seed_diff_low": diff - 0.1, "seed_diff_high": diff + 0.1,
                         "verdict": "helps" if shift else "no detectable effect (MDE 0.100)"})
    fig = ax.recall_change_figure(pd.DataFrame(rows), small.classes, [7], "test")
    axis = fig.axes[0]
    widths = sorted({round(c.get_linewidth()[0], 1) for c in axis.collections if hasattr(c, "get_segments")
                     and len(c.get_segments()) == len(small.classes)})
    assert widths == [0.7, 2.4]  # thin seed interval and thick bootstrap interval, for every class
    segments = [c.get_segments() for c in axis.collections if hasattr(c, "get_segments")
                and len(c.get_segments()) == len(small.classes)]
    spans = sorted({round(float(s[0][1][0] - s[0][0][0]), 3) for s in segments})
    assert spans == [0.1, 0.2]  # bootstrap 2 x 0.05, seed 2 x 0.1
    labels = [t.get_text() for t in axis.get_legend().get_texts()]
    assert {"95 % paired test bootstrap", "95 % seed t-interval", "no detectable effect",
            "real A/A"} <= set(labels)
