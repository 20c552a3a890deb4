"""Issue 12: why did DCGAN and DDGAN-deconv learn nothing at the cpu profile? The adversarial loss, side by side.

    .venv/bin/python benchmarks/melanogan_loss_check.py [--steps 1200] [--models dcgan ddgan-deconv ...]

Trains each model with each loss through the one training loop (dermgan.train, via melanogan.train_config)
on the synthetic cpu-profile training split, everything else as the profile has it, and scores 256 samples
drawn after training against 1,000 real training images:
- colour W1 (MelanoGAN convention, [0, 1] axis, mean of R, G, B) and the distance between mean colours;
- SWD on Laplacian-pyramid patches (x1e3; structure and texture, which colour statistics do not see);
- diversity: the per-pixel standard deviation across samples (0 = every noise vector gives the same image;
  the real images' value is printed beside it);
- the last logged D and G losses.
and writes results/melanogan_loss.png: 8 samples per row (model, loss), the same noise in every row.
One process, one machine: the rows compare with each other, not with other runs.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

import dermgan.runtime
from dermgan.data import load_for_run
from dermgan.metrics import MetricOptions
from dermgan.metrics.image_stats import colour_histogram_distances, sliced_wasserstein
from dermgan.models import melanogan as mg
from dermgan.train import train

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _report  # noqa: E402


def diversity(images: np.ndarray) -> float:
    """Mean over pixels and channels of the standard deviation across images, in intensity levels."""
    return float(images.astype(np.float32).std(axis=0).mean())


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="cpu")
    parser.add_argument("--run-dir", default="runs/cpu", help="where the dataset cache lives (nothing else is written)")
    parser.add_argument("--steps", type=int, default=None, help="default: the profile's")
    parser.add_argument("--models", nargs="+", default=["dcgan", "ddgan-deconv", "ddgan-upsample", "lapgan"])
    parser.add_argument("--losses", nargs="+", default=["lsgan", "vanilla"])
    args = parser.parse_args(argv)
    for name in args.models:
        mg.parse_model(name)  # unknown names fail here, before any training
    ctx = dermgan.runtime.start(args.profile, args.run_dir)
    base = ctx.profile.melanogan
    steps = args.steps or base.steps
    train_split = load_for_run(ctx).split("train")
    rng = np.random.default_rng(ctx.seed)
    real = np.asarray(train_split.images[np.sort(rng.choice(len(train_split), 1000, replace=False))])
    rows, grid_rows = [], []
    options = MetricOptions(n_bootstrap=10, seed=ctx.seed)  # the point value is what is compared here
    for name in args.models:
        for loss in args.losses:
            cfg = dataclasses.replace(base, gan_loss=loss, steps=steps)
            recipe = mg.build(name, cfg, train_split.image_size)
            with tempfile.TemporaryDirectory() as tmp:
                start = time.perf_counter()
                train(recipe, mg.ImageDataset(mg.training_images(name, train_split)),
                      mg.train_config(name, cfg, ctx.seed, str(ctx.device)), Path(tmp), Path(tmp) / "log.csv",
                      resume=False, desc=f"{name} {loss}")
                seconds = time.perf_counter() - start
                log = pd.read_csv(Path(tmp) / "log.csv")
            samples = mg.sample_images(recipe.generator, 256, ctx.seed, device=ctx.device)
            colour = colour_histogram_distances(real, samples)
            grid_rows.append((f"{name}, {loss}", samples[:8]))
            mean_gap = np.abs(samples.reshape(-1, 3).mean(0) - real.reshape(-1, 3).mean(0)).mean()
            rows.append({"model": name, "loss": loss, "steps": steps, "train_s": round(seconds, 1),
                         "loss_d_end": round(float(log["loss_d"].iloc[-1]), 4),
                         "loss_g_end": round(float(log["loss_g"].iloc[-1]), 4),
                         "colour_w1": round(colour["wasserstein"], 4),
                         "swd": round(sliced_wasserstein(real, samples, options).value, 1), "mean_colour_gap": round(float(mean_gap), 1),
                         "diversity": round(diversity(samples), 1)})
            print(rows[-1], flush=True)
    notes = (f"Synthetic data ({ctx.profile.name} profile, {train_split.image_size} px, training split). Real "
             f"training images: diversity {diversity(real):.1f} levels; colour W1 and SWD 0 by definition. "
             "mean_colour_gap: mean over R, G, B of |mean generated - mean real| in intensity levels.")
    _report.write("melanogan_loss", f"MelanoGAN baselines: LSGAN vs the non-saturating (vanilla) loss, {steps} steps",
                  rows, list(rows[0]), notes)
    write_grid(grid_rows, real[:8])


def write_grid(rows: list[tuple[str, np.ndarray]], real: np.ndarray) -> None:
    import matplotlib
    matplotlib.use("Agg")
    from dermgan.viz import image_grid

    rows = [*rows, ("real (training)", real)]
    fig = image_grid([images for _, images in rows], row_labels=[title for title, _ in rows], cell_size=0.8)
    target = _report.RESULTS / "melanogan_loss.png"
    tmp = target.with_name(f".{target.name}.tmp.png")
    fig.savefig(tmp, dpi=100, bbox_inches="tight")
    tmp.replace(target)


if __name__ == "__main__":
    main()
