"""Turing-test study design, response checking and analysis against hand-worked numbers and scipy, and the
classifier two-sample test on sets that do and do not differ."""

import csv
import json
import math
import re

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from dermgan import turing as T
from dermgan.config import ClassifierConfig
from dermgan.integrity import write_with_digest

CLASSES = ("nevus", "acne", "eczema", "melanoma")


def make_pools(seed=0, n_real=48, models=("alpha", "beta"), size=32):
    """Real images with rows 0..n_real-1, and per model one generated image per real row (pix2pix-like)."""
    rng = np.random.default_rng(seed)
    condition = rng.integers(0, len(CLASSES), n_real)
    tone = rng.integers(1, 7, n_real)
    real = T.ImagePool(rng.integers(0, 256, (n_real, size, size, 3), dtype=np.uint8), condition, tone,
                       np.arange(n_real))
    fakes = {name: T.ImagePool(rng.integers(0, 256, (n_real, size, size, 3), dtype=np.uint8), condition.copy(),
                               tone.copy(), rng.permutation(n_real)) for name in models}
    for pool in fakes.values():  # generated rows are in some other order; condition and tone follow the source
        pool.condition[:] = condition[pool.source_index]
        pool.fitzpatrick[:] = tone[pool.source_index]
    return real, fakes


def test_design_is_balanced_disjoint_and_seeded():
    real, fakes = make_pools()
    study = T.design_study(real, fakes, CLASSES, n_per_model=5, seed=3)
    items = study.items
    truths = [i["truth"] for i in items]
    assert truths.count("real") == truths.count("synthetic") == 10
    for name in fakes:
        assert sum(i["model"] == name for i in items) == 5
    # the real images have the samples' conditions, and each model's samples go round the conditions
    real_conditions = sorted(i["condition"] for i in items if i["truth"] == "real")
    assert real_conditions == sorted(i["condition"] for i in items if i["truth"] == "synthetic")
    assert study.condition_matched
    for name in fakes:
        counts = np.bincount([i["label"] for i in items if i["model"] == name], minlength=len(CLASSES))
        assert counts.max() - counts.min() <= 1
    sources = [i["source_index"] for i in items]
    assert len(set(sources)) == len(sources)  # no image next to its own twin
    assert [i["position"] for i in items] == list(range(len(items)))
    assert len({i["id"] for i in items}) == len(items)
    # the stored pixels are those of the pool rows named in the manifest
    for item, image in zip(items, study.images):
        if item["truth"] == "real":
            assert np.array_equal(image, real.images[item["source_index"]])
        else:
            pool = fakes[item["model"]]
            row = int(np.flatnonzero(pool.source_index == item["source_index"])[0])
            assert np.array_equal(image, pool.images[row])
            assert item["label"] == int(pool.condition[row]) and item["condition"] == CLASSES[item["label"]]
    again = T.design_study(real, fakes, CLASSES, n_per_model=5, seed=3)
    other = T.design_study(real, fakes, CLASSES, n_per_model=5, seed=4)
    assert again.study_id == study.study_id and again.items == study.items
    assert other.study_id != study.study_id and [i["truth"] for i in other.items] != truths


