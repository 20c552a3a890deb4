"""Issue 10: does DermGAN's Inception KID fall with training length? 250-step seed runs against the main model.

    .venv/bin/python benchmarks/dermgan_kid_by_steps.py [--run-dir runs/cpu]

Reads what notebooks 02 and 05 left in a run directory: the held-out samples of the main "dermgan" model
(`steps` of the profile) and of the ablation table's "dermgan" seed runs (`ablation_steps`, same schedule
shape), and scores each against the same reference set of real training images as 05 (same rows, same seed,
same feature cache), with the blurred real test images beside them. Inception KID and precision with 95%
bootstrap intervals; the ratio to the blurred reference is the issue's target (<= 2, precision >= 0.2).
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from dermgan import metrics as M
from dermgan.models.dermgan import read_samples
from dermgan.train import data_fingerprint

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _report  # noqa: E402


def main(argv=None) -> None:
    ctx, data = _report.open_run(__doc__, argv)
    cfg = ctx.profile.metrics
    train, test = data.split("train"), data.split("test")
    rng = np.random.default_rng(ctx.seed)  # the rows 05 draws: reference first, then the test floor

    def rows(n_total):
        return _report.reference_rows(rng, cfg.n_samples, n_total)

    def image_set(images, table, index, name=None):
        tone = pd.to_numeric(table["fitzpatrick"], errors="coerce").to_numpy(dtype=float)[index]
        return M.ImageSet(images[index], table["label"].to_numpy()[index], tone, dataset=name)

    real = image_set(train.images, train.table, rows(len(train)), f"{data.name}-train-ref")
    floor = image_set(test.images, test.table, rows(len(test)), f"{data.name}-test-floor")
    sets = {"blurred real (sigma 1 px)": M.ImageSet(_report.blurred(floor.images), floor.condition, floor.fitzpatrick)}
    for folder in sorted(ctx.run_dir.glob("samples/dermgan*")):
        if not re.fullmatch(r"dermgan(-s\d+)?", folder.name):  # the main model and its 250-step seed runs
            continue
        npz = read_samples(folder / "samples.npz", data_fingerprint(train, ctx.data_root))  # as 05 reads it
        n = len(npz["images"])
        index = np.sort(rng.choice(n, size=min(cfg.n_samples, n), replace=False))
        sets[folder.name] = M.ImageSet(npz["images"][index], npz["condition"][index],
                                       npz["fitzpatrick"][index].astype(float))
    store = M.FeatureStore(M.get_extractor("inception"), ctx.path("metrics", "cache", ".keep").parent,
                           cfg.batch_size, ctx.device, precision=cfg.inception_precision)
    options = M.MetricOptions(store=store, n_bootstrap=cfg.n_bootstrap, seed=ctx.seed,
                              kid_subset_size=cfg.kid_subset_size)
    steps = {"dermgan": ctx.profile.dermgan.steps}
    table = []
    for name, generated in sets.items():
        scores = _report.kid_and_precision(real, generated, options)
        table.append({"set": name, "steps": steps.get(name, ctx.profile.dermgan.ablation_steps if "-s" in name
                                                      else "-"),
                      **{m: scores[m] for m in ("kid", "precision")},
                      **{f"{m} 95% CI": f"[{scores[f'{m}_lo']:.3g}, {scores[f'{m}_hi']:.3g}]"
                         for m in ("kid", "precision")}})
    blur_kid = table[0]["kid"]
    for row in table:
        row["KID / blurred"] = row["kid"] / blur_kid
    _report.write(
        "dermgan_kid_by_steps", f"DermGAN Inception KID by training length ({data.name} data, {ctx.profile.name} profile)",
        table, ["set", "steps", "kid", "kid 95% CI", "KID / blurred", "precision", "precision 95% CI"],
        notes=f"Against {len(real)} real training images (05's reference rows); {cfg.n_bootstrap} bootstrap "
              f"replicates; Inception in {cfg.inception_precision}. Run directory {ctx.run_dir}. Issue 10 target: "
              "KID / blurred <= 2 and precision >= 0.2.")


if __name__ == "__main__":
    main()
