"""Issue 17: where does notebook 05's time go? Seconds per set for every metric and extractor it computes.

    .venv/bin/python benchmarks/profile_metrics.py [--run-dir runs/cpu] [--profile cpu]

Reads a run directory that 02 and 05 have filled: 05's reference rows of real training images and the held-out
DermGAN samples, 600 each at the cpu profile. Times, for that one pair, the feature extraction of one set (no cache)
and each metric as 05 calls it (05's options: bootstrap replicates, KID subsets, MS-SSIM pairs; features from the
run's cache, so metric and extraction times are apart). 05 repeats this for every model and reference set.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

from dermgan import metrics as M
from dermgan.classify import metrics_classifier
from dermgan.models.dermgan import read_samples
from dermgan.train import data_fingerprint

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _report  # noqa: E402

# What 05 computes per set and extractor (see its "Every metric on every set" cell).
FEATURE_METRICS = {"domain": ("kid", "fid", "fid_infinity", "precision_recall"),
                   "inception": ("kid", "fid", "precision_recall")}
IMAGE_METRICS = ("colour", "swd", "msssim_diversity")


def seconds(work) -> float:
    start = time.perf_counter()
    work()
    return time.perf_counter() - start


def main(argv=None) -> None:
    ctx, data = _report.open_run(__doc__, argv)
    cfg = ctx.profile.metrics
    train, val = data.split("train"), data.split("val")
    rows = _report.reference_rows(np.random.default_rng(ctx.seed), cfg.n_samples, len(train))  # 05's reference
    real = M.ImageSet(train.images[rows], train.table["label"].to_numpy()[rows])
    npz = read_samples(ctx.run_dir / "samples" / "dermgan" / "samples.npz",
                       data_fingerprint(train, ctx.data_root))  # 05's check
    generated = M.ImageSet(npz["images"][: cfg.n_samples], npz["condition"][: cfg.n_samples])
    classifier, _ = metrics_classifier(train, val, ctx.profile.classifier,
                                       ctx.path("checkpoints", "metrics_classifier", "model.pt"),
                                       device=ctx.device, seed=ctx.seed, data_root=ctx.data_root)
    cache = ctx.path("metrics", "cache", ".keep").parent
    extractors = {"domain": M.get_extractor("domain", network=classifier), "inception": M.get_extractor("inception")}
    precision = {"domain": "fp32", "inception": cfg.inception_precision}
    table = []
    for name, extractor in extractors.items():
        fresh = M.FeatureStore(extractor, None, cfg.batch_size, ctx.device, precision=precision[name])
        table.append({"work": f"{name} features of one set (no cache)",
                      "s per set": seconds(lambda: M.ImageSet(generated.images).features(fresh))})
        store = M.FeatureStore(extractor, cache, cfg.batch_size, ctx.device, precision=precision[name])
        real.features(store), generated.features(store)  # from the run's cache, or computed once here
        options = M.MetricOptions(store=store, n_bootstrap=cfg.n_bootstrap, seed=ctx.seed,
                                  kid_subset_size=cfg.kid_subset_size, fid_inf_bootstrap=min(cfg.n_bootstrap, 50))
        for metric in FEATURE_METRICS[name]:
            table.append({"work": f"{metric} on {name} features",
                          "s per set": seconds(lambda: M.evaluate(real, generated, options, metrics=(metric,)))})
    options = M.MetricOptions(n_bootstrap=cfg.n_bootstrap, seed=ctx.seed, ssim_pairs=cfg.ssim_pairs)
    for metric in IMAGE_METRICS:
        table.append({"work": metric, "s per set": seconds(lambda: M.evaluate(real, generated, options,
                                                                            metrics=(metric,)))})
    total = sum(r["s per set"] for r in table)
    for r in table:
        r["share"] = r["s per set"] / total
    table.sort(key=lambda r: -r["s per set"])
    _report.write("metrics_profile", f"Where 05's time goes: one set, every metric ({data.name} data, "
                  f"{ctx.profile.name} profile)", table, ["work", "s per set", "share"],
                  notes=f"{len(real)} real vs {len(generated)} generated images of {data.image_size} px; "
                        f"{cfg.n_bootstrap} bootstrap replicates, KID subsets of {cfg.kid_subset_size}, "
                        f"{cfg.ssim_pairs} MS-SSIM pairs; Inception in {cfg.inception_precision}. 05 repeats this "
                        "for every model and reference set (breakdowns by condition and skin type come on top).")


if __name__ == "__main__":
    main()
