"""The one interface of every set metric, breakdowns by metadata, and result tables.

A set metric is `fn(real: ImageSet, generated: ImageSet, options: MetricOptions) -> list[MetricResult]`
(uint8 arrays are accepted too). `SET_METRICS` maps a name to (fn, names of the results it returns).
"""

from __future__ import annotations

import math
from typing import Callable

import numpy as np
import pandas as pd

from dermgan.metrics import distribution, image_stats, memorisation as memo
from dermgan.metrics.core import ImageSet, MetricOptions, MetricResult, as_image_set, result_with_interval
from dermgan.metrics.similarity import msssim_config, pairwise_msssim


def _features(real: ImageSet, generated: ImageSet, options: MetricOptions, metric: str):
    store = options.require_store(metric)
    return real.features(store), generated.features(store), store.extractor.name


def fid_metric(real, generated, options):
    fr, fg, name = _features(real, generated, options, "fid")
    return [distribution.fid(fr, fg, options, name)]


def fid_infinity_metric(real, generated, options):
    fr, fg, name = _features(real, generated, options, "fid_infinity")
    try:
        sizes_ok = distribution.fid_subset_sizes(len(fr), len(fg), options) is not None
    except ValueError as too_few:  # a set too small to fit a line in 1/n: no number, and the note says why
        sizes_ok = False
        reason = str(too_few)
    if not sizes_ok:
        return [nan_result("fid_infinity", len(fr), len(fg), reason, extractor=name)]
    return [distribution.fid_infinity(fr, fg, options, name)]


def kid_metric(real, generated, options):
    fr, fg, name = _features(real, generated, options, "kid")
    return [distribution.kid(fr, fg, options, name)]


def precision_recall_metric(real, generated, options):
    fr, fg, name = _features(real, generated, options, "precision_recall")
    return list(distribution.precision_recall(fr, fg, options, name))


def colour_metric(real, generated, options):
    return list(image_stats.colour_statistics(real.images, generated.images, options))


def swd_metric(real, generated, options):
    return [image_stats.sliced_wasserstein(real.images, generated.images, options)]


def memorisation_metric(real, generated, options):
    """`real` is the training set here; reference distances are leave-one-out within it."""
    return list(memo.memorisation(real, generated, options))


# ---------------------------------------------------------------------------------------------- diversity

def known_labels(values) -> np.ndarray:
    """Which entries of a label array are known: not missing (None/NaN) and not negative (-1 = unknown, as in
    samples of unconditional models)."""
    series = pd.Series(np.asarray(values, dtype=object))
    numeric = pd.to_numeric(series, errors="coerce")
    return (series.notna() & ~(numeric < 0)).to_numpy()


def within_condition_pairs(condition: np.ndarray | None, n: int, n_pairs: int, rng) -> np.ndarray:
    """(P, 2) random pairs of distinct images sharing a condition. Images of unknown condition are left out; when
    no condition is known (or there is no array) any two images make a pair."""
    known = np.zeros(n, bool) if condition is None else known_labels(condition)
    if not known.any():
        codes = np.zeros(n, dtype=np.int64)
    else:
        codes = np.where(known, pd.factorize(pd.Series(np.asarray(condition, dtype=object)))[0], -1)
    members = {c: np.flatnonzero(codes == c) for c in np.unique(codes) if c >= 0}
    eligible = np.concatenate([rows for rows in members.values() if len(rows) >= 2] or [np.empty(0, int)])
    if len(eligible) == 0:
        return np.empty((0, 2), dtype=np.int64)
    pairs = np.empty((n_pairs, 2), dtype=np.int64)
    for p in range(n_pairs):
        first = rng.choice(eligible)
        group = members[codes[first]]
        second = rng.choice(group[group != first])
        pairs[p] = first, second
    return pairs


def mean_pair_msssim(images: ImageSet, options: MetricOptions, salt: int) -> tuple[np.ndarray, np.ndarray]:
    pairs = within_condition_pairs(images.condition, len(images), options.ssim_pairs, options.rng(salt))
    if len(pairs) == 0:
        return pairs, np.empty(0)
    return pairs, pairwise_msssim(images.images[pairs[:, 0]], images.images[pairs[:, 1]])


def msssim_diversity_metric(real, generated, options):
    """Mean MS-SSIM of random same-condition pairs of generated images (lower = more diverse).

    The same number for real pairs is in extra["real_msssim"] as the yardstick; the interval resamples pairs.
    """
    _, values = mean_pair_msssim(generated, options, 9)
    if len(values) == 0:
        return [nan_result("msssim_diversity", len(real), len(generated),
                           "no condition with two or more generated images")]
    _, real_values = mean_pair_msssim(real, options, 10)
    draws = options.rng(11).integers(0, len(values), (options.n_bootstrap, len(values)))
    return [result_with_interval("msssim_diversity", float(values.mean()), values[draws].mean(axis=1), len(real),
                                 len(generated), options, None, bounds=(-1.0, 1.0), pairs=int(len(values)),
                                 real_msssim=float(real_values.mean()) if len(real_values) else math.nan,
                                 config={k: v for k, v in msssim_config(generated.images.shape[1]).items()})]


