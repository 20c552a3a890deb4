"""Issue 28's diagnosis: why does DermGAN get worse the longer it trains at the cpu profile (synthetic data)?

    .venv/bin/python benchmarks/diagnose_dermgan.py [--steps 6000] [--every 500] [--n 300] [--threads 2]

Two runs of the cpu profile's DermGAN as the profile had it before the data-efficient settings (no augmentation of
D's inputs, no EMA), seed 0, on the synthetic training split (2,800 pairs), for --steps steps:
    decay      the profile's schedule: constant learning rate, then linear decay to 0 over the second half
    constant   the same with a constant learning rate throughout (the schedule's share in what happens)
What is measured over training:
    D          the loop's probe every 250 steps: D's accuracy on 64 fixed real TRAINING images, on 64 real
               VALIDATION images, and on G's images of the training maps. A D that memorises its real images is
               right on the training ones and wrong on held-out ones: the gap is the memorising.
    G          every --every steps, the raw generator turns --n training maps (whose images are in 05's reference
               set) and --n validation maps into images: L1 to their targets, and Inception KID of each set against
               05's reference set. A G that memorised its training pairs scores far better on training maps.
    balance    G's weighted loss terms from the loss log: adversarial against lambda x (L1 + lesion L1) and
               lambda x feature matching.
Writes results/diagnose_dermgan.{json,md} and results/diagnose_dermgan.png (the figure issue 28 asks for).
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import torch

import _report
from _scoring import ROOT, ValidationScorer, cpu_data
from dermgan.config import get_profile
from dermgan.data.semantic import MapDataset
from dermgan.models import dermgan as dg
from dermgan.train import initial_weights, train

# The profile as it stood before this issue: no augmentation, no regulariser, no EMA.
BEFORE = dict(augment="", ada_target=0.0, r1_gamma=0.0, lecam_weight=0.0, ema_decay=0.0, augment_flip=False,
              augment_jitter=1.0)


def run(schedule: str, steps: int, every: int, data) -> tuple[pd.DataFrame, dict[int, dict]]:
    """Train one run; (its loss log, {step: raw G state dict})."""
    cfg = dataclasses.replace(get_profile("cpu").dermgan, steps=steps, checkpoint_every=0, sample_every=250,
                              log_every=50, decay_start=0.5 if schedule == "decay" else 1.0, **BEFORE)
    train_data, val_data = data.split("train"), data.split("val")
    with initial_weights(0):
        recipe = dg.build("dermgan", cfg, train_data.image_size, len(train_data.classes))
    snapshots = {}

    def keep(step):
        if step % every == 0:
            snapshots[step] = copy.deepcopy(recipe.generator.state_dict())

    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        train(recipe, dg.training_dataset(train_data, recipe, steps, 0), dg.train_config(cfg, 0, "cpu"), folder,
              folder / "log.csv", resume=False, on_step=keep, desc=schedule,
              holdout=MapDataset(val_data, recipe.variant.encoding))
        log = pd.read_csv(folder / "log.csv")
    log["lambda_l1_terms"] = cfg.lambda_l1 * log["g_l1"] + cfg.lambda_lesion * log["g_lesion_l1"]
    log["lambda_fm_term"] = cfg.lambda_fm * log["g_fm"]
    return log, snapshots


def score_snapshots(snapshots, data, scorer, n: int, recipe) -> list[dict]:
    train_data, val_data = data.split("train"), data.split("val")
    reference_rows = _report.reference_rows(np.random.default_rng(0), 600, len(train_data))  # 05's reference
    train_rows = reference_rows[:n]  # training maps whose real images ARE in the reference set
    val_rows = np.arange(min(n, len(val_data)))
    rows = []
    G = recipe.generator
    for step, state in sorted(snapshots.items()):
        G.load_state_dict(state)
        row = {"step": step}
        for split, part, which in (("train", train_data, train_rows), ("val", val_data, val_rows)):
            maps = MapDataset(part, "colour").maps(which)
            images = dg.generate(G, maps)
            errors = dg.reconstruction_errors(images, np.asarray(part.images[which]),
                                              np.asarray(part.lesion_masks[which]))
            scores = scorer(images, part.table["label"].to_numpy()[which])
            row.update({f"l1_{split}": errors["l1"], f"kid_{split}": scores["kid"],
                        f"kid_{split}_lo": scores["kid_lo"], f"kid_{split}_hi": scores["kid_hi"],
                        f"domain_kid_{split}": scores["domain_kid"], f"precision_{split}": scores["precision"]})
        rows.append(row)
        print(row, flush=True)
    return rows


def figure(logs: dict[str, pd.DataFrame], scored: dict[str, pd.DataFrame], floor: float, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 4, figsize=(17, 3.8))
    ax = axes[0]
    for i, (schedule, log) in enumerate(logs.items()):
        probe = log.dropna(subset=["d_acc_train"])
        style = "-" if schedule == "decay" else "--"
        for column, colour, what in (("d_acc_train", "C0", "real, training"), ("d_acc_val", "C1", "real, validation"),
                                     ("d_acc_fake", "C2", "generated")):
            ax.plot(probe["step"], probe[column], style + "o", ms=2, color=colour, label=f"{what} ({schedule})")
    ax.set(title="D accuracy (probe, 64 images each)", xlabel="step", ylim=(-0.02, 1.02))
    ax.legend(fontsize=6)
    for ax, metric, title in ((axes[1], "l1", "G: L1 to the target"), (axes[2], "kid", "G: Inception KID")):
        for schedule, table in scored.items():
            style = "-" if schedule == "decay" else "--"
            for split, colour in (("train", "C0"), ("val", "C1")):
                ax.plot(table["step"], table[f"{metric}_{split}"], style + "o", ms=3, color=colour,
                        label=f"{split} maps ({schedule})")
        if metric == "kid":
            ax.axhline(floor, color="0.5", lw=0.8, label="blurred real validation")
        ax.set(title=title, xlabel="step")
        ax.legend(fontsize=6)
    ax = axes[3]
    log = logs["decay"]
    for column, label in (("g_adv", "adversarial"), ("lambda_l1_terms", "10 x (L1 + lesion L1)"),
                          ("lambda_fm_term", "10 x feature matching"), ("loss_d", "D loss")):
        ax.plot(log["step"], log[column], label=label, lw=1)
    ax.set(title="loss terms (decay schedule)", xlabel="step")
    ax.legend(fontsize=6)
    fig.suptitle("DermGAN at the cpu profile without data-efficient training (synthetic data, seed 0)")
    fig.tight_layout()
    fig.savefig(path, dpi=130)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=6000)
    parser.add_argument("--every", type=int, default=500)
    parser.add_argument("--n", type=int, default=300, help="training and validation maps scored per snapshot")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    profile = get_profile("cpu")
    data = cpu_data(profile)
    scorer = ValidationScorer(data, profile, ROOT / "runs" / "cpu")
    logs, scored = {}, {}
    for schedule in ("decay", "constant"):
        logs[schedule], snapshots = run(schedule, args.steps, args.every, data)
        cfg = dataclasses.replace(profile.dermgan, **BEFORE)
        recipe = dg.build("dermgan", cfg, data.image_size, len(data.classes))
        scored[schedule] = pd.DataFrame(score_snapshots(snapshots, data, scorer, args.n, recipe))
    figure(logs, scored, scorer.floor["kid"], _report.RESULTS / "diagnose_dermgan.png")
    rows = [{"schedule": s, **r} for s, table in scored.items() for r in table.to_dict(orient="records")]
    probes = {s: log.dropna(subset=["d_acc_train"])[["step", "d_acc_train", "d_acc_val", "d_acc_fake"]]
              .to_dict(orient="records") for s, log in logs.items()}
    columns = ["schedule", "step", "l1_train", "l1_val", "kid_train", "kid_val", "domain_kid_train",
               "domain_kid_val", "precision_train", "precision_val"]
    notes = (f"Synthetic data, cpu profile DermGAN without augmentation or EMA, seed 0, {args.steps} steps, "
             f"{torch.get_num_threads()} threads; {args.n} training maps (their images are in 05's reference set) "
             f"and {args.n} validation maps per snapshot, scored against {scorer.settings}. Blurred real validation "
             f"images: KID {scorer.floor['kid']:.4g}. D's probe is in the JSON (`probes`) and the figure.")
    _report.write("diagnose_dermgan", "DermGAN over training: train vs validation (synthetic data)", rows, columns,
                  notes, {"probes": probes, "steps": args.steps})


if __name__ == "__main__":
    main()
