"""Image statistics without a feature network.

- MelanoGAN-style colour statistics (Baur et al. 2018): per-channel histograms accumulated over each set and
  normalised to sum 1; Jensen-Shannon divergence (base 2, so in [0, 1]) and 1-D Wasserstein distance, each averaged
  over R, G, B. The Wasserstein distance comes in two units (`colour_histogram_distances(..., convention=)`):
    "levels"    256 bins on the intensity-level axis 0..255: a shift of every pixel by k levels gives W1 = k;
    "melanogan" `bins` bins (default 256) on a [0, 1] intensity axis (bin centres (i + 0.5) / bins): W1 is a
                fraction of the full intensity range, a shift by k bins gives k / bins, so with 256 bins it is the
                "levels" value / 256. This is the scale on which the MelanoGAN table (0.008-0.05) can be read.
  The paper's exact definition (bin count, axis, JSD base) is not available (papers.md sec. 2.3); these are the
  stated ones, and numbers beside the paper's are comparable only as far as its convention matches.
- Sliced Wasserstein distance on Laplacian-pyramid patches (Karras et al. 2018, progressive GAN): 7x7x3 patches
  from every pyramid level down to `swd_min_size`, SWD per level over random unit directions, reported x1e3 as in
  the paper and averaged over levels. One deviation, on purpose: both sets' descriptors are normalised with the
  *real* set's per-channel mean/std (Karras normalise each set by its own), so a global colour shift still shows.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from scipy.spatial.distance import jensenshannon
from scipy.stats import wasserstein_distance

from dermgan.metrics.core import MetricOptions, MetricResult, bootstrap, result_with_interval
from dermgan.metrics.features import check_images

LEVELS = 256
COLOUR_CONVENTIONS = ("melanogan", "levels")


def image_histograms(images: np.ndarray) -> np.ndarray:
    """Per-image, per-channel pixel counts over the 256 intensity levels: int64 (N, 3, 256)."""
    n = len(images)
    flat = images.reshape(n, -1, 3).transpose(0, 2, 1).astype(np.int64)  # (N, 3, P)
    offsets = (np.arange(n)[:, None, None] * 3 + np.arange(3)[None, :, None]) * LEVELS
    counts = np.bincount((flat + offsets).ravel(), minlength=n * 3 * LEVELS)
    return counts.reshape(n, 3, LEVELS)


def set_histogram(per_image: np.ndarray, rows: np.ndarray | None = None) -> np.ndarray:
    """Normalised (3, bins) histogram of a set (rows may repeat: a bootstrap resample)."""
    total = per_image.sum(axis=0) if rows is None else per_image[rows].sum(axis=0)
    return total / total.sum(axis=1, keepdims=True)


def rebin(per_image: np.ndarray, bins: int) -> np.ndarray:
    """(N, 3, 256) level counts merged into `bins` equal-width bins (bins must divide 256)."""
    if bins < 1 or LEVELS % bins:
        raise ValueError(f"colour histograms: bins must divide {LEVELS} (e.g. 256, 128, 64, 32), got {bins}")
    return per_image.reshape(*per_image.shape[:-1], bins, LEVELS // bins).sum(axis=-1)


def bin_axis(convention: str, bins: int = LEVELS) -> tuple[np.ndarray, str]:
    """Bin positions and the unit of the Wasserstein distance for a convention (see the module docstring)."""
    if convention == "levels":
        if bins != LEVELS:
            raise ValueError(f"the 'levels' convention has {LEVELS} bins (one per level), got bins={bins}")
        return np.arange(LEVELS, dtype=np.float64), "intensity levels (0-255)"
    if convention == "melanogan":
        return (np.arange(bins, dtype=np.float64) + 0.5) / bins, "fraction of the intensity range ([0, 1] axis)"
    raise ValueError(f"unknown colour-histogram convention {convention!r}; use one of {COLOUR_CONVENTIONS}")


def histogram_distances(p: np.ndarray, q: np.ndarray, axis: np.ndarray | None = None) -> tuple[float, float]:
    """(JSD base 2, Wasserstein on `axis`) between two (3, bins) normalised histograms, averaged over channels.
    `axis` defaults to the intensity levels 0..255."""
    axis = np.arange(p.shape[-1], dtype=np.float64) if axis is None else axis
    jsd = np.mean([jensenshannon(p[c], q[c], base=2) ** 2 for c in range(3)])  # scipy returns the sqrt
    w1 = np.mean([wasserstein_distance(axis, axis, p[c], q[c]) for c in range(3)])
    return float(jsd), float(w1)


def colour_histogram_distances(real: np.ndarray, fake: np.ndarray, convention: str = "melanogan",
                               bins: int = LEVELS) -> dict:
    """Colour-histogram distances between two uint8 (N, H, W, 3) image sets, for tables beside MelanoGAN's.

    Returns {"jsd", "wasserstein", "bins", "units", "convention"}: JSD base 2 (in [0, 1]) and the Wasserstein
    distance in the convention's units, both averaged over R, G, B. convention="melanogan" (the default) puts
    `bins` bins on a [0, 1] intensity axis; "levels" uses the 256 levels (W1 in levels).
    """
    axis, units = bin_axis(convention, bins)
    p = set_histogram(rebin(image_histograms(check_images(real, "real images")), bins))
    q = set_histogram(rebin(image_histograms(check_images(fake, "generated images")), bins))
    jsd, w1 = histogram_distances(p, q, axis)
    return {"jsd": jsd, "wasserstein": w1, "bins": int(bins), "units": units, "convention": convention}


def colour_statistics(real: np.ndarray, generated: np.ndarray, options: MetricOptions
                      ) -> tuple[MetricResult, MetricResult, MetricResult]:
    """Colour-histogram JSD and Wasserstein distance (in levels and on the MelanoGAN [0, 1] axis, 256 bins),
    with intervals from resampling images."""
    h_real, h_gen = image_histograms(real), image_histograms(generated)
    unit_axis, unit_name = bin_axis("melanogan")
    level_axis, level_name = bin_axis("levels")

    def distances(r=None, g=None):
        p, q = set_histogram(h_real, r), set_histogram(h_gen, g)
        jsd, w_levels = histogram_distances(p, q, level_axis)
        return jsd, w_levels, histogram_distances(p, q, unit_axis)[1]

    point = distances()
    rng = options.rng(4)
    replicates = []
    for _ in range(options.n_bootstrap):
        r, g = rng.integers(0, len(real), len(real)), rng.integers(0, len(generated), len(generated))
        replicates.append(distances(r, g))
    replicates = np.asarray(replicates).reshape(-1, 3)
    n_r, n_g = len(real), len(generated)
    return (result_with_interval("colour_jsd", point[0], replicates[:, 0], n_r, n_g, options, None, bins=LEVELS,
                                 base=2, bounds=(0.0, 1.0)),
            result_with_interval("colour_wasserstein", point[1], replicates[:, 1], n_r, n_g, options, None,
                                 bins=LEVELS, units=level_name, bounds=(0.0, 255.0)),
            result_with_interval("colour_wasserstein_01", point[2], replicates[:, 2], n_r, n_g, options, None,
                                 bins=LEVELS, units=unit_name, convention="melanogan", bounds=(0.0, 1.0)))


# ---------------------------------------------------------------------------------------------- sliced Wasserstein

_BINOMIAL = torch.tensor([1.0, 4.0, 6.0, 4.0, 1.0]) / 16.0


def _blur(x: torch.Tensor) -> torch.Tensor:
    kernel = (_BINOMIAL[:, None] * _BINOMIAL[None, :]).expand(x.shape[1], 1, 5, 5).to(x)
    return F.conv2d(F.pad(x, (2, 2, 2, 2), mode="reflect"), kernel, groups=x.shape[1])


def laplacian_pyramid(images: np.ndarray, min_size: int = 16) -> list[torch.Tensor]:
    """Float (N, 3, h, w) levels, finest first: band-pass levels, then the coarsest Gaussian level."""
    x = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float() / 255.0
    levels = []
    while x.shape[-1] // 2 >= min_size:
        down = _blur(x)[..., ::2, ::2]
        up = F.interpolate(down, scale_factor=2, mode="nearest")
        levels.append(x - _blur(up))
        x = down
    levels.append(x)
    return levels


def patches_per_image(n_images: int, options: MetricOptions) -> int:
    """Patches per image and level: options.swd_patches, fewer for big sets so a level holds at most
    options.swd_max_descriptors patches per set (memory and bootstrap time scale with it)."""
    return int(max(1, min(options.swd_patches, options.swd_max_descriptors // n_images)))


def pyramid_patches(images: np.ndarray, per_image: int, options: MetricOptions, salt: int) -> list[np.ndarray]:
    """Per level: float32 (N, P, 147) 7x7x3 patches at P random positions (shared by all images of the call)."""
    rng = options.rng(salt)
    out = []
    for level in laplacian_pyramid(images, options.swd_min_size):
        height, width = level.shape[-2:]
        ys, xs = rng.integers(0, height - 6, per_image), rng.integers(0, width - 6, per_image)
        # Slice the chosen windows directly: unfolding every position would need N x 147 x H x W floats.
        patches = torch.stack([level[:, :, y:y + 7, x:x + 7].reshape(len(level), -1) for y, x in zip(ys, xs)],
                              dim=1)
        out.append(patches.numpy())
    return out


def _weighted_w1(sorted_values: np.ndarray, order: np.ndarray, w_real: np.ndarray, w_gen: np.ndarray) -> float:
    """Mean over directions of W1 between two weighted 1-D samples presorted jointly.

    sorted_values (M, D): all real then generated projections sorted per direction; order (M, D): the
    argsort; w_real/w_gen (M,): weights (summing to 1 within each set, 0 for the other set).
    W1 = integral |F_real - F_gen| dt over the merged support.
    """
    cdf_gap = np.cumsum(w_real[order] - w_gen[order], axis=0)[:-1]
    steps = np.diff(sorted_values, axis=0)
    return float(np.mean(np.sum(np.abs(cdf_gap) * steps, axis=0)))


def sliced_wasserstein(real: np.ndarray, generated: np.ndarray, options: MetricOptions) -> MetricResult:
    """SWD x1e3 on Laplacian-pyramid patches, averaged over levels; per-level values in extra."""
    if real.shape[1:] != generated.shape[1:]:
        raise ValueError(f"swd: real and generated images differ in size: {real.shape[1:]} vs "
                         f"{generated.shape[1:]}")
    per = patches_per_image(max(len(real), len(generated)), options)
    p_real, p_gen = pyramid_patches(real, per, options, 5), pyramid_patches(generated, per, options, 5)
    n_r, n_g = len(real), len(generated)
    rng = options.rng(6)
    levels = []
    for a, b in zip(p_real, p_gen):
        mean, std = a.reshape(-1, 147).mean(axis=0), a.reshape(-1, 147).std(axis=0) + 1e-8
        directions = rng.standard_normal((147, options.swd_directions))
        directions /= np.linalg.norm(directions, axis=0, keepdims=True)
        projected = np.concatenate([((a.reshape(-1, 147) - mean) / std) @ directions,
                                    ((b.reshape(-1, 147) - mean) / std) @ directions])
        projected = projected.astype(np.float32)  # float32/int32 halve the memory of these (M, D) arrays
        order = np.argsort(projected, axis=0, kind="stable").astype(np.int32)
        levels.append((np.take_along_axis(projected, order, axis=0), order))

    def statistic(r, g):
        # Image multiplicities -> patch weights; each set's weights sum to 1.
        w_real = np.repeat(np.bincount(r, minlength=n_r), per) / (len(r) * per)
        w_gen = np.repeat(np.bincount(g, minlength=n_g), per) / (len(g) * per)
        w_all_real = np.concatenate([w_real, np.zeros(n_g * per)])
        w_all_gen = np.concatenate([np.zeros(n_r * per), w_gen])
        return [1e3 * _weighted_w1(v, o, w_all_real, w_all_gen) for v, o in levels]

    per_level = statistic(np.arange(n_r), np.arange(n_g))
    replicates = bootstrap(lambda r, g: float(np.mean(statistic(r, g))), n_r, n_g, options, salt=7)
    return result_with_interval("swd", float(np.mean(per_level)), replicates, n_r, n_g, options, None,
                                bounds=(0.0, math.inf),
                                per_level=[float(v) for v in per_level], patches_per_image=per,
                                directions=options.swd_directions,
                                level_sizes=[int(real.shape[1] // 2 ** i) for i in range(len(per_level))])