def test_unconditional_and_single_condition_models():
    """Samples of unknown condition (-1) and without a test input (-1), and a melanoma-only model, whose
    melanomas the test split cannot match: the study stays 50/50, says it is not condition-matched, and
    condition answers on images of unknown condition are not scored."""
    real, fakes = make_pools(n_real=40)
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, (30, 32, 32, 3), dtype=np.uint8)
    unknown = T.ImagePool(images, np.full(30, -1), np.full(30, -1), np.full(30, -1))
    melanoma = T.ImagePool(images, np.full(30, 3), np.full(30, -1), np.full(30, -1))
    few_melanomas = np.flatnonzero(real.condition == 3)[2:]  # the test split keeps two melanomas
    keep = np.setdiff1d(np.arange(40), few_melanomas)
    real = T.ImagePool(real.images[keep], real.condition[keep], real.fitzpatrick[keep], real.source_index[keep])
    study = T.design_study(real, {"dcgan": unknown, "dcgan-melanoma": melanoma, "alpha": fakes["alpha"]},
                           CLASSES, n_per_model=6, seed=0)
    truths = [i["truth"] for i in study.items]
    assert truths.count("real") == truths.count("synthetic") == 18
    assert not study.condition_matched
    assert all(i["condition"] is None and i["fitzpatrick"] == 0 for i in study.items if i["model"] == "dcgan")
    assert sum(i["condition"] == "melanoma" for i in study.items if i["truth"] == "real") == 2
    manifest = study.manifest()
    assert manifest["condition_matched"] is False and manifest["models"] == ["alpha", "dcgan", "dcgan-melanoma"]
    frame = pd.DataFrame([{"rater_id": "r", "item_id": i["id"], "answer": i["truth"], "confidence": 1,
                           "condition": "acne"} for i in study.items])
    truth = pd.DataFrame(study.items).rename(columns={"id": "item_id", "condition": "true_condition"})
    frame = frame.merge(truth, on="item_id")
    frame["correct"] = frame["answer"] == frame["truth"]
    frame["condition_correct"] = (frame["condition"] == frame["true_condition"]).astype("boolean")
    frame.loc[frame["true_condition"].isna(), "condition_correct"] = pd.NA
    table = T.analyse(frame, manifest, n_bootstrap=10)
    row = get(table, "overall", "all", "condition_accuracy")
    assert row.n == 30 and row.k == sum(i["condition"] == "acne" for i in study.items)
    assert get(table, "condition", "unknown", "accuracy").n == 6


def test_real_images_for_a_single_condition_model():
    real, fakes = make_pools()
    melanoma = T.ImagePool(fakes["alpha"].images, np.full(48, 3), fakes["alpha"].fitzpatrick, np.full(48, -1))
    assert set(T.real_for(melanoma, real).condition) == {3}
    assert len(T.real_for(fakes["alpha"], real).images) == 48
    unknown = T.ImagePool(fakes["alpha"].images, np.full(48, -1), fakes["alpha"].fitzpatrick, np.full(48, -1))
    assert len(T.real_for(unknown, real).images) == 48


def test_impossible_study_size_is_a_clear_error():
    real, fakes = make_pools(n_real=12)
    with pytest.raises(T.TuringError, match=r"model alpha: only \d+ samples.*n_per_model 50 is too large"):
        T.design_study(real, fakes, CLASSES, n_per_model=50, seed=0)
    with pytest.raises(T.TuringError, match=r"the test split has \d+ real images free for 12 samples"):
        T.design_study(real, fakes, CLASSES, n_per_model=6, seed=0)
    # 12 test rows: each model's sample uses one and its real partner another -> at most 3 per model
    assert T.design_largest_study(real, fakes, CLASSES, n_per_model=6, seed=0).n_per_model == 3
    assert T.design_largest_study(real, fakes, CLASSES, n_per_model=2, seed=0).n_per_model == 2


def test_models_that_do_not_fit_a_tiny_test_split_are_left_out_in_order():
    real, fakes = make_pools(n_real=2)  # room for one sample and its real partner: one model only
    study = T.design_largest_study(real, fakes, CLASSES, n_per_model=4, seed=0)
    assert {i["model"] for i in study.items if i["model"]} == {list(fakes)[0]} and study.n_per_model == 1
    with pytest.raises(T.TuringError):
        T.design_largest_study(T.ImagePool(real.images[:1], real.condition[:1], real.fitzpatrick[:1],
                                           real.source_index[:1]), fakes, CLASSES, n_per_model=1, seed=0)
    with pytest.raises(T.TuringError, match="no generated samples"):
        T.design_study(real, {}, CLASSES, n_per_model=1, seed=0)


def test_samples_file_with_wrong_shape_or_arrays_is_named(tmp_path):
    path = tmp_path / "samples.npz"
    write_with_digest(path, lambda f: np.savez(f, images=np.zeros((3, 16, 16, 3), np.uint8),
                                               condition=np.zeros(3, int)))
    with pytest.raises(T.TuringError, match=r"samples.npz: missing arrays \['fitzpatrick', 'source_index'\]"):
        T.pool_from_samples(path, (16, 16, 3), None)
    write_with_digest(path, lambda f: np.savez(f, images=np.zeros((3, 16, 16, 3), np.uint8),
                                               condition=np.zeros(3, int), fitzpatrick=np.ones(3, int),
                                               source_index=np.arange(3)))
    with pytest.raises(T.TuringError, match=r"images must be uint8 \(N, 32, 32, 3\)"):
        T.pool_from_samples(path, (32, 32, 3), None)


