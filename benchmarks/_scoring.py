"""How the generator benchmarks score images: as notebook 05 does, but on the VALIDATION side, so that settings
chosen with these numbers never saw a test image.

- Reference: 05's reference set, the same real training images (05's rows, drawn with 05's seed).
- Generated: a map-conditioned model turns the validation maps into images; an unconditional one draws samples.
- Scores: Inception KID and precision (05's metric settings, 95 % bootstrap intervals); KID in the features of the
  in-repo domain classifier (trained on the training split, a network no discriminator ever saw); SWD on pixels;
  and the diversity ratio: mean pairwise distance of the set's Inception features over that of the reference
  set's (1 = as varied as real images; a collapsed model is near 0, `COLLAPSE_RATIO` in notebook 03's sense).
- Floor: the real validation images blurred by 1 px score `blurred` the same way; a generator's KID is reported
  as a multiple of it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

import _report

ROOT = Path(__file__).resolve().parents[1]


def cpu_data(profile):
    """The cpu profile's synthetic dataset, cached where the cpu series caches it."""
    from dermgan.data import load_dataset

    return load_dataset("synthetic", image_size=profile.data.image_size, n_images=profile.data.n_images, seed=0,
                        cache_dir=ROOT / "runs" / "cpu" / "data")


class ValidationScorer:
    def __init__(self, data, profile, run_dir: Path, inception: bool = True, seed: int = 0):
        from dermgan import metrics as M
        from dermgan.classify import metrics_classifier

        self.M, cfg = M, profile.metrics
        train, val = data.split("train"), data.split("val")
        rows = _report.reference_rows(np.random.default_rng(seed), cfg.n_samples, len(train))
        self.real = M.ImageSet(np.asarray(train.images[rows]), train.table["label"].to_numpy()[rows],
                               dataset=f"{data.name}-train-ref")
        self.val = val
        classifier, status = metrics_classifier(train, val, profile.classifier,
                                                run_dir / "checkpoints" / "metrics_classifier" / "model.pt",
                                                seed=seed)
        print(status, flush=True)
        cache = run_dir / "metrics" / "cache"
        self.stores = {"domain": M.FeatureStore(M.get_extractor("domain", network=classifier), cache,
                                                cfg.batch_size)}
        if inception:
            self.stores["inception"] = M.FeatureStore(M.get_extractor("inception"), cache, cfg.batch_size,
                                                      precision=cfg.inception_precision)
        self.options = {name: M.MetricOptions(store=store, n_bootstrap=cfg.n_bootstrap, seed=seed,
                                              kid_subset_size=cfg.kid_subset_size)
                        for name, store in [*self.stores.items(), ("pixels", None)]}
        self.settings = (f"{len(rows)} real training images (05's reference rows), {cfg.n_bootstrap} bootstrap "
                         f"replicates, KID subsets of {cfg.kid_subset_size}, Inception in {cfg.inception_precision}")
        blurred = _report.blurred(np.asarray(val.images[: cfg.n_samples]))
        self.floor = self(blurred, val.table["label"].to_numpy()[: cfg.n_samples])

    def __call__(self, images: np.ndarray, condition: np.ndarray) -> dict:
        M = self.M
        generated = M.ImageSet(np.asarray(images), np.asarray(condition))
        out = {}
        for name, options in self.options.items():
            wanted = {"inception": ("kid", "precision_recall"), "domain": ("kid",), "pixels": ("swd",)}[name]
            table = M.results_table(M.evaluate(self.real, generated, options, metrics=wanted))
            overall = table[table["group"].isna()].drop_duplicates("metric").set_index("metric")
            prefix = "domain_" if name == "domain" else ""
            for metric in ("kid", "precision", "recall", "swd"):
                if metric in overall.index:
                    out[f"{prefix}{metric}"] = float(overall.loc[metric, "value"])
                    out[f"{prefix}{metric}_lo"] = float(overall.loc[metric, "lo"])
                    out[f"{prefix}{metric}_hi"] = float(overall.loc[metric, "hi"])
        main = "inception" if "inception" in self.stores else "domain"
        out["diversity"] = M.diversity_ratio(self.real.features(self.stores[main]),
                                             generated.features(self.stores[main]))
        return out

    def relative(self, row: dict) -> dict:
        """The row with KIDs as multiples of the blurred-real floor's."""
        floor = getattr(self, "floor", None)
        if floor is None:
            return row
        row = dict(row)
        for key in ("kid", "domain_kid"):
            if key in row:
                row[f"{key} / blurred"] = row[key] / floor[key]
        return row

