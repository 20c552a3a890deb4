"""What every set metric shares: the image-set type, the options, the result record and bootstrap intervals."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Callable

import numpy as np

from dermgan.metrics.features import FeatureStore, check_images


@dataclass
class ImageSet:
    """uint8 (N, H, W, 3) images plus optional per-image metadata used for grouping (condition, Fitzpatrick).

    `dataset` names the set (e.g. "synthetic-train"); it labels the set's feature-cache file.
    """

    images: np.ndarray
    condition: np.ndarray | None = None
    fitzpatrick: np.ndarray | None = None
    dataset: str | None = None
    _features: dict = field(default_factory=dict, repr=False)  # extractor identity -> (N, D) features

    def __post_init__(self) -> None:
        self.images = check_images(self.images, self.dataset or "image set")
        for name in ("condition", "fitzpatrick"):
            values = getattr(self, name)
            if values is not None:
                values = np.asarray(values)
                if len(values) != len(self.images):
                    raise ValueError(f"{self.dataset or 'image set'}: {name} has {len(values)} entries for "
                                     f"{len(self.images)} images")
                setattr(self, name, values)

    def __len__(self) -> int:
        return len(self.images)

    def features(self, store: FeatureStore) -> np.ndarray:
        """This set's features from `store`, kept with the set so that subsets (select) never re-extract."""
        key = store.identity
        if key not in self._features:
            self._features[key] = store.features(self.images, self.dataset)
        return self._features[key]

    def select(self, rows: np.ndarray) -> "ImageSet":
        """The subset at `rows`, with already-extracted features sliced along."""
        rows = np.asarray(rows)
        take = lambda a: None if a is None else a[rows]  # noqa: E731
        return ImageSet(self.images[rows], take(self.condition), take(self.fitzpatrick), None,
                        {key: value[rows] for key, value in self._features.items()})

    def groups(self, by: str) -> np.ndarray:
        """The metadata array `by` ("condition" or "fitzpatrick"); an error if this set has none."""
        if by not in ("condition", "fitzpatrick"):
            raise ValueError(f"unknown grouping {by!r}; use 'condition' or 'fitzpatrick'")
        values = getattr(self, by)
        if values is None:
            raise ValueError(f"{self.dataset or 'image set'} has no {by} array to group by")
        return values


def as_image_set(data, what: str = "image set") -> ImageSet:
    """An ImageSet from an ImageSet or a bare uint8 array."""
    if isinstance(data, ImageSet):
        return data
    return ImageSet(check_images(data, what))


@dataclass
class MetricOptions:
    """Settings shared by all set metrics. `store` supplies features (FID, KID, precision/recall, memorisation)."""

    store: FeatureStore | None = None
    n_bootstrap: int = 200
    confidence: float = 0.95
    seed: int = 0
    kid_subset_size: int = 100
    kid_subsets: int = 100
    pr_k: int = 3  # Kynkäänniemi et al. 2019 neighbourhood size
    fid_inf_points: int = 8  # FID-infinity: subset sizes n, evenly spaced ...
    fid_inf_min_fraction: float = 0.3  # ... from this fraction of the smaller set to all of it
    fid_inf_draws: int = 3  # random subsets per size for the estimate
    fid_inf_bootstrap: int = 50  # resamples for its interval (each refits the whole curve, one subset per size)
    ssim_pairs: int = 200  # image pairs per set (or per condition) for MS-SSIM diversity
    swd_patches: int = 32  # 7x7 patches per image per pyramid level ...
    swd_max_descriptors: int = 8192  # ... capped so that a level holds at most this many per set
    swd_directions: int = 64
    swd_min_size: int = 16  # coarsest pyramid level, pixels
    copy_ssim: float = 0.95  # memorisation: SSIM at or above this (and above real-to-real) flags a copy
    copy_distance_fraction: float = 0.5  # ... or feature distance below this fraction of the 1 % real NN distance
    ssim_candidates: int = 8  # memorisation: training images per generated image compared by SSIM
    min_group: int = 10  # breakdowns: groups smaller than this (in either set) get a NaN result with a note

    def rng(self, salt: int = 0) -> np.random.Generator:
        return np.random.default_rng([self.seed, salt])

    def require_store(self, metric: str) -> FeatureStore:
        if self.store is None:
            raise ValueError(f"metric {metric!r} needs features: pass MetricOptions(store=FeatureStore(...))")
        return self.store


@dataclass
class MetricResult:
    """One number with its interval and where it came from."""

    metric: str
    value: float
    interval: tuple[float, float]
    n_real: int
    n_generated: int
    extractor: str | None = None
    extra: dict = field(default_factory=dict)

    def as_dict(self) -> dict:
        record = asdict(self)
        record["interval"] = [float(v) for v in self.interval]
        return record


def percentile_interval(replicates: np.ndarray, confidence: float) -> tuple[float, float]:
    """The percentile bootstrap interval; NaN when there are no finite replicates."""
    replicates = np.asarray(replicates, dtype=float)
    replicates = replicates[np.isfinite(replicates)]
    if len(replicates) == 0:
        return (math.nan, math.nan)
    alpha = (1.0 - confidence) / 2.0
    lo, hi = np.quantile(replicates, [alpha, 1.0 - alpha])
    return (float(lo), float(hi))


def bootstrap(statistic: Callable[[np.ndarray, np.ndarray], float], n_real: int, n_generated: int,
              options: MetricOptions, salt: int = 0) -> np.ndarray:
    """Replicates of statistic(real_rows, generated_rows) with both sets resampled with replacement."""
    rng = options.rng(salt)
    replicates = np.empty(options.n_bootstrap)
    for b in range(options.n_bootstrap):
        real_rows = rng.integers(0, n_real, n_real)
        generated_rows = rng.integers(0, n_generated, n_generated)
        replicates[b] = statistic(real_rows, generated_rows)
    return replicates


def result_with_interval(metric: str, value: float, replicates: np.ndarray, n_real: int, n_generated: int,
                         options: MetricOptions, extractor: str | None = None,
                         bounds: tuple[float, float] = (-math.inf, math.inf), **extra) -> MetricResult:
    """A MetricResult with a bias-centred percentile bootstrap interval.

    Resampling with replacement duplicates images, which biases set distances (FID, colour JSD, SWD) upwards:
    their replicates sit above the point estimate and a plain percentile interval can miss it. So the replicates
    are shifted to have the point estimate as their median (the shift is kept in extra["bootstrap_shift"]) and
    the interval is their central `confidence` range, clipped to the metric's `bounds`.
    """
    replicates = np.asarray(replicates, dtype=float)
    finite = replicates[np.isfinite(replicates)]
    shift = float(np.median(finite) - value) if len(finite) and np.isfinite(value) else 0.0
    lo, hi = percentile_interval(finite - shift, options.confidence)
    lo, hi = max(lo, bounds[0]), min(hi, bounds[1])
    if np.isfinite(value) and np.isfinite(lo):  # guard against rounding at the bounds
        lo, hi = min(lo, value), max(hi, value)
    extra = {"n_bootstrap": int(options.n_bootstrap), "confidence": options.confidence,
             "bootstrap_shift": shift, **extra}
    return MetricResult(metric, float(value), (float(lo), float(hi)), int(n_real), int(n_generated), extractor,
                        extra)