def test_page_is_self_contained_and_holds_no_truth(tmp_path):
    real, fakes = make_pools()
    study = T.design_study(real, fakes, CLASSES, n_per_model=3, seed=0)
    page_path, manifest_path = T.write_study(study, tmp_path)
    assert page_path.name == f"study_{study.study_id}.html"
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([page_path.name, manifest_path.name])  # no temps
    page = page_path.read_text()
    assert re.search(r"https?://|src=\"(?!data:)|<link", page) is None  # nothing fetched from anywhere
    embedded = json.loads(re.search(r'id="study-data">(.*?)</script>', page, re.S).group(1))
    assert [item["id"] for item in embedded["items"]] == [item["id"] for item in study.items]
    assert all(set(item) == {"id", "src"} and item["src"].startswith("data:image/png;base64,")
               for item in embedded["items"])
    assert "alpha" not in page and "beta" not in page  # model names (= truth) only in the manifest
    manifest = T.load_study(manifest_path)
    assert manifest["study_id"] == study.study_id and manifest["seed"] == 0
    assert manifest["models"] == ["alpha", "beta"] and len(manifest["items"]) == 12


# ------------------------------------------------------------------------------------------- response files


@pytest.fixture
def study(tmp_path):
    real, fakes = make_pools()
    design = T.design_study(real, fakes, CLASSES, n_per_model=3, seed=1)
    return T.load_study(T.write_study(design, tmp_path)[1])


def write_answers(path, study, rater, answer_of, condition_of=None, confidence=2, columns=T.RESPONSE_COLUMNS,
                  items=None):
    condition_of = condition_of or (lambda item: item["condition"])
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(columns)
        for item in items if items is not None else study["items"]:
            row = {"study_id": study["study_id"], "rater_id": rater, "item_id": item["id"],
                   "answer": answer_of(item), "confidence": confidence, "condition": condition_of(item),
                   "answered_at": "2024-01-01T00:00:00Z"}
            writer.writerow([row.get(c, "x") for c in columns])
    return path


def truthful(item):
    return item["truth"]


def test_wrong_columns_are_named(study, tmp_path):
    columns = [c for c in T.RESPONSE_COLUMNS if c != "confidence"] + ["sure"]
    path = write_answers(tmp_path / "a.csv", study, "r1", truthful, columns=columns)
    with pytest.raises(T.TuringError, match=r"a\.csv line 1: wrong columns \(missing \['confidence'\], "
                                            r"unexpected \['sure'\]\)"):
        T.read_responses([path], study)


@pytest.mark.parametrize("field, value, message", [
    ("item_id", "item-999", r"line 3: unknown item_id 'item-999'"),
    ("study_id", "0123456789ab", r"line 3: study_id '0123456789ab' is not this study's"),
    ("answer", "fake", r"line 3: answer 'fake' is not one of \['real', 'synthetic'\]"),
    ("confidence", "7", r"line 3: confidence '7' is not one of \['1', '2', '3'\]"),
    ("condition", "wart", r"line 3: condition 'wart' is not one of the study's classes"),
    ("rater_id", "", r"line 3: empty rater_id"),
])
def test_bad_value_names_file_and_line(study, tmp_path, field, value, message):
    path = write_answers(tmp_path / "bad.csv", study, "r1", truthful)
    lines = path.read_text().splitlines()
    row = next(csv.DictReader([lines[0], lines[2]]))
    row[field] = value
    lines[2] = ",".join(row[c] for c in T.RESPONSE_COLUMNS)
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(T.TuringError, match=r"bad\.csv " + message):
        T.read_responses([path], study)


def test_duplicates_partial_and_empty_files_are_errors(study, tmp_path):
    first = write_answers(tmp_path / "one.csv", study, "r1", truthful)
    again = write_answers(tmp_path / "two.csv", study, "r1", truthful, items=study["items"][:2])
    with pytest.raises(T.TuringError, match=r"two\.csv line 2: rater 'r1' answered 'item-001' again "
                                            r"\(first in .*one\.csv line 2\)"):
        T.read_responses([first, again], study)
    partial = write_answers(tmp_path / "part.csv", study, "r2", truthful, items=study["items"][:5])
    with pytest.raises(T.TuringError, match=r"part\.csv: rater 'r2' answered 5 of 12 items \(first missing: "
                                            r"item-006\)"):
        T.read_responses([partial], study)
    assert len(T.read_responses([partial], study, allow_partial=True)) == 5
    (tmp_path / "empty.csv").write_text("")
    with pytest.raises(T.TuringError, match=r"empty\.csv: empty file"):
        T.read_responses([tmp_path / "empty.csv"], study)
    (tmp_path / "header.csv").write_text(",".join(T.RESPONSE_COLUMNS) + "\n")
    with pytest.raises(T.TuringError, match=r"header\.csv: no answers"):
        T.read_responses([tmp_path / "header.csv"], study)
    with pytest.raises(T.TuringError, match=r"missing\.csv: no such response file"):
        T.read_responses([tmp_path / "missing.csv"], study)


