"""Issue 10: a small sweep of DermGAN training settings at the cpu profile's sizes, scored by quick proxies.

    .venv/bin/python benchmarks/sweep_dermgan.py [--steps 400] [--arms base,l1-10,...] [--n-eval 200]
                                                  [--inception] [--grids /tmp/sweep] [--threads 1]
                                                  [--name sweep_dermgan] [--append] [--compare ARM,ARM]

The committed tables came from (2 cores, nothing else running):
    sweep_dermgan          --steps 400 --arms base,old-single-d,...,augment                (hf proxies only)
    sweep_dermgan_kid      --steps 400 --arms base,l1-3,...,l1-1-fm-2.5x --n-eval 600 --inception --threads 2
    sweep_dermgan_kid_3000 --steps 3000 --arms base,adversarial-only,lsgan,... --n-eval 600 --inception
                           --threads 2 (--append for the later arms; --compare base,instance-norm for the grid)
    sweep_dermgan_kid_6000 --steps 6000 --arms instance-norm --n-eval 600 --inception --threads 2

Every arm trains the cpu profile's "dermgan" (or the arm's variant) through the one loop (dermgan.train) on the
cpu profile's synthetic training split (64 px, 2,800 images), from the same seed, for --steps steps with the
profile's schedule shape (constant LR, then linear decay over the second half), with one torch thread. The
evaluated generator (`evaluated_generator`, what the notebooks use) then turns --n-eval held-out test maps
into images, scored against the real test images of those maps:

    l1, l1_lesion   held-out reconstruction error in [0, 1] (whole image, lesion only): lower is closer
    hf_ratio        high-frequency energy (image minus its 3x3 box blur, squared) of generated over real:
                    1 = as much fine texture as the real images, < 1 blurrier, > 1 noisier or artefacts
    frame           strongest line contrast within 16 px of the border: mean |step| between neighbouring rows
                    (columns) at that offset over the mean |step| anywhere, generated; the real images' value is
                    in the notes. A frame artefact is a peak far above the real value
    banding         (mean |row-to-row step| / mean |column-to-column step|) generated over real: > 1 = horizontal
                    bands
    lattice         2x2 checker component (`lattice`) generated over real: > 1 = a 2 px grid on top of the
                    real images' own pixel noise
    flat_frame, flat_banding   the same two on images generated from FLAT maps (the test maps' skin colour
                    everywhere, no lesion, no background): nothing in such a map asks for a line, so any peak is
                    the network's own artefact; nan = 0/0: the image is exactly flat (no step anywhere)
    d_loss, g_adv   mean discriminator loss and generator adversarial loss over the last quarter of training
    kid, precision  with --inception: Inception KID and precision (95% bootstrap intervals, _lo/_hi) of the
                    generated images against notebook 05's reference set of real training images; kid / blurred
                    divides by the KID of the Gaussian-blurred real test images of the same maps (05's "blurred
                    real" reference, in the notes): issue 10's target is <= 2 with precision >= 0.2

Results (synthetic data) go to benchmarks/results/sweep_dermgan.{json,md}; with --grids, a PNG per arm
(held-out maps | generated | real, 4x nearest-neighbour zoom) for looking at artefacts.
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
import torch
import torch.nn.functional as F

from dermgan.config import get_profile
from dermgan.data import load_dataset
from dermgan.data.semantic import MapDataset, render_maps
from dermgan.imageops import to_model
from dermgan.models import dermgan as dg
from dermgan.train import train

sys.path.insert(0, __file__.rsplit("/", 1)[0])
import _report  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]

# The sweep's baseline: the cpu profile's DermGAN as the sweep found it. The profile has since adopted instance norm
# (the "instance-norm" arm); pinning batch norm here keeps every arm, and every table measured, what its name says.
SWEEP_BASE = {"norm": "batch"}
# name: (variant, DermGANConfig changes to SWEEP_BASE). "old-*" arms reproduce the models of the cpu run that
# issue 10 reported (zero-padded encoder; single-D without feature matching).
ARMS: dict[str, tuple[str, dict]] = {
    "base": ("dermgan", {}),
    "old-padding": ("dermgan", {"encoder_padding": "zeros"}),
    "old-zero-padding": ("dermgan", {"encoder_padding": "zeros", "resize_padding": "zeros"}),
    "single-d": ("dermgan-single-d", {}),
    "old-single-d": ("dermgan-single-d", {"lambda_fm": 0.0, "encoder_padding": "zeros"}),
    "old-single-d-flip": ("dermgan-single-d", {"lambda_fm": 0.0, "encoder_padding": "zeros", "augment_flip": True}),
    "no-fm": ("dermgan-no-fm", {}),
    "transpose": ("dermgan-transpose", {}),
    "l1-30": ("dermgan", {"lambda_l1": 30.0, "lambda_lesion": 30.0}),
    "l1-10": ("dermgan", {"lambda_l1": 10.0, "lambda_lesion": 10.0}),
    "lesion-30": ("dermgan", {"lambda_lesion": 30.0}),
    "fm-0.25x": ("dermgan", {"lambda_fm": 2.5}),
    "fm-2.5x": ("dermgan", {"lambda_fm": 25.0}),
    "d-instance": ("dermgan", {"d_norm": "instance"}),
    "lr-d-half": ("dermgan", {"lr_d": 1e-4}),
    "augment": ("dermgan", {"augment_flip": True, "augment_jitter": 1.125}),
    "flip": ("dermgan", {"augment_flip": True}),
    "ema": ("dermgan", {"ema_decay": 0.999}),
    # the Inception sweep (--inception): does less reconstruction weight let the adversarial and feature-matching
    # terms put texture back? Then, at L1 = 1, the other levers on the balance between G and D
    "l1-3": ("dermgan", {"lambda_l1": 3.0, "lambda_lesion": 3.0}),
    "l1-1": ("dermgan", {"lambda_l1": 1.0, "lambda_lesion": 1.0}),
    "l1-0": ("dermgan", {"lambda_l1": 0.0, "lambda_lesion": 0.0}),
    "adversarial-only": ("dermgan", {"lambda_l1": 0.0, "lambda_lesion": 0.0, "lambda_fm": 0.0}),
    "l1-1-lsgan": ("dermgan", {"lambda_l1": 1.0, "lambda_lesion": 1.0, "gan_loss": "lsgan"}),
    "l1-1-hinge": ("dermgan", {"lambda_l1": 1.0, "lambda_lesion": 1.0, "gan_loss": "hinge"}),
    "l1-1-no-dropout": ("dermgan", {"lambda_l1": 1.0, "lambda_lesion": 1.0, "dropout": 0.0}),
    "l1-1-lr-d-half": ("dermgan", {"lambda_l1": 1.0, "lambda_lesion": 1.0, "lr_d": 1e-4}),
    "l1-1-fm-2.5x": ("dermgan", {"lambda_l1": 1.0, "lambda_lesion": 1.0, "lambda_fm": 25.0}),
    # ... and levers that leave the losses' weights alone: the GAN loss, normalisation, capacity
    "lsgan": ("dermgan", {"gan_loss": "lsgan"}),
    "instance-norm": ("dermgan", {"norm": "instance"}),
    "filters-32": ("dermgan", {"base_filters": 32}),
    "bilinear": ("dermgan", {"upsample": "bilinear"}),
    # instance norm scored best of the 3,000-step arms (sweep_dermgan_kid_3000.md): combined with the others
    "instance-lsgan": ("dermgan", {"norm": "instance", "gan_loss": "lsgan"}),
    "instance-bilinear": ("dermgan", {"norm": "instance", "upsample": "bilinear"}),
    "instance-lsgan-bilinear": ("dermgan", {"norm": "instance", "gan_loss": "lsgan", "upsample": "bilinear"}),
}


# ---------------------------------------------------------------------------------------------- proxies

def _float(images: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.asarray(images, np.float32) / 255.0).permute(0, 3, 1, 2)


def high_frequency_energy(images: np.ndarray) -> float:
    x = _float(images)
    blurred = F.avg_pool2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), 3, stride=1)
    return float(((x - blurred) ** 2).mean())


def line_contrast(images: np.ndarray, depth: int = 16) -> np.ndarray:
    """c[k] for k = 1..depth: mean |line k - line k-1| over the four sides, over the mean |step| anywhere."""
    x = _float(images)
    rows = (x[:, :, 1:, :] - x[:, :, :-1, :]).abs()  # rows[:, :, k-1] = |row k - row k-1|
    cols = (x[:, :, :, 1:] - x[:, :, :, :-1]).abs()
    overall = 0.5 * (rows.mean() + cols.mean())
    size = x.shape[-1]
    c = []
    for k in range(1, depth + 1):
        sides = [rows[:, :, k - 1, :], rows[:, :, size - 1 - k, :], cols[:, :, :, k - 1], cols[:, :, :, size - 1 - k]]
        c.append(float(torch.stack([s.mean() for s in sides]).mean() / overall))
    return np.array(c)


def lattice(images: np.ndarray) -> float:
    """Mean |2x2 checker component| (a - b - c + d over each 2x2 block at even offsets): what a 3x3 conv after
    nearest-neighbour up-sampling leaves at the 2 px period."""
    x = _float(images)
    checker = x[:, :, 0::2, 0::2] - x[:, :, 0::2, 1::2] - x[:, :, 1::2, 0::2] + x[:, :, 1::2, 1::2]
    return float(checker.abs().mean())


def anisotropy(images: np.ndarray) -> float:
    x = _float(images)
    return float((x[:, :, 1:, :] - x[:, :, :-1, :]).abs().mean() / (x[:, :, :, 1:] - x[:, :, :, :-1]).abs().mean())


class Fidelity:
    """Inception KID and precision with 95% bootstrap intervals, scored as notebook 05 scores them: against 05's
    reference set (the same 600 real training images, drawn with the same seed), with the cpu profile's metric
    settings (Inception arithmetic, bootstrap replicates, KID subset size)."""

    def __init__(self, data, profile):
        from dermgan import metrics as M

        self._M, cfg = M, profile.metrics
        train = data.split("train")
        rows = _report.reference_rows(np.random.default_rng(0), cfg.n_samples, len(train))
        self.real = M.ImageSet(np.asarray(train.images[rows]), train.table["label"].to_numpy()[rows])
        store = M.FeatureStore(M.get_extractor("inception"), None, cfg.batch_size, "cpu",
                               precision=cfg.inception_precision)
        self.options = M.MetricOptions(store=store, n_bootstrap=cfg.n_bootstrap, seed=0,
                                       kid_subset_size=cfg.kid_subset_size)
        self.settings = (f"{len(rows)} real training images (05's reference rows), {cfg.n_bootstrap} bootstrap "
                         f"replicates, KID subsets of {cfg.kid_subset_size}, Inception in {cfg.inception_precision}")

    def __call__(self, images: np.ndarray, condition: np.ndarray) -> dict:
        return _report.kid_and_precision(self.real, self._M.ImageSet(images, condition), self.options)


# ---------------------------------------------------------------------------------------------- one arm

def run_arm(name: str, steps: int, data, rows: np.ndarray, fidelity: Fidelity | None, grids: Path | None) -> dict:
    variant, changes = ARMS[name]
    cfg = dataclasses.replace(get_profile("cpu").dermgan, steps=steps, checkpoint_every=0, sample_every=0,
                              log_every=max(1, steps // 40), **{**SWEEP_BASE, **changes})
    train_data, test_data = data.split("train"), data.split("test")
    torch.manual_seed(0)
    recipe = dg.build(variant, cfg, train_data.image_size, len(train_data.classes))
    dataset = dg.training_dataset(train_data, recipe, steps, seed=0)
    began = time.perf_counter()
    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        train(recipe, dataset, dg.train_config(cfg, seed=0, device="cpu"), folder, folder / "log.csv",
              resume=False, desc=name)
        seconds = time.perf_counter() - began
        log = pd.read_csv(folder / "log.csv")
        G, meta = dg.evaluated_generator(folder, trained_on=None)  # trained just above, in its own folder
    maps = MapDataset(test_data, recipe.variant.encoding).maps(rows)
    generated = dg.generate(G, maps)
    real = np.asarray(test_data.images[rows])
    errors = dg.reconstruction_errors(generated, real, np.asarray(test_data.lesion_masks[rows]))
    flat = dg.generate(G, flat_maps(test_data, rows, recipe.variant.encoding))
    tail = log[log["step"] > 0.75 * steps]
    result = {
        "arm": name,
        "variant": variant,
        "changes": ", ".join(f"{k}={v}" for k, v in changes.items()) or "-",
        "steps": steps,
        "s_per_step": seconds / steps,
        **errors,
        "hf_ratio": high_frequency_energy(generated) / high_frequency_energy(real),
        "frame": float(line_contrast(generated).max()),
        "frame_at_px": int(line_contrast(generated).argmax() + 1),
        "banding": anisotropy(generated) / anisotropy(real),
        "lattice": lattice(generated) / lattice(real),
        "flat_frame": float(line_contrast(flat).max()),
        "flat_frame_at_px": int(line_contrast(flat).argmax() + 1),
        "flat_banding": anisotropy(flat),
        "d_loss": float(tail["loss_d"].mean()),
        "g_adv": float(tail["g_adv"].mean()),
        "weights": meta["evaluation"]["weights"],
    }
    if fidelity is not None:
        result.update(fidelity(generated, np.asarray(test_data.table["label"])[rows]))
    if grids is not None:
        write_grid(grids / f"{name}.png", [render_maps(maps[:8], recipe.variant.encoding, recipe.n_conditions),
                                           generated[:8], real[:8], flat[:8]])
    return result


def flat_maps(test_data, rows: np.ndarray, encoding: str) -> torch.Tensor:
    """Maps of the same items with every pixel healthy skin of the item's own colour."""
    from dermgan.data.semantic import HEALTHY, encode_labels, skin_colours_of

    labels = np.full((len(rows), test_data.image_size, test_data.image_size), HEALTHY, np.int64)
    return torch.from_numpy(encode_labels(labels, skin_colours_of(test_data)[rows], encoding, len(test_data.classes)))


