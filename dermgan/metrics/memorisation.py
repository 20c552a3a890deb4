"""Memorisation audit (Furger et al. 2020 compare generated images with every training image by SSIM).

For each generated image: the nearest training image by feature distance, and the most similar training image by
SSIM. Comparing SSIM against every training image costs N_gen x N_train SSIMs, so SSIM is evaluated only on
candidates: the `ssim_candidates` nearest training images by feature distance plus as many by pixel distance
(on 32 px thumbnails); a copy is nearest under both, so it is never missed.

Reference ("typical real-to-real"): the same quantities for held-out real images against the training set, or,
without a held-out set, for each training image against the other training images (leave-one-out).
- value: share of generated images closer (feature distance) to a training image than the median real-to-real
  nearest-neighbour distance. About 0.5 for a generator that behaves like fresh real data; near 1 = memorising.
- copies: generated images whose feature distance is below `copy_distance_fraction` x the 1 % quantile of the
  real-to-real distances, or whose SSIM is at least max(`copy_ssim`, 99 % quantile of real-to-real SSIM).

Features: whatever options.store extracts. Use domain features (a skin network's embedding): the question "is this
a copy of a training image" needs no ImageNet network, and Inception features of a whole training split are the
most expensive thing in notebook 05. SSIM uses the window of similarity.ssim_config (7 px at 64 px and below).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from dermgan.metrics.core import ImageSet, MetricOptions, MetricResult, as_image_set, result_with_interval
from dermgan.metrics.features import data_hash
from dermgan.metrics.similarity import pairwise_ssim


@dataclass
class MemorisationReport:
    nearest_feature: np.ndarray  # (N_gen,) training row nearest in feature space
    feature_distance: np.ndarray  # (N_gen,)
    nearest_ssim: np.ndarray  # (N_gen,) training row with the highest SSIM among the candidates
    ssim: np.ndarray  # (N_gen,)
    reference_distance: np.ndarray  # real-to-real nearest-neighbour distances
    reference_ssim: np.ndarray
    distance_threshold: float
    ssim_threshold: float
    flagged: np.ndarray  # (N_gen,) bool: likely copies
    closer_share: float  # share of generated closer than the median real-to-real distance


def _thumbnails(images: np.ndarray) -> torch.Tensor:
    x = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float() / 255.0
    return F.adaptive_avg_pool2d(x, 32).flatten(1).double()


def _nearest(query: torch.Tensor, train: torch.Tensor, k: int, exclude_self: bool) -> tuple[np.ndarray, ...]:
    """Indices and distances of the k nearest training rows for each query row."""
    distances = torch.cdist(query, train)
    if exclude_self:
        distances.fill_diagonal_(float("inf"))
    k = min(k, distances.shape[1])
    values, rows = distances.topk(k, dim=1, largest=False)
    return rows.numpy(), values.numpy()


def _best_ssim(query_images: np.ndarray, train_images: np.ndarray, candidates: np.ndarray):
    """For each query row, the candidate training row with the highest SSIM, and that SSIM."""
    n, k = candidates.shape
    values = pairwise_ssim(np.repeat(query_images, k, axis=0), train_images[candidates.ravel()]).reshape(n, k)
    best = values.argmax(axis=1)
    return candidates[np.arange(n), best], values[np.arange(n), best]


def _audit_rows(query: ImageSet, train: ImageSet, f_query, f_train, options: MetricOptions, exclude_self: bool):
    k = options.ssim_candidates
    feat_rows, feat_dist = _nearest(torch.from_numpy(f_query), torch.from_numpy(f_train), k, exclude_self)
    pix_rows, _ = _nearest(_thumbnails(query.images), _thumbnails(train.images), k, exclude_self)
    ssim_rows, ssim = _best_ssim(query.images, train.images, np.concatenate([feat_rows, pix_rows], axis=1))
    return feat_rows[:, 0], feat_dist[:, 0], ssim_rows, ssim


_REFERENCES: dict[tuple, tuple[np.ndarray, np.ndarray]] = {}


def _reference(train: ImageSet, holdout, f_train: np.ndarray, options: MetricOptions):
    """Real-to-real nearest-neighbour distances and SSIMs, memoised: auditing several generated sets against
    the same training and held-out images computes them once."""
    store = options.store
    holdout = as_image_set(holdout, "held-out set") if holdout is not None else None
    key = (store.identity, data_hash(train.images), None if holdout is None else data_hash(holdout.images),
           options.ssim_candidates)
    if key not in _REFERENCES:
        if holdout is not None:
            _, d_ref, _, s_ref = _audit_rows(holdout, train, holdout.features(store), f_train, options, False)
        else:
            if len(train) < 2:
                raise ValueError("memorisation: leave-one-out reference needs at least 2 training images")
            _, d_ref, _, s_ref = _audit_rows(train, train, f_train, f_train, options, True)
        if len(_REFERENCES) > 8:
            _REFERENCES.clear()
        _REFERENCES[key] = (d_ref, s_ref)
    return _REFERENCES[key]


def memorisation_audit(train, generated, options: MetricOptions, holdout=None) -> MemorisationReport:
    """Nearest training images of every generated image, and which generated images look like copies."""
    train, generated = as_image_set(train, "training set"), as_image_set(generated, "generated set")
    if train.images.shape[1:] != generated.images.shape[1:]:
        raise ValueError(f"memorisation: training images {train.images.shape[1:]} and generated images "
                         f"{generated.images.shape[1:]} differ in size")
    store = options.require_store("memorisation")
    f_train, f_gen = train.features(store), generated.features(store)
    nn_feat, d_gen, nn_ssim, s_gen = _audit_rows(generated, train, f_gen, f_train, options, False)
    d_ref, s_ref = _reference(train, holdout, f_train, options)
    distance_threshold = options.copy_distance_fraction * float(np.quantile(d_ref, 0.01))
    ssim_threshold = max(options.copy_ssim, float(np.quantile(s_ref, 0.99)))
    flagged = (d_gen < distance_threshold) | (s_gen >= ssim_threshold)
    closer = float(np.mean(d_gen < np.median(d_ref)))
    return MemorisationReport(nn_feat, d_gen, nn_ssim, s_gen, d_ref, s_ref, distance_threshold, ssim_threshold,
                              flagged, closer)


def memorisation(train, generated, options: MetricOptions, holdout=None) -> tuple[MetricResult, MetricResult]:
    """Set-metric form of the audit: "nn_closer_share" and "copy_share", intervals over generated images."""
    train = as_image_set(train, "training set")
    report = memorisation_audit(train, generated, options, holdout)
    n_t, n_g = len(train), len(report.flagged)
    closer = (report.feature_distance < np.median(report.reference_distance)).astype(float)
    rng = options.rng(8)
    draws = rng.integers(0, n_g, (options.n_bootstrap, n_g))
    name = options.store.extractor.name
    common = dict(reference="held-out" if holdout is not None else "leave-one-out")
    return (
        result_with_interval("nn_closer_share", report.closer_share, closer[draws].mean(axis=1), n_t, n_g,
                             options, name, bounds=(0.0, 1.0),
                             median_reference_distance=float(np.median(report.reference_distance)),
                             **common),
        result_with_interval("copy_share", float(report.flagged.mean()),
                             report.flagged[draws].mean(axis=1), n_t, n_g, options, name, bounds=(0.0, 1.0),
                             n_flagged=int(report.flagged.sum()),
                             flagged_rows=[int(i) for i in np.flatnonzero(report.flagged)],
                             distance_threshold=report.distance_threshold, ssim_threshold=report.ssim_threshold,
                             max_ssim=float(report.ssim.max()), **common),
    )
