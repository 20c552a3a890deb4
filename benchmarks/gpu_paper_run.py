"""Issue 29: the prepared GPU session, at most ten minutes on one CUDA GPU.

    python benchmarks/gpu_paper_run.py --isic2017 data/isic2017 --ham10000 data/ham10000

What it does, in this order, at the paper profile's widths:
1. the loop / plain ratio of the paper DermGAN step (256 px, batch 16, bf16): `bench_cuda` through the loop
   and the plain run of the loop's own math on GPU-resident batches (`--ratio-steps` each, the first 20 not
   timed);
2. the four MelanoGAN baselines (DCGAN, LAPGAN, DDGAN upsample / deconv) on ISIC 2017 at 256 px with the
   data-efficient recipe (DATA_EFFICIENT: DiffAugment colour, translation, cutout under ADA's adaptive
   probability, EMA of G), each for `--melanogan-minutes`;
3. DermGAN on HAM10000 at the largest size its images hold (128 px for the 200 x 150 copy: dermgan.data.sizes)
   for `--dermgan-minutes`.
"For N minutes" is a step count: a few steps measure the model's seconds per step on this card
(bench_step_costs.loop_unit), then it trains that many steps from scratch with its whole LR schedule. Every
model is scored on the held-out TEST split of its dataset: Inception KID and precision (05's options, 95 %
bootstrap intervals), and MelanoGANs' colour-histogram JSD and W1, with the reported (unverified) MelanoGAN
numbers beside them; real training images are scored against the test images as well (the floor). A
MelanoGAN draws as many samples as the test split has images (at most 1,000); DermGAN turns the test maps
into images.

Writes, under benchmarks/results/: gpu_paper_run_<card>_<commit>.{json,md} (metrics, steps, s/step, the
loop/plain ratio, card, commit, load) and gpu_paper_run_<card>_<commit>_<dataset>.png (samples of every model
beside real test images, at full size). --tiny runs the same path at the smoke profile's sizes for a few steps
(the CPU check of tests/test_gpu_paper_run.py; its numbers mean nothing).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import re
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import _report  # noqa: E402

# The data-efficient recipe (dermgan.critic): DiffAugment's policy (Zhao et al. 2020) under ADA's adaptive
# probability (Karras et al. 2020: target 0.6, p from 0; ada_images short enough for p to move within minutes)
# and an EMA of G, which is what the samples come from.
DATA_EFFICIENT = dict(augment="colour,translation,cutout", augment_p=0.0, ada_target=0.6, ada_images=20_000,
                      ema_decay=0.999)
MELANOGANS = ("dcgan", "lapgan", "ddgan-upsample", "ddgan-deconv")
CALIBRATION_STEPS = 6  # timed steps that price a model on this card before its run


@dataclasses.dataclass(frozen=True)
class Settings:
    profile: str = "paper"
    melanogan_minutes: float = 1.0
    dermgan_minutes: float = 2.0
    ratio_steps: int = 200
    fixed_steps: int | None = None  # --tiny: this many steps per model instead of minutes
    features: str = "inception"
    max_scored: int = 1000  # held-out images scored per set, at most


TINY = Settings(profile="smoke", ratio_steps=4, fixed_steps=2, features="pixel-stats", max_scored=16)


def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def steps_for(minutes: float, family: str, model: str, profile, data, device,
              settings: Settings) -> tuple[int, float]:
    """(steps that fill `minutes` on this device, measured s/step); --tiny: the fixed count."""
    from bench_step_costs import loop_unit

    if settings.fixed_steps is not None:
        return settings.fixed_steps, float("nan")
    seconds = loop_unit(family, model, profile, data, CALIBRATION_STEPS, str(device))["s_per_step"]
    return max(1, int(minutes * 60 / seconds)), seconds


def ratio(settings: Settings, device) -> dict:
    """s/step of the paper DermGAN step through the loop (bf16) and as the plain run of the same math."""
    if device.type != "cuda":  # the CPU path: bench_train_step's loop and plain runs at a small size
        from bench_train_step import fake_batches, loop_run, plain_run

        data = fake_batches(32)
        loop_s = float(np.median(loop_run(32, settings.ratio_steps, data, settings.profile)[0][:-1]))
        plain_s = float(np.median(plain_run(32, settings.ratio_steps, data, profile=settings.profile)[0]))
        return {"where": "cpu, 32 px (the --tiny check)", "loop s/step": loop_s, "plain s/step": plain_s,
                "loop/plain": loop_s / plain_s}
    from bench_cuda import plain_mode, train_mode

    from dermgan.config import get_profile
    from bench_train_step import fake_batches

    profile = get_profile("paper")
    data = fake_batches(profile.data.image_size, 4 * profile.dermgan.batch_size)
    warmup = min(20, settings.ratio_steps // 2)
    loop_s = train_mode("bf16", settings.ratio_steps, warmup, data)["s/step"]
    plain_s = plain_mode(settings.ratio_steps, warmup, data)["s/step"]
    return {"where": "paper DermGAN, 256 px, batch 16, bf16", "loop s/step": loop_s, "plain s/step": plain_s,
            "loop/plain": loop_s / plain_s}


def scorer(settings: Settings, device, cache: Path):
    """score(real test images, generated images) -> {kid, precision (+ intervals), colour JSD / W1}."""
    from dermgan import metrics as M

    def score(real: np.ndarray, generated: np.ndarray) -> dict:
        from dermgan.config import get_profile

        cfg = get_profile(settings.profile).metrics
        store = M.FeatureStore(M.get_extractor(settings.features), cache, cfg.batch_size, device,
                               precision=cfg.inception_precision)
        options = M.MetricOptions(store=store, n_bootstrap=cfg.n_bootstrap,
                                  kid_subset_size=cfg.kid_subset_size)
        found = _report.kid_and_precision(M.ImageSet(real), M.ImageSet(generated), options)
        jsd, w_levels, w_unit = M.colour_statistics(real, generated, options)
        found.update(colour_jsd=jsd.value, colour_jsd_lo=jsd.interval[0], colour_jsd_hi=jsd.interval[1],
                     colour_w1_01=w_unit.value, n_real=len(real), n_generated=len(generated),
                     features=store.name)
        return found

    return score


def run_melanogans(root: str, settings: Settings, device, work: Path, score) -> tuple[list[dict], list]:
    from dermgan.data import load_for_run
    from dermgan.models import melanogan as mg
    from dermgan.runtime import release_run_dir, start
    from dermgan.train import data_fingerprint

    ctx = start(settings.profile, str(work / "isic2017"), 0, str(device), "isic2017", root,
                melanogan=DATA_EFFICIENT)
    data = load_for_run(ctx)
    train, test = data.split("train"), data.split("test")
    real = np.asarray(test.images[: settings.max_scored])
    rows, grid = [{"dataset": "isic2017", "model": "real train (floor)", "image_size": data.image_size,
                   **score(real, np.asarray(train.images[: len(real)]))}], []
    for kind in MELANOGANS:
        steps, seconds = steps_for(settings.melanogan_minutes, "melanogan", kind, ctx.profile, train, device,
                                   settings)
        run = dataclasses.replace(ctx, profile=ctx.profile.replace(melanogan={"steps": steps}))
        _, result = mg.train_model(kind, run, train, resume=False)
        G, _ = mg.load_generator(ctx.run_dir / "checkpoints" / kind, device=device)
        images = mg.sample_images(G, len(real), 0, device=device)
        rows.append({"dataset": "isic2017", "model": kind, "image_size": data.image_size, "steps": steps,
                     "s/step": result.seconds_per_step, "calibrated s/step": seconds,
                     "reported JSD (unverified)": mg.REPORTED_COLOUR.get(kind, (np.nan, np.nan))[0],
                     **score(real, images)})
        grid.append((kind, images[:8]))
    release_run_dir(ctx.run_dir)
    return rows, grid + [("real test", real[:8])]


def run_dermgan(root: str, settings: Settings, device, work: Path, score) -> tuple[list[dict], list]:
    from dermgan.data import load_for_run
    from dermgan.data.semantic import MapDataset
    from dermgan.models import dermgan as dg
    from dermgan.runtime import release_run_dir, start
    from dermgan.train import data_fingerprint

    ctx = start(settings.profile, str(work / "ham10000"), 0, str(device), "ham10000", root)
    data = load_for_run(ctx)
    train, test = data.split("train"), data.split("test")
    rows_scored = np.arange(min(settings.max_scored, len(test)))
    real = np.asarray(test.images[rows_scored])
    steps, seconds = steps_for(settings.dermgan_minutes, "dermgan", "dermgan", ctx.profile, train, device,
                               settings)
    run = dataclasses.replace(ctx, profile=ctx.profile.replace(dermgan={"steps": steps}))
    _, result = dg.train_variant("dermgan", run, train, resume=False)
    G, meta = dg.evaluated_generator(ctx.run_dir / "checkpoints" / "dermgan", device=device,
                                     trained_on=data_fingerprint(train, ctx.data_root))
    images = dg.generate(G, MapDataset(test, meta["variant"]["encoding"]).maps(rows_scored), device=device)
    release_run_dir(ctx.run_dir)
    rows = [{"dataset": "ham10000", "model": "real train (floor)", "image_size": data.image_size,
             **score(real, np.asarray(train.images[: len(real)]))},
            {"dataset": "ham10000", "model": "dermgan", "image_size": data.image_size, "steps": steps,
             "s/step": result.seconds_per_step, "calibrated s/step": seconds, **score(real, images)}]
    return rows, [("dermgan", images[:8]), ("real test (its maps)", real[:8])]


def save_grid(rows: list, path: Path) -> None:
    """One row of images per model, real images last, at full size (uint8 PNG)."""
    from dermgan.train import _write_grid

    _write_grid([images for _, images in rows], path)


def session(isic2017: str, ham10000: str, settings: Settings, device: str = "auto") -> dict:
    from dermgan.runtime import git_commit, pick_device

    device = pick_device(device)
    card = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    name = f"gpu_paper_run_{slug(card)}_{(git_commit(HERE.parent) or 'unknown')[:7]}"
    began = time.perf_counter()
    load = os.getloadavg()[0]
    loop_plain = ratio(settings, device)
    with tempfile.TemporaryDirectory() as folder:
        work = Path(folder)
        score = scorer(settings, device, work / "features")
        melanogan_rows, melanogan_grid = run_melanogans(isic2017, settings, device, work, score)
        dermgan_rows, dermgan_grid = run_dermgan(ham10000, settings, device, work, score)
    save_grid(melanogan_grid, _report.RESULTS / f"{name}_isic2017.png")
    save_grid(dermgan_grid, _report.RESULTS / f"{name}_ham10000.png")
    rows = melanogan_rows + dermgan_rows
    columns = ["dataset", "model", "image_size", "steps", "s/step", "kid", "kid_lo", "kid_hi", "precision",
               "precision_lo", "precision_hi", "colour_jsd", "colour_jsd_lo", "colour_jsd_hi",
               "reported JSD (unverified)", "colour_w1_01", "n_real", "n_generated"]
    record = {"card": card, "commit": git_commit(HERE.parent), "settings": dataclasses.asdict(settings),
              "data_efficient": DATA_EFFICIENT, "loop_plain": loop_plain, "load_1min_at_start": load,
              "wall_s": time.perf_counter() - began}
    _report.write(name, f"GPU session on {card}: MelanoGAN baselines on ISIC 2017, DermGAN on HAM10000 "
                        f"({settings.profile} profile)", rows, columns,
                  notes=f"Held-out test images; {rows[0]['features']} features. Loop/plain "
                        f"({loop_plain['where']}): {loop_plain['loop/plain']:.3f} "
                        f"({loop_plain['loop s/step']:.4f} / {loop_plain['plain s/step']:.4f} s/step). "
                        "Data-efficient recipe of the MelanoGANs: "
                        f"{DATA_EFFICIENT}. Reported JSD: MelanoGANs via a third-party summary, unverified. "
                        f"Session wall time {record['wall_s']:.0f} s.", extra=record)
    return {"name": name, "rows": rows, **record}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--isic2017", required=True, help="ISIC 2017 folder (its release layout)")
    parser.add_argument("--ham10000", required=True, help="HAM10000 folder with its lesion masks")
    parser.add_argument("--melanogan-minutes", type=float, default=Settings.melanogan_minutes)
    parser.add_argument("--dermgan-minutes", type=float, default=Settings.dermgan_minutes)
    parser.add_argument("--ratio-steps", type=int, default=Settings.ratio_steps)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--tiny", action="store_true", help="the CPU check: smoke sizes, a few steps")
    args = parser.parse_args(argv)
    settings = TINY if args.tiny else Settings(
        melanogan_minutes=args.melanogan_minutes, dermgan_minutes=args.dermgan_minutes,
        ratio_steps=args.ratio_steps)
    if not args.tiny and not torch.cuda.is_available():
        raise SystemExit("gpu_paper_run: no CUDA device here (--tiny runs the CPU check)")
    found = session(args.isic2017, args.ham10000, settings, args.device)
    print(f"wrote {found['name']}.{{json,md}} and its grids in {_report.RESULTS} ({found['wall_s']:.0f} s)")


if __name__ == "__main__":
    main()