# ---------------------------------------------------------------------------------------------- registry

SET_METRICS: dict[str, tuple[Callable, tuple[str, ...]]] = {
    "fid": (fid_metric, ("fid",)),
    "fid_infinity": (fid_infinity_metric, ("fid_infinity",)),
    "kid": (kid_metric, ("kid",)),
    "precision_recall": (precision_recall_metric, ("precision", "recall")),
    "colour": (colour_metric, ("colour_jsd", "colour_wasserstein", "colour_wasserstein_01")),
    "swd": (swd_metric, ("swd",)),
    "msssim_diversity": (msssim_diversity_metric, ("msssim_diversity",)),
    "memorisation": (memorisation_metric, ("nn_closer_share", "copy_share")),
}
FEATURE_METRICS = ("fid", "fid_infinity", "kid", "precision_recall", "memorisation")


def compute(metric: str, real, generated, options: MetricOptions) -> list[MetricResult]:
    """Run one registered set metric; an unknown name is an error listing the known ones."""
    if metric not in SET_METRICS:
        raise ValueError(f"unknown metric {metric!r}; known: {', '.join(SET_METRICS)}")
    real, generated = as_image_set(real, "real set"), as_image_set(generated, "generated set")
    return SET_METRICS[metric][0](real, generated, options)


def evaluate(real, generated, options: MetricOptions, metrics=("fid", "kid", "precision_recall", "colour", "swd",
                                                               "msssim_diversity")) -> list[MetricResult]:
    """Several set metrics on one (real, generated) pair."""
    real, generated = as_image_set(real, "real set"), as_image_set(generated, "generated set")
    return [result for name in metrics for result in compute(name, real, generated, options)]


def nan_result(metric: str, n_real: int, n_generated: int, reason: str, **extra) -> MetricResult:
    return MetricResult(metric, math.nan, (math.nan, math.nan), int(n_real), int(n_generated), None,
                        {"note": reason, **extra})


def breakdown(metrics, real, generated, options: MetricOptions, by: str = "condition") -> list[MetricResult]:
    """The metrics within each group of `by` ("condition" or "fitzpatrick"), groups from both sets' arrays.

    A group with fewer than options.min_group images in either set is not silently dropped: it gets NaN
    results whose extra["note"] says why. Every result has extra["group"] and extra["by"]. Unknown labels
    (missing, NaN or negative: -1 in samples of an unconditional model) form no group; such images count in no
    group, so a set with no known label gets the "fewer than" NaN results in every group.
    """
    real, generated = as_image_set(real, "real set"), as_image_set(generated, "generated set")
    r_groups, g_groups = real.groups(by), generated.groups(by)
    present = pd.unique(np.concatenate([np.asarray(r_groups, dtype=object)[known_labels(r_groups)],
                                        np.asarray(g_groups, dtype=object)[known_labels(g_groups)]]))
    results = []
    for group in sorted(present):
        r_rows = np.flatnonzero(pd.Series(r_groups).eq(group).fillna(False).to_numpy())
        g_rows = np.flatnonzero(pd.Series(g_groups).eq(group).fillna(False).to_numpy())
        label = group.item() if hasattr(group, "item") else group
        tag = {"group": label, "by": by}
        for name in metrics:
            if min(len(r_rows), len(g_rows)) < options.min_group:
                reason = f"fewer than {options.min_group} images ({len(r_rows)} real, {len(g_rows)} generated)"
                results += [nan_result(n, len(r_rows), len(g_rows), reason, **tag) for n in SET_METRICS[name][1]]
                continue
            for result in compute(name, real.select(r_rows), generated.select(g_rows), options):
                result.extra.update(tag)
                results.append(result)
    return results


def results_table(results: list[MetricResult], **columns) -> pd.DataFrame:
    """One row per result: metric, value, interval, counts, extractor, group/by when present, plus `columns`."""
    rows = []
    for r in results:
        rows.append({**columns, "metric": r.metric, "value": r.value, "lo": r.interval[0], "hi": r.interval[1],
                     "n_real": r.n_real, "n_generated": r.n_generated, "extractor": r.extractor,
                     "by": r.extra.get("by"), "group": r.extra.get("group"), "note": r.extra.get("note")})
    return pd.DataFrame(rows)
