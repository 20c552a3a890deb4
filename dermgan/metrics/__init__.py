"""Offline evaluation: feature extractors, set metrics with intervals, image statistics, memorisation.

Typical use::

    store = FeatureStore(get_extractor("inception"), cache_dir=run_dir / "metrics" / "cache")
    options = MetricOptions(store=store, n_bootstrap=200)
    real = ImageSet(train_images, condition, fitzpatrick, dataset="synthetic-train")
    results = evaluate(real, ImageSet(generated_images, gen_condition, gen_fitzpatrick), options)
    table = results_table(results, set="dermgan")
"""

from dermgan.metrics.core import ImageSet, MetricOptions, MetricResult, as_image_set, percentile_interval
from dermgan.metrics.distribution import (COLLAPSE_RATIO, diversity, diversity_ratio, fid, fid_from_features,
                                          fid_from_grams, fid_infinity, kid, kid_from_features, precision_recall,
                                          precision_recall_from_features)
from dermgan.metrics.evaluate import (FEATURE_METRICS, SET_METRICS, breakdown, compute, evaluate, nan_result,
                                      results_table)
from dermgan.metrics.agreement import inception_only_gains, kendall_tau, rank_agreement, ranks
from dermgan.metrics.features import (EXTRACTORS, INCEPTION_ENV, INCEPTION_SHA256, DomainExtractor, FeatureStore,
                                      InceptionExtractor, PixelStatsExtractor, RandomCNNExtractor, WeightsError,
                                      extract_features, get_extractor, inception_score, inception_weights_path,
                                      load_inception_torchscript)
from dermgan.metrics.image_stats import (COLOUR_CONVENTIONS, colour_histogram_distances, colour_statistics,
                                        histogram_distances, sliced_wasserstein)
from dermgan.metrics.memorisation import MemorisationReport, memorisation, memorisation_audit
from dermgan.metrics.similarity import msssim_config, pairwise_msssim, pairwise_ssim

__all__ = [
    "ImageSet", "MetricOptions", "MetricResult", "as_image_set", "percentile_interval",
    "COLLAPSE_RATIO", "diversity", "diversity_ratio", "fid", "fid_from_features", "fid_from_grams", "fid_infinity", "kid", "kid_from_features", "precision_recall",
    "precision_recall_from_features",
    "FEATURE_METRICS", "SET_METRICS", "breakdown", "compute", "evaluate", "nan_result", "results_table",
    "inception_only_gains", "kendall_tau", "rank_agreement", "ranks",
    "EXTRACTORS", "INCEPTION_ENV", "INCEPTION_SHA256", "DomainExtractor", "FeatureStore", "InceptionExtractor",
    "PixelStatsExtractor", "RandomCNNExtractor", "WeightsError", "extract_features", "get_extractor",
    "inception_score",
    "inception_weights_path", "load_inception_torchscript",
    "COLOUR_CONVENTIONS", "colour_histogram_distances", "colour_statistics", "histogram_distances",
    "sliced_wasserstein",
    "MemorisationReport", "memorisation", "memorisation_audit",
    "msssim_config", "pairwise_msssim", "pairwise_ssim",
]