def write_grid(path: Path, rows: list[np.ndarray], zoom: int = 4) -> None:
    grid = np.concatenate([np.concatenate(list(r), axis=1) for r in rows], axis=0)
    save_png(path, np.repeat(np.repeat(grid, zoom, 0), zoom, 1))


def save_png(path: Path, image: np.ndarray) -> None:
    """Write a PNG atomically (temp file in the same folder, then rename)."""
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp.png")
    Image.fromarray(image).save(tmp, optimize=True)
    tmp.replace(path)


def earlier_rows(args, n_eval: int) -> list[dict]:
    """The rows of an earlier sweep with the same steps and held-out maps, less the arms about to be re-run."""
    import json

    record = json.loads((_report.RESULTS / f"{args.name}.json").read_text())
    if (record.get("steps"), record.get("n_eval")) != (args.steps, n_eval) or \
            any("kid" in row for row in record["rows"]) != args.inception:
        raise SystemExit(f"--append: results/{args.name}.json was measured with other settings "
                         f"(steps {record.get('steps')}, n_eval {record.get('n_eval')})")
    again = set(args.arms.split(","))
    return [row for row in record["rows"] if row["arm"] not in again]


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--arms", default=",".join(ARMS), help="comma-separated names of ARMS")
    parser.add_argument("--n-eval", type=int, default=200, help="held-out test maps per arm")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads (1: the sweep shares the machine; 0: torch's default)")
    parser.add_argument("--inception", action="store_true", help="also Inception KID (slow on a CPU)")
    parser.add_argument("--grids", type=Path, default=None, help="folder for one PNG grid per arm")
    parser.add_argument("--compare", default=None, metavar="ARM,ARM",
                        help="with --grids: results/<name>_grid.png, the held-out maps, the two arms' images and "
                             "the real images in rows (the arms' grids may come from an earlier --append run)")
    parser.add_argument("--name", default="sweep_dermgan", help="results/<name>.{json,md}")
    parser.add_argument("--append", action="store_true",
                        help="keep the arms already in results/<name>.json (same steps and evaluation) and add these")
    args = parser.parse_args(argv)
    if not args.arms:  # only the comparison figure, from grids already written
        if not (args.compare and args.grids):
            raise SystemExit("--arms '' needs --compare and --grids")
        return compare_grids(args.grids, args.compare.split(","), _report.RESULTS / f"{args.name}_grid.png")
    unknown = [a for a in args.arms.split(",") if a not in ARMS]
    if unknown:
        raise SystemExit(f"unknown arm(s) {unknown}; known: {', '.join(ARMS)}")
    if args.threads:
        torch.set_num_threads(args.threads)
    profile = get_profile("cpu")
    data = load_dataset("synthetic", image_size=profile.data.image_size, n_images=profile.data.n_images, seed=0,
                        cache_dir=ROOT / "runs" / "cpu" / "data")
    test = data.split("test")
    rows = np.arange(min(args.n_eval, len(test)))
    real = np.asarray(test.images[rows])
    fidelity = Fidelity(data, profile) if args.inception else None
    notes = (f"Synthetic data (cpu profile: 64 px, 2,800 training images), {args.steps} steps of batch "
             f"{profile.dermgan.batch_size}, {torch.get_num_threads()} torch thread(s), seed 0, {len(rows)} held-out "
             f"maps. Real test images: frame {line_contrast(real).max():.3g}, banding 1 by definition, hf_ratio 1 "
             "by definition.")
    columns = ["arm", "variant", "changes", "l1", "l1_lesion", "hf_ratio", "frame", "frame_at_px", "banding",
               "lattice", "flat_frame", "flat_frame_at_px", "flat_banding", "d_loss", "g_adv", "s_per_step"]
    if fidelity is not None:
        blurred = fidelity(_report.blurred(real), np.asarray(test.table["label"])[rows])
        notes += (f" Inception KID and precision against {fidelity.settings}; the Gaussian-blurred (sigma 1 px) "
                  f"real test images score KID {blurred['kid']:.4g} [{blurred['kid_lo']:.4g}, {blurred['kid_hi']:.4g}]"
                  f", precision {blurred['precision']:.3g} [{blurred['precision_lo']:.3g}, "
                  f"{blurred['precision_hi']:.3g}]. Issue 10's target: kid / blurred <= 2 and precision >= 0.2.")
        columns += ["kid", "kid_lo", "kid_hi", "kid / blurred", "precision", "precision_lo", "precision_hi"]
    results = earlier_rows(args, len(rows)) if args.append else []
    for name in args.arms.split(","):
        row = run_arm(name, args.steps, data, rows, fidelity, args.grids)
        if fidelity is not None:
            row["kid / blurred"] = row["kid"] / blurred["kid"]
        results.append(row)
        print({k: (round(v, 4) if isinstance(v, float) else v) for k, v in row.items()}, flush=True)
        # written after every arm: a long sweep stopped half-way keeps what it measured
        table = _report.write(args.name, f"DermGAN sweep, {args.steps} steps (synthetic data)", results, columns,
                              notes, {"steps": args.steps, "n_eval": len(rows)})
    print(table)
    if args.compare and args.grids:
        compare_grids(args.grids, args.compare.split(","), _report.RESULTS / f"{args.name}_grid.png")


def compare_grids(folder: Path, arms: list[str], path: Path) -> None:
    """One PNG from the per-arm grids (rows: maps, generated, real, flat; 4x zoom): maps, each arm, real."""
    from PIL import Image

    grids = [np.asarray(Image.open(folder / f"{arm}.png")) for arm in arms]
    row = grids[0].shape[0] // 4
    rows = [grids[0][:row]] + [g[row:2 * row] for g in grids] + [grids[0][2 * row:3 * row]]
    save_png(path, np.concatenate(rows, axis=0))


if __name__ == "__main__":
    main()
