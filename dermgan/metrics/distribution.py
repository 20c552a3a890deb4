"""Feature-distribution metrics: FID, KID, precision and recall, with bootstrap intervals.

Point estimates use torch-fidelity's own functions on our features; the bootstrap works on quantities computed
once (centred features, kernel matrices, distance matrices) and re-indexed per replicate, so it never re-extracts
features and stays cheap on a CPU.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch_fidelity.metric_fid import fid_features_to_statistics, fid_statistics_to_metric, KEY_METRIC_FID
from torch_fidelity.metric_kid import KEY_METRIC_KID_MEAN, KEY_METRIC_KID_STD, kid_features_to_metric
from torch_fidelity.metric_prc import calculate_precision_recall_full

from dermgan.metrics.core import MetricOptions, MetricResult, bootstrap, result_with_interval


def _check_features(real: np.ndarray, generated: np.ndarray, metric: str) -> None:
    if real.ndim != 2 or generated.ndim != 2 or real.shape[1] != generated.shape[1]:
        raise ValueError(f"{metric}: features must be (N, D) with the same D, got {real.shape} and "
                         f"{generated.shape}")
    if min(len(real), len(generated)) < 2:
        raise ValueError(f"{metric}: needs at least 2 images per set, got {len(real)} real and "
                         f"{len(generated)} generated")


# ---------------------------------------------------------------------------------------------- FID

def fid_from_features(real: np.ndarray, generated: np.ndarray) -> float:
    """Fréchet distance between Gaussians fitted to the two feature sets (torch-fidelity's computation)."""
    _check_features(real, generated, "fid")
    stats = [fid_features_to_statistics(torch.from_numpy(np.asarray(f, dtype=np.float64)))
             for f in (real, generated)]
    return float(fid_statistics_to_metric(stats[0], stats[1], verbose=False)[KEY_METRIC_FID])


def _double_centre(block: np.ndarray) -> np.ndarray:
    return block - block.mean(axis=0, keepdims=True) - block.mean(axis=1, keepdims=True) + block.mean()


def fid_from_grams(g_rr: np.ndarray, g_gg: np.ndarray, g_gr: np.ndarray, r: np.ndarray, g: np.ndarray) -> float:
    """Exact FID of real rows r and generated rows g from the Gram matrices of the features (X X', Y Y', Y X').

    With centred features A (n x d), B (m x d): S_r = A'A/(n-1), S_g = B'B/(m-1); the non-zero eigenvalues of
    S_r S_g are the squared singular values of B A'/sqrt((n-1)(m-1)), so tr sqrt(S_r S_g) is that matrix's
    nuclear norm, and B A' is the double-centred block of Y X'. Likewise the traces and the mean difference
    come from the Grams. Per bootstrap replicate this costs an n x m eigenproblem instead of a d x d one
    (d = 2048 for Inception) and never touches the features again.
    """
    rr, gg, gr = g_rr[np.ix_(r, r)], g_gg[np.ix_(g, g)], g_gr[np.ix_(g, r)]
    n, m = len(r), len(g)
    mean_gap = rr.mean() + gg.mean() - 2.0 * gr.mean()  # |mu_r - mu_g|^2
    trace_r = np.trace(_double_centre(rr)) / (n - 1)
    trace_g = np.trace(_double_centre(gg)) / (m - 1)
    cross = _double_centre(gr)
    small = cross @ cross.T if m <= n else cross.T @ cross
    nuclear = np.sqrt(np.clip(np.linalg.eigvalsh(small), 0.0, None)).sum()
    return float(mean_gap + trace_r + trace_g - 2.0 * nuclear / np.sqrt((n - 1) * (m - 1)))


def fid(real_features: np.ndarray, generated_features: np.ndarray, options: MetricOptions,
        extractor: str | None = None) -> MetricResult:
    """FID with a bootstrap interval over resampled features (never re-extracted).

    The point estimate is torch-fidelity's when the sets are at least as large as the feature dimension; for
    smaller sets (the usual case on a CPU: a few hundred images, 2048-d) the Gram form above gives the same
    number exactly, where a 2048 x 2048 eigendecomposition would take half a minute on 2 cores.
    """
    _check_features(real_features, generated_features, "fid")
    n_r, n_g, d = len(real_features), len(generated_features), real_features.shape[1]
    of_rows = _FidOfRows(real_features, generated_features)
    if max(n_r, n_g) < d:
        value, method = of_rows(np.arange(n_r), np.arange(n_g)), "gram"
    else:
        value, method = fid_from_features(real_features, generated_features), "torch-fidelity"
    # each replicate by the cheaper exact route: d x d moments for low-dimensional features (05's 128-d domain
    # features: 600 x 600 Gram eigenproblems cost ~10x more), the Gram form for 2048-d Inception features
    replicates = bootstrap(of_rows, n_r, n_g, options, salt=1)
    return result_with_interval("fid", value, replicates, n_r, n_g, options, extractor, bounds=(0.0, math.inf),
                                feature_dim=int(d),
                                method=method)


# ---------------------------------------------------------------------------------------------- FID-infinity

def _frechet_from_features(real: np.ndarray, generated: np.ndarray) -> float:
    """FID from d x d moments; tr sqrt(S_r S_g) as the eigenvalues of S_r^1/2 S_g S_r^1/2 (symmetric, so eigh)."""
    mu_gap = real.mean(axis=0) - generated.mean(axis=0)
    s_r, s_g = np.cov(real, rowvar=False), np.cov(generated, rowvar=False)
    values, vectors = np.linalg.eigh(s_r)
    root = (vectors * np.sqrt(np.clip(values, 0.0, None))) @ vectors.T
    cross = np.sqrt(np.clip(np.linalg.eigvalsh(root @ s_g @ root), 0.0, None)).sum()
    return float(mu_gap @ mu_gap + np.trace(s_r) + np.trace(s_g) - 2.0 * cross)


class _FidOfRows:
    """FID of any rows of two fixed feature sets, by the cheaper exact route: d x d moments when the subsets are
    larger than the feature dimension, else the n x m Gram form (fid_from_grams)."""

    def __init__(self, real: np.ndarray, generated: np.ndarray):
        self.real, self.generated = real, generated
        self.dim = real.shape[1]
        self._grams = None

    def __call__(self, r: np.ndarray, g: np.ndarray) -> float:
        if self.dim < min(len(r), len(g)):
            return _frechet_from_features(self.real[r], self.generated[g])
        if self._grams is None:
            x, y = self.real, self.generated
            self._grams = (x @ x.T, y @ y.T, y @ x.T)
        return fid_from_grams(*self._grams, r, g)


def fid_subset_sizes(n_real: int, n_generated: int, options: MetricOptions) -> np.ndarray:
    """Evenly spaced subset sizes from options.fid_inf_min_fraction of the smaller set up to all of it."""
    largest = min(n_real, n_generated)
    smallest = max(3, int(round(options.fid_inf_min_fraction * largest)))
    if largest - smallest < options.fid_inf_points - 1:
        raise ValueError(f"fid_infinity: needs at least {options.fid_inf_points} distinct subset sizes between "
                         f"{smallest} and {largest} images; use larger sets or fewer fid_inf_points")
    return np.unique(np.linspace(smallest, largest, options.fid_inf_points).round().astype(int))


def fid_curve(fid_of_rows, real_rows: np.ndarray, generated_rows: np.ndarray, sizes: np.ndarray, draws: int,
              rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """FID of `draws` random subsets (n of each set, without replacement) per size n: (n per value, values)."""
    ns, values = [], []
    for n in sizes:
        for _ in range(draws):
            r = rng.choice(real_rows, size=n, replace=False)
            g = rng.choice(generated_rows, size=n, replace=False)
            ns.append(n)
            values.append(fid_of_rows(r, g))
    return np.asarray(ns, dtype=float), np.asarray(values)


def extrapolate_in_inverse_n(ns: np.ndarray, values: np.ndarray) -> tuple[float, float, float]:
    """Least-squares line value = intercept + slope / n: (intercept = the value at 1/n = 0, slope, R^2)."""
    design = np.column_stack([np.ones_like(ns), 1.0 / ns])
    (intercept, slope), *_ = np.linalg.lstsq(design, values, rcond=None)
    residual = values - design @ np.array([intercept, slope])
    spread = ((values - values.mean()) ** 2).sum()
    r2 = 1.0 - (residual ** 2).sum() / spread if spread > 0 else 1.0
    return float(intercept), float(slope), float(r2)


def fid_infinity(real_features: np.ndarray, generated_features: np.ndarray, options: MetricOptions,
                 extractor: str | None = None) -> MetricResult:
    """FID extrapolated to infinitely many images (Chong and Forsyth 2020), with a bootstrap interval.

    FID is biased upwards by roughly c/n at n images per set. FID is computed on random subsets of n images of
    each set for `fid_inf_points` sizes n (fid_inf_draws subsets per size), a line is fitted in 1/n and its value
    at 1/n = 0 is FID-infinity. The fit (slope, R^2, mean FID per n) is kept in extra. Interval: the whole
    procedure repeated on `fid_inf_bootstrap` resamples of the images (one subset per size), re-centred on the
    estimate like every interval here, so it describes the spread of FID-infinity at these set sizes.

    Caveat: the 1/n law holds for n above the feature dimension d. Below it the extrapolation removes only a small
    part of the bias: 2048-d Gaussian features, n = 600, true FID 20.5 gave FID 2298 and FID-infinity 2048.
    extra["n_below_feature_dim"] says when the subsets are smaller than d.
    """
    _check_features(real_features, generated_features, "fid_infinity")
    n_r, n_g = len(real_features), len(generated_features)
    sizes = fid_subset_sizes(n_r, n_g, options)
    fid_of_rows = _FidOfRows(real_features, generated_features)
    ns, values = fid_curve(fid_of_rows, np.arange(n_r), np.arange(n_g), sizes, options.fid_inf_draws,
                           options.rng(12))
    value, slope, r2 = extrapolate_in_inverse_n(ns, values)
    rng = options.rng(13)
    replicates = np.empty(options.fid_inf_bootstrap)
    for b in range(options.fid_inf_bootstrap):
        r, g = rng.integers(0, n_r, n_r), rng.integers(0, n_g, n_g)
        replicates[b] = extrapolate_in_inverse_n(*fid_curve(fid_of_rows, r, g, sizes, 1, rng))[0]
    curve = {int(n): float(values[ns == n].mean()) for n in sizes}
    # FID-infinity can come out below 0 (an extrapolation): the interval is not clipped, so it stays honest.
    result = result_with_interval("fid_infinity", value, replicates, n_r, n_g, options, extractor, slope=slope,
                                  r2=r2, curve=curve, draws=options.fid_inf_draws,
                                  feature_dim=int(real_features.shape[1]),
                                  n_below_feature_dim=bool(sizes.min() <= real_features.shape[1]))
    result.extra["n_bootstrap"] = int(options.fid_inf_bootstrap)
    return result


# ---------------------------------------------------------------------------------------------- KID

def kid_subset_size(options: MetricOptions, n_real: int, n_generated: int) -> int:
    """The configured subset size, capped by the smaller set (KID is defined on equal-size subsets)."""
    return int(min(options.kid_subset_size, n_real, n_generated))


def kid_from_features(real: np.ndarray, generated: np.ndarray, subset_size: int, subsets: int = 100,
                      seed: int = 0) -> tuple[float, float]:
    """(mean, std) of the unbiased MMD^2 with the cubic polynomial kernel over random equal-size subsets
    (torch-fidelity's computation; the std is over subsets)."""
    _check_features(real, generated, "kid")
    out = kid_features_to_metric(torch.from_numpy(np.asarray(real, dtype=np.float64)),
                                 torch.from_numpy(np.asarray(generated, dtype=np.float64)),
                                 kid_subsets=subsets, kid_subset_size=subset_size, verbose=False,
                                 rng_seed=seed, kid_kernel="poly", kid_kernel_poly_degree=3,
                                 kid_kernel_poly_gamma=None, kid_kernel_poly_coef0=1)
    return float(out[KEY_METRIC_KID_MEAN]), float(out[KEY_METRIC_KID_STD])


def _poly_kernel(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    return (x @ y.T / x.shape[1] + 1.0) ** 3


def _mmd2_excluding_copies(k_rr, k_gg, k_rg, r, g) -> float:
    """Unbiased MMD^2 of resampled sets, leaving out pairs of an image with a copy of itself.

    A resample with replacement repeats images; the U-statistic would count k(x, x) of those repeats as if they
    were different images and bias MMD^2 upwards, so same-source pairs are masked like the diagonal.
    """
    def within(k, rows):
        block = k[np.ix_(rows, rows)]
        keep = rows[:, None] != rows[None, :]
        return block[keep].mean()

    return float(within(k_rr, r) + within(k_gg, g) - 2.0 * k_rg[np.ix_(r, g)].mean())


def kid(real_features: np.ndarray, generated_features: np.ndarray, options: MetricOptions,
        extractor: str | None = None) -> MetricResult:
    """KID (mean over subsets, std in extra) with a bootstrap interval of the full-set unbiased MMD^2."""
    size = kid_subset_size(options, len(real_features), len(generated_features))
    mean, std = kid_from_features(real_features, generated_features, size, options.kid_subsets, options.seed)
    k_rr = _poly_kernel(real_features, real_features)
    k_gg = _poly_kernel(generated_features, generated_features)
    k_rg = _poly_kernel(real_features, generated_features)
    # The replicates are of the full-set MMD^2, which shares its expectation with the subset mean; the generic
    # centring in result_with_interval moves them onto the subset-mean point estimate.
    full = _mmd2_excluding_copies(k_rr, k_gg, k_rg, np.arange(len(k_rr)), np.arange(len(k_gg)))
    replicates = bootstrap(lambda r, g: _mmd2_excluding_copies(k_rr, k_gg, k_rg, r, g),
                           len(real_features), len(generated_features), options, salt=2)
    return result_with_interval("kid", mean, replicates, len(real_features), len(generated_features), options,
                                extractor, std=std, subset_size=size, subsets=options.kid_subsets,
                                full_set_mmd2=full)


# ---------------------------------------------------------------------------------------------- precision/recall

def precision_recall_from_features(real: np.ndarray, generated: np.ndarray, k: int = 3) -> tuple[float, float]:
    """Improved precision and recall (Kynkäänniemi et al. 2019), torch-fidelity's computation."""
    _check_features(real, generated, "precision/recall")
    if min(len(real), len(generated)) <= k:
        raise ValueError(f"precision/recall with k={k} needs more than {k} images per set, got {len(real)} real "
                         f"and {len(generated)} generated")
    # torch-fidelity's convention: features_1 = generated, features_2 = real.
    return calculate_precision_recall_full(torch.from_numpy(np.asarray(generated, dtype=np.float64)),
                                           torch.from_numpy(np.asarray(real, dtype=np.float64)), k)


def _distances(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    return torch.cdist(torch.from_numpy(x), torch.from_numpy(y)).numpy()


def _manifold_coverage(d_ref: np.ndarray, d_query: np.ndarray, ref_rows: np.ndarray, query_rows: np.ndarray,
                       k: int) -> float:
    """Share of query rows inside the union of k-NN balls around the reference rows.

    Radii are computed among the distinct reference images of a resample (a repeated image would be its own
    zero-distance neighbour and shrink its ball); the share counts query repeats with their multiplicity.
    """
    distinct = np.unique(ref_rows)
    if len(distinct) <= k:
        return float("nan")
    within = d_ref[np.ix_(distinct, distinct)]
    radii = np.partition(within, k, axis=1)[:, k]  # k-th neighbour; column 0 of the sort is the image itself
    inside = (d_query[np.ix_(query_rows, distinct)] <= radii[None, :]).any(axis=1)
    return float(inside.mean())


def precision_recall(real_features: np.ndarray, generated_features: np.ndarray, options: MetricOptions,
                     extractor: str | None = None) -> tuple[MetricResult, MetricResult]:
    """Precision (generated inside the real manifold) and recall (real inside the generated manifold)."""
    k = options.pr_k
    precision_value, recall_value = precision_recall_from_features(real_features, generated_features, k)
    d_rr = _distances(real_features, real_features)
    d_gg = _distances(generated_features, generated_features)
    d_gr = _distances(generated_features, real_features)
    n_r, n_g = len(real_features), len(generated_features)
    rng = options.rng(3)
    precision_reps, recall_reps = np.empty(options.n_bootstrap), np.empty(options.n_bootstrap)
    for b in range(options.n_bootstrap):
        r, g = rng.integers(0, n_r, n_r), rng.integers(0, n_g, n_g)
        precision_reps[b] = _manifold_coverage(d_rr, d_gr, r, g, k)
        recall_reps[b] = _manifold_coverage(d_gg, d_gr.T, g, r, k)
    common = dict(k=k, bounds=(0.0, 1.0))
    return (result_with_interval("precision", precision_value, precision_reps, n_r, n_g, options, extractor,
                                 **common),
            result_with_interval("recall", recall_value, recall_reps, n_r, n_g, options, extractor, **common))


# ---------------------------------------------------------------------------------------------- diversity

# A model whose images vary less than half as much as real images, in the same features, is collapsed: declared
# before any model was scored (notebook 03 flags it; benchmarks/sweep_gan.py reports the ratio).
COLLAPSE_RATIO = 0.5


def diversity(features: np.ndarray) -> float:
    """Mean Euclidean distance between two different images of a set, in feature space."""
    x = torch.from_numpy(np.ascontiguousarray(features, dtype=np.float64))
    if len(x) < 2:
        raise ValueError(f"diversity needs at least 2 images, got {len(x)}")
    d = torch.cdist(x, x)
    return float(d.sum() / (len(x) * (len(x) - 1)))


def diversity_ratio(real: np.ndarray, generated: np.ndarray) -> float:
    """diversity(generated) / diversity(real), on the same number of images from each (the first n)."""
    _check_features(real, generated, "diversity")
    n = min(len(real), len(generated))
    return diversity(generated[:n]) / diversity(real[:n])
