"""Sweeps of training settings for every GAN family, scored on the VALIDATION split (issue 28's protocol).

    .venv/bin/python benchmarks/sweep_gan.py --family dermgan --arms before,da-tc,... [--steps 3000] [--double]
                                             [--seeds 0,1,2] [--name sweep_dermgan] [--append] [--grids DIR]

Every arm trains the cpu profile's model of the family (DermGAN, or an unconditional MelanoGAN / Furger model) through
the one loop on the cpu profile's synthetic training split, with the arm's changes to the profile's section, from
each seed, for --steps steps (and with --double also for 2 x --steps: two complete schedules, the question being
whether training longer still helps). Its evaluated generator (the EMA when kept) then makes images — from the
600 validation maps (DermGAN) or 600 samples (unconditional) — scored by `_scoring.ValidationScorer` against 05's
reference set of real training images: Inception KID and precision with 95 % bootstrap intervals, KID in the
domain classifier's features, SWD, and the diversity ratio. KIDs are also given as multiples of the blurred real
validation images' KID ("kid / blurred"). No test image is used: defaults chosen from these tables do not leak.

Per run the table also gives: held-out L1 (DermGAN, validation maps), D's accuracy on training minus validation
real images at the end (the loop's probe: > 0 means D memorises), the final augmentation probability, s/step.
Results (synthetic data): results/<name>.{json,md}; with --grids a PNG per run (generated images, 4x zoom; for
DermGAN the validation maps above and the real images below). results/<name>_verdicts.{json,md} compares every
arm with `before`, paired over seeds, by a declared rule (`verdicts`); --report rewrites the tables from the rows.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

import _report
from _scoring import ROOT, ValidationScorer, cpu_data
from dermgan.config import get_profile
from dermgan.train import initial_weights, train

UNCONDITIONAL = ("dcgan", "lapgan", "ddgan-upsample", "ddgan-deconv", "furger-dcgan")
FAMILIES = ("dermgan", *UNCONDITIONAL)
# The cpu profile as it stood before issue 28 (no augmentation, no regulariser, no EMA): every arm is changes to it,
# so a later change of the profile's defaults does not silently relabel a measured row.
BEFORE = dict(augment="", augment_p=1.0, ada_target=0.0, r1_gamma=0.0, lecam_weight=0.0, ema_decay=0.0)
BEFORE_DERMGAN = dict(BEFORE, augment_flip=False, augment_jitter=1.0)
BEFORE_UNCONDITIONAL = dict(BEFORE, furger_lr=5e-5, furger_beta1=0.9)  # Furger et al.'s Adam, as it stood
TC = "translation,cutout"
# arm name: changes to BEFORE
ARMS: dict[str, dict] = {
    "before": {},
    # the arms that decided the defaults before issue 28, now on the validation split
    "batch-norm": {"norm": "batch"},
    "l1-100": {"lambda_l1": 100.0, "lambda_lesion": 100.0},
    # EMA of G
    "ema-0.99": {"ema_decay": 0.99},
    "ema-0.999": {"ema_decay": 0.999},
    # DiffAugment policies (fixed p = 1)
    "da-t": {"augment": "translation"},
    "da-tc": {"augment": TC},
    "da-tcc": {"augment": TC + ",colour"},
    "da-d": {"augment": "dihedral"},
    "da-tcd": {"augment": TC + ",dihedral"},
    # adaptive p (ADA's rule) on the DiffAugment transforms
    "ada-tc": {"augment": TC, "augment_p": 0.0, "ada_target": 0.6, "ada_images": 20_000},
    "ada-tcc": {"augment": TC + ",colour", "augment_p": 0.0, "ada_target": 0.6, "ada_images": 20_000},
    # regularisers
    "lecam": {"lecam_weight": 0.1},
    "r1-0.1": {"r1_gamma": 0.1},
    "r1-1": {"r1_gamma": 1.0},
    # Furger et al.'s optimiser (Adam 5e-5, beta1 0.9) is sized for thousands of epochs at batch 128; at the cpu
    # profile's 1,200 steps of batch 8 its G stays near its initialisation. DCGAN's Adam settings instead:
    "furger-lr": {"furger_lr": 2e-4, "furger_beta1": 0.5},
    # paired augmentation of the training pairs themselves (DermGAN only): flips and quarter turns, scale jitter
    "pairs-flip": {"augment_flip": True},
    "pairs-flip-jitter": {"augment_flip": True, "augment_jitter": 1.125},
}


def arm_changes(spec: str) -> dict:
    """'da-tc+ema-0.999' -> the union of the named arms' changes (later names win)."""
    changes = {}
    for name in spec.split("+"):
        if name not in ARMS:
            raise SystemExit(f"unknown arm {name!r}; known: {', '.join(ARMS)} (combine with +)")
        changes.update(ARMS[name])
    return changes