def test_response_files_from_folder_or_glob(tmp_path, study):
    folder = tmp_path / "answers"
    folder.mkdir()
    for rater in ("a", "b"):
        write_answers(folder / f"{rater}.csv", study, rater, truthful)
    (folder / "notes.txt").write_text("not an answer file")
    assert [p.name for p in T.response_files(str(folder))] == ["a.csv", "b.csv"]
    assert [p.name for p in T.response_files("answers/b*.csv", root=tmp_path)] == ["b.csv"]
    with pytest.raises(T.TuringError, match="no CSV files"):
        T.response_files(str(tmp_path / "nothing-*.csv"))
    assert T.study_id_of(folder / "a.csv") == study["study_id"]


# ------------------------------------------------------------------------------------------------- statistics


def test_fleiss_kappa_matches_tables_worked_by_hand():
    # 4 items, 3 raters, 2 categories. Per-item agreement P_i = (sum n_ij^2 - 3) / 6 = 1, 1, 1/3, 1/3 -> mean 2/3;
    # category shares 6/12 and 6/12 -> chance 1/2; kappa = (2/3 - 1/2) / (1 - 1/2) = 1/3.
    assert T.fleiss_kappa([[3, 0], [0, 3], [2, 1], [1, 2]]) == pytest.approx(1 / 3)
    # 3 items, 2 raters: P_i = 1, 1, 0 -> 2/3; shares 5/6, 1/6 -> chance 26/36; kappa = (24/36 - 26/36)/(10/36)
    assert T.fleiss_kappa([[2, 0], [2, 0], [1, 1]]) == pytest.approx(-0.2)
    assert T.fleiss_kappa([[4, 0, 0], [0, 4, 0], [0, 0, 4]]) == pytest.approx(1.0)
    assert math.isnan(T.fleiss_kappa([[3, 0], [3, 0]]))  # one category only: chance agreement is 1
    with pytest.raises(ValueError, match="same number"):
        T.fleiss_kappa([[2, 0], [1, 2]])


def test_binomial_p_and_interval_match_scipy_and_the_formulas():
    # two-sided exact test at p = 1/2: twice the smaller tail, worked with binomial coefficients
    k, n = 14, 20
    tail = sum(math.comb(n, i) for i in range(k, n + 1)) / 2 ** n
    assert T.binomial_p(k, n) == pytest.approx(2 * tail)
    assert T.binomial_p(k, n) == pytest.approx(stats.binomtest(k, n, 0.5).pvalue)
    assert T.binomial_p(k, n, "greater") == pytest.approx(tail)
    # Clopper-Pearson from its definition with beta quantiles
    lo, hi = T.clopper_pearson(k, n)
    assert lo == pytest.approx(stats.beta.ppf(0.025, k, n - k + 1))
    assert hi == pytest.approx(stats.beta.ppf(0.975, k + 1, n - k))
    assert T.clopper_pearson(0, 10)[0] == 0.0 and T.clopper_pearson(10, 10)[1] == 1.0


def get(table, section, group, metric, interval="clopper-pearson"):
    row = table[(table.section == section) & (table.group == str(group)) & (table.metric == metric)
                & (table.interval.str.startswith(interval))]
    assert len(row) == 1, (section, group, metric)
    return row.iloc[0]