# ---------------------------------------------------------------------------------------------- one run

def section_for(family: str, changes: dict, steps: int):
    profile = get_profile("cpu")
    if family == "dermgan":
        base, before = profile.dermgan, BEFORE_DERMGAN
    else:
        base, before = profile.melanogan, BEFORE_UNCONDITIONAL
    known = {f.name for f in dataclasses.fields(base)}
    wanted = {k: v for k, v in {**before, **changes}.items() if k in known}
    return dataclasses.replace(base, steps=steps, checkpoint_every=0, sample_every=max(50, steps // 12),
                               log_every=max(10, steps // 120), **wanted)


def run(family: str, arm: str, steps: int, seed: int, data, scorer, n: int, grids: Path | None) -> dict:
    cfg = section_for(family, arm_changes(arm), steps)
    began = time.perf_counter()
    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        trainer = train_dermgan if family == "dermgan" else train_unconditional
        images, condition, extra, real = trainer(family, cfg, seed, data, folder, n)
        seconds = time.perf_counter() - began
        log = pd.read_csv(folder / "log.csv")
    probe = log.dropna(subset=["d_acc_train"]).iloc[-1] if "d_acc_train" in log else None
    row = {"family": family, "arm": arm, "seed": seed, "steps": steps, **extra,
           "d_gap": float(probe["d_acc_train"] - probe["d_acc_val"]) if probe is not None else np.nan,
           "aug_p": float(log["aug_p"].iloc[-1]) if "aug_p" in log else np.nan,
           "s_per_step": seconds / steps, **scorer.relative(scorer(images, condition))}
    if grids is not None:
        rows = [images[:8]] if real is None else [extra.pop("_maps"), images[:8], real[:8]]
        write_grid(grids / f"{family}_{arm}_s{seed}_{steps}.png", rows)
    row.pop("_maps", None)
    return row


def train_dermgan(family, cfg, seed, data, folder, n):
    from dermgan.data.semantic import MapDataset, render_maps
    from dermgan.models import dermgan as dg

    train_data, val_data = data.split("train"), data.split("val")
    with initial_weights(seed):
        recipe = dg.build("dermgan", cfg, train_data.image_size, len(train_data.classes))
    holdout = MapDataset(val_data, recipe.variant.encoding)
    train(recipe, dg.training_dataset(train_data, recipe, cfg.steps, seed), dg.train_config(cfg, seed, "cpu"),
          folder, folder / "log.csv", resume=False, desc=f"dermgan s{seed}", holdout=holdout)
    G, _ = dg.evaluated_generator(folder, trained_on=None)  # trained just above, in its own folder
    rows = np.arange(min(n, len(val_data)))
    maps = holdout.maps(rows)
    images = dg.generate(G, maps)
    real = np.asarray(val_data.images[rows])
    errors = dg.reconstruction_errors(images, real, np.asarray(val_data.lesion_masks[rows]))
    extra = {"l1_val": errors["l1"], "_maps": render_maps(maps[:8], recipe.variant.encoding, recipe.n_conditions)}
    return images, val_data.table["label"].to_numpy()[rows], extra, real


def train_unconditional(family, cfg, seed, data, folder, n):
    from dermgan.models import melanogan as mg

    train_data, val_data = data.split("train"), data.split("val")
    with initial_weights(seed):
        recipe = mg.build(family, cfg, train_data.image_size)
    train(recipe, mg.ImageDataset(mg.training_images(family, train_data)), mg.train_config(family, cfg, seed, "cpu"),
          folder, folder / "log.csv", resume=False, desc=f"{family} s{seed}",
          holdout=mg.ImageDataset(np.asarray(val_data.images)))
    G, _ = mg.load_generator(folder)
    return mg.sample_images(G, n, seed=seed), np.full(n, -1), {}, None


def write_grid(path: Path, rows: list[np.ndarray], zoom: int = 4) -> None:
    from PIL import Image

    grid = np.concatenate([np.concatenate(list(r), axis=1) for r in rows], axis=0)
    grid = np.repeat(np.repeat(grid, zoom, 0), zoom, 1)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp.png")
    Image.fromarray(grid).save(tmp, optimize=True)
    tmp.replace(path)


# ---------------------------------------------------------------------------------------------- tables

COLUMNS = ["family", "arm", "seed", "steps", "kid", "kid_lo", "kid_hi", "kid / blurred", "precision", "recall",
           "domain_kid", "domain_kid / blurred", "swd", "diversity", "l1_val", "d_gap", "aug_p", "s_per_step"]


def summary(rows: list[dict]) -> list[dict]:
    """Per family and arm: mean over seeds of KID / blurred and domain KID / blurred at 1x and 2x the steps."""
    frame = pd.DataFrame(rows)
    out = []
    for (family, arm), part in frame.groupby(["family", "arm"], sort=False):
        lengths = sorted(part["steps"].unique())
        entry = {"family": family, "arm": arm, "seeds": int(part["seed"].nunique())}
        for k, steps in enumerate(lengths[:2]):
            at = part[part["steps"] == steps]
            tag = "1x" if k == 0 else "2x"
            entry[f"steps {tag}"] = int(steps)
            entry[f"kid/blurred {tag}"] = float(at["kid / blurred"].mean())
            entry[f"domain kid/blurred {tag}"] = float(at["domain_kid / blurred"].mean())
            entry[f"precision {tag}"] = float(at["precision"].mean())
        if len(lengths) > 1:
            entry["2x <= 1x"] = bool(entry["kid/blurred 2x"] <= entry["kid/blurred 1x"])
        out.append(entry)
    return out


# The declared rule of a sweep: an arm differs from `before` (lower is better for every score here) when the
# 95 % t-interval of its paired-by-seed differences excludes zero and the mean difference exceeds the minimal
# effect the same design detects with power 0.8 (its SD from these differences). Fewer than 2 seeds decide nothing.
VERDICT_METRICS = ("kid / blurred", "domain_kid / blurred", "swd")


def verdicts(rows: list[dict], baseline: str = "before") -> list[dict]:
    """Per family, steps, arm and metric in VERDICT_METRICS: arm - baseline paired over the seeds both have, its
    t-interval, the design's MDE and the verdict ("better" / "worse" / "no detectable difference (MDE x)")."""
    from dermgan.augmentation_experiment import minimal_detectable_effect, paired_seed_difference

    frame = pd.DataFrame(rows)
    out = []
    for (family, steps), part in frame.groupby(["family", "steps"], sort=False):
        base = part[part["arm"] == baseline].set_index("seed")
        for arm, runs in part[part["arm"] != baseline].groupby("arm", sort=False):
            runs = runs.set_index("seed")
            seeds = sorted(set(runs.index) & set(base.index))
            if not seeds:  # no baseline run of these seeds in this table: nothing to compare
                continue
            for metric in VERDICT_METRICS:
                d = paired_seed_difference(base.loc[seeds, metric].tolist(), runs.loc[seeds, metric].tolist())
                mde = minimal_detectable_effect(d["sd"], d["n_seeds"])
                if d["n_seeds"] >= 2 and d["high"] < 0 and -d["mean"] > mde:
                    verdict = "better"
                elif d["n_seeds"] >= 2 and d["low"] > 0 and d["mean"] > mde:
                    verdict = "worse"
                else:
                    verdict = f"no detectable difference (MDE {mde:.3g})"
                out.append({"family": family, "steps": int(steps), "arm": arm, "vs": baseline, "metric": metric,
                            "seeds": d["n_seeds"], "difference": d["mean"], "low": d["low"], "high": d["high"],
                            "mde": mde, "verdict": verdict})
    return out


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--family", choices=FAMILIES, default="dermgan")
    parser.add_argument("--arms", default="before", help="comma-separated arms; combine arms with + (da-tc+ema-0.999)")
    parser.add_argument("--steps", type=int, default=None, help="default: the cpu profile's steps of the family")
    parser.add_argument("--double", action="store_true", help="also train every arm for 2 x --steps")
    parser.add_argument("--seeds", default="0")
    parser.add_argument("--n", type=int, default=600, help="validation maps / samples scored per run")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--name", default=None, help="results/<name>.{json,md}; default sweep_<family>")
    parser.add_argument("--append", action="store_true", help="keep the rows already in results/<name>.json")
    parser.add_argument("--report", action="store_true",
                        help="train nothing: rewrite the tables of results/<name>.json from its rows")
    parser.add_argument("--grids", type=Path, default=None)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    profile = get_profile("cpu")
    steps = args.steps or (profile.dermgan.steps if args.family == "dermgan" else profile.melanogan.steps)
    name = args.name or f"sweep_{args.family}"
    if args.report:
        recorded = json.loads((_report.RESULTS / f"{name}.json").read_text())
        write(name, recorded["rows"], recorded["floor"], recorded["notes"])
        return
    arms = args.arms.split(",")
    for arm in arms:
        arm_changes(arm)
    data = cpu_data(profile)
    scorer = ValidationScorer(data, profile, ROOT / "runs" / "cpu")
    path = _report.RESULTS / f"{name}.json"
    rows = json.loads(path.read_text())["rows"] if args.append and path.exists() else []
    lengths = [steps, 2 * steps] if args.double else [steps]
    for seed in map(int, args.seeds.split(",")):
        for arm in arms:
            for length in lengths:
                rows = [r for r in rows if (r["family"], r["arm"], r["seed"], r["steps"]) !=
                        (args.family, arm, seed, length)]
                rows.append(run(args.family, arm, length, seed, data, scorer, args.n, args.grids))
                print({k: (round(v, 4) if isinstance(v, float) else v) for k, v in rows[-1].items()}, flush=True)
                # after every run: a sweep stopped half-way keeps what it measured
                write(name, rows, scorer.floor, notes_for(scorer))


def notes_for(scorer) -> str:
    floor = scorer.floor
    return (f"Synthetic data, cpu profile (64 px, 2,800 training images), {torch.get_num_threads()} torch "
             f"thread(s) on a shared machine (s_per_step is not a benchmark); every arm is changes "
             f"to the profile as it stood before issue 28 ({', '.join(f'{k}={v}' for k, v in BEFORE.items())}). "
             f"Scored on the VALIDATION split against {scorer.settings}; blurred real validation images: Inception "
             f"KID {floor['kid']:.4g} [{floor['kid_lo']:.4g}, {floor['kid_hi']:.4g}], precision "
             f"{floor['precision']:.3g}, domain KID {floor['domain_kid']:.4g}. d_gap = D's accuracy on training minus "
             "validation real images at the last probe.")


def write(name: str, rows: list[dict], floor: dict, notes: str) -> None:
    means, found = summary(rows), verdicts(rows)
    _report.write(name, f"{name}: runs (synthetic data, validation split)", rows, COLUMNS, notes,
                  {"floor": floor, "summary": means, "verdicts": found})
    _report.write(f"{name}_summary", f"{name}: mean over seeds at 1x and 2x the steps (synthetic data, validation "
                  "split)", means, list(means[0]) if means else [], notes)
    if found:
        _report.write(f"{name}_verdicts", f"{name}: each arm against `before`, paired over seeds (synthetic data, "
                      "validation split)", found, list(found[0]),
                      "Lower is better for every metric. The declared rule (sweep_gan.verdicts): 'better' or "
                      "'worse' when the 95 % t-interval of the paired differences excludes zero and the mean "
                      "difference exceeds the MDE (two-sided paired t-test, alpha 0.05, power 0.8, SD of these "
                      "differences). " + notes)


if __name__ == "__main__":
    main()