def test_analysis_of_two_known_raters(study, tmp_path):
    # Rater "oracle" is always right and names the true condition on real images only; rater "trusting" calls
    # everything real and always names the true condition.
    wrong_condition = {c: CLASSES[(CLASSES.index(c) + 1) % len(CLASSES)] for c in CLASSES}
    oracle = write_answers(tmp_path / "o.csv", study, "oracle", truthful,
                           condition_of=lambda i: i["condition"] if i["truth"] == "real"
                           else wrong_condition[i["condition"]])
    trusting = write_answers(tmp_path / "t.csv", study, "trusting", lambda item: "real", confidence=3)
    frame = T.read_responses([oracle, trusting], study)
    table = T.analyse(frame, study, n_bootstrap=200, seed=0)
    n = len(study["items"])  # 12: 6 real, 6 synthetic

    assert get(table, "rater", "oracle", "accuracy").value == 1.0
    trusting_row = get(table, "rater", "trusting", "accuracy")
    assert (trusting_row.k, trusting_row.n, trusting_row.value) == (6, 12, 0.5)
    assert trusting_row.p_value == pytest.approx(stats.binomtest(6, 12, 0.5).pvalue)  # = 1
    assert get(table, "rater", "oracle", "accuracy").p_value == pytest.approx(2 / 2 ** 12)
    assert get(table, "rater", "trusting", "sensitivity").value == 0.0
    assert get(table, "rater", "trusting", "specificity").value == 1.0

    overall = get(table, "overall", "all", "accuracy")
    assert (overall.k, overall.n) == (18, 24)
    assert overall.p_value == pytest.approx(stats.binomtest(18, 24, 0.5).pvalue)
    assert (overall.lo, overall.hi) == pytest.approx(T.clopper_pearson(18, 24))
    boot = get(table, "overall", "all", "accuracy", interval="bootstrap")
    assert boot.value == 0.75  # its interval is worked out by hand in the test below
    assert get(table, "overall", "all", "sensitivity").value == 0.5  # 6 of 12 synthetic ratings
    assert get(table, "overall", "all", "specificity").value == 1.0

    # condition identification: real images 12/12 right, synthetic ones 6/12 (only "trusting")
    assert get(table, "truth", "real", "condition_accuracy").value == 1.0
    assert get(table, "truth", "synthetic", "condition_accuracy").value == 0.5

    # kappa by hand: real items [2 real, 0 synthetic] (P_i = 1), synthetic items [1, 1] (P_i = 0) -> mean 1/2;
    # shares 18/24 real, 6/24 synthetic -> chance 10/16; kappa = (1/2 - 5/8) / (3/8) = -1/3
    kappa = get(table, "agreement", "all", "fleiss_kappa_real_synthetic", interval="bootstrap")
    assert kappa.value == pytest.approx(-1 / 3) and kappa.n == n
    # conditions: the two raters agree on the 6 real items only -> P_i mean 1/2
    # conditions: real items [both name the truth] (P_i = 1); synthetic items one says the truth, one the next
    # class (P_i = 0) -> mean 1/2; chance from the 4 class shares of the 24 condition answers
    condition_kappa = get(table, "agreement", "all", "fleiss_kappa_condition", interval="bootstrap")
    shares = frame["condition"].value_counts(normalize=True).reindex(CLASSES, fill_value=0).to_numpy()
    chance = (shares ** 2).sum()
    assert condition_kappa.value == pytest.approx((0.5 - chance) / (1 - chance))

    for model in ("alpha", "beta"):
        row = get(table, "model", model, "sensitivity")
        assert (row.k, row.n) == (3, 6)  # 3 items per model, oracle finds them, trusting does not
    by_level = {row.group: row.value for row in table[(table.section == "confidence")
                                                      & (table.metric == "accuracy")].itertuples()}
    assert by_level == {"2": 1.0, "3": 0.5}
    tones = table[(table.section == "fitzpatrick") & (table.metric == "accuracy")]
    assert tones["n"].sum() == 24  # every rating in exactly one skin-type group


def test_bootstrap_intervals_of_two_known_raters_worked_by_hand(study, tmp_path):
    """The bootstrap resamples raters and items. With the "oracle" (always right) and the "trusting" rater
    (right on the 6 real items only) its distribution is known exactly: T, the number of draws of "trusting"
    among the 2 rater draws, is 0, 1, 2 with chances 1/4, 1/2, 1/4, and R, the real items among the 12 item
    draws, is Binomial(12, 1/2).
    accuracy = ((2 - T) 12 + T R) / 24: P(< 1/3) = P(T = 2) P(R <= 3) = 1.8 %, P(<= 1/3) = 4.8 %, so its 2.5 %
    point is 1/3; P(= 1) >= 1/4, so its 97.5 % point is 1.
    real/synthetic kappa: 1 when both draws are one rater (T = 0), undefined for "trusting" twice (T = 2, every
    answer "real": dropped), and for T = 1, with P = R / 12 and chance c = 1/2 + R^2 / 288, (P - c) / (1 - c),
    increasing in R. Of the defined replicates 1/3 are 1 (97.5 % point 1) and P(R <= 2) / (3/2) = 1.3 %,
    P(R <= 3) / (3/2) = 4.9 %: the 2.5 % point is the value at R = 3, (1/4 - 17/32) / (15/32) = -0.6."""
    truthful_rater = write_answers(tmp_path / "o.csv", study, "oracle", truthful)
    trusting = write_answers(tmp_path / "t.csv", study, "trusting", lambda item: "real")
    frame = T.read_responses([truthful_rater, trusting], study)
    table = T.analyse(frame, study, n_bootstrap=10_000, seed=0)
    accuracy = get(table, "overall", "all", "accuracy", interval="bootstrap")
    assert (accuracy.lo, accuracy.hi) == (pytest.approx(1 / 3), 1.0)
    kappa = get(table, "agreement", "all", "fleiss_kappa_real_synthetic", interval="bootstrap")
    assert kappa.value == pytest.approx(-1 / 3)  # R = 6 of the 12 items are real
    assert (kappa.lo, kappa.hi) == (pytest.approx(-0.6), 1.0)


# ---------------------------------------------------------------------------------------- two-sample test


def test_halves_keep_twins_together():
    groups = np.array([0, 1, 2, 3, 4, 5, 0, 1, 2, 3, 4, 5, 6, 7])
    in_train = T._halves(groups, np.random.default_rng(0))
    for group in np.unique(groups):
        assert len(set(in_train[groups == group])) == 1


def _textured(rng, n, tint, size=32):
    base = rng.normal(128, 30, (n, size, size, 3)) + np.asarray(tint)
    return np.clip(base, 0, 255).astype(np.uint8)


def test_classifier_two_sample_test_separates_different_sets_only():
    rng = np.random.default_rng(0)
    n = 48
    condition, tone = np.zeros(n, int), np.ones(n, int)
    real = T.ImagePool(_textured(rng, n, (0, 0, 0)), condition, tone, np.arange(n))
    cfg = ClassifierConfig(width=8, batch_size=16, lr=3e-3)
    different = T.ImagePool(_textured(rng, n, (60, -40, -40)), condition, tone, np.arange(n))
    result = T.classifier_two_sample_test(real, different, cfg, seed=0, steps=40)
    assert result["n_test"] % 2 == 0 and result["n_train"] + result["n_test"] == 2 * n
    assert result["accuracy"] > 0.9 and result["p_value"] < 1e-4
    k, n_test = result["k_correct"], result["n_test"]
    assert result["accuracy"] == k / n_test
    # Clopper-Pearson by its beta-quantile formula, and the one-sided exact binomial p-value by its sum
    assert (result["lo"], result["hi"]) == pytest.approx(
        (stats.beta.ppf(0.025, k, n_test - k + 1) if k else 0.0,
         stats.beta.ppf(0.975, k + 1, n_test - k) if k < n_test else 1.0))
    tail = sum(math.comb(n_test, j) for j in range(k, n_test + 1))
    assert result["p_value"] == pytest.approx(tail / 2**n_test)


def test_the_two_sample_test_keeps_its_level_on_sets_from_one_distribution():
    """40 seeded draws of two sets from the same distribution: a test at level 5 % rejects in 2 of them on
    average and in 7 or more with probability 0.35 % (binomial(40, 0.05)); its held-out accuracy averages 0.5
    (standard error about 0.072 / sqrt(40) = 0.011)."""
    rng = np.random.default_rng(0)
    n, cfg = 48, ClassifierConfig(width=8, batch_size=16, lr=3e-3)
    condition, tone = np.zeros(n, int), np.ones(n, int)
    def pool():
        return T.ImagePool(_textured(rng, n, (0, 0, 0), 16), condition, tone, np.arange(n))

    draws = [T.classifier_two_sample_test(pool(), pool(), cfg, seed=seed, steps=20) for seed in range(40)]
    assert sum(d["p_value"] < 0.05 for d in draws) <= 6
    assert abs(np.mean([d["accuracy"] for d in draws]) - 0.5) < 0.05
