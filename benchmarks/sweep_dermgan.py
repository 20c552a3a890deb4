"""Issue 10: a small sweep of DermGAN training settings at the cpu profile's sizes, scored by quick proxies.

    .venv/bin/python benchmarks/sweep_dermgan.py [--steps 400] [--arms base,l1-10,...] [--n-eval 200]
                                                  [--inception] [--grids /tmp/sweep]

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
    flat_frame, flat_banding   the same two on images generated from FLAT maps (the test maps' skin colour
                    everywhere, no lesion, no background): nothing in such a map asks for a line, so any peak is
                    the network's own artefact; nan = 0/0: the image is exactly flat (no step anywhere)
    d_loss, g_adv   mean discriminator loss and generator adversarial loss over the last quarter of training
    kid             with --inception: Inception KID (x 1e3) of the generated images against the real test images
                    (the same maps' images); the notes give Gaussian-blurred real images' KID as a reference

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

# name: (variant, DermGANConfig changes to the cpu profile as committed). "old-*" arms reproduce the models of the
# cpu run that issue 10 reported (zero-padded encoder; single-D without feature matching).
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


def anisotropy(images: np.ndarray) -> float:
    x = _float(images)
    return float((x[:, :, 1:, :] - x[:, :, :-1, :]).abs().mean() / (x[:, :, :, 1:] - x[:, :, :, :-1]).abs().mean())


def gaussian_blur(images: np.ndarray, sigma: float = 1.0) -> np.ndarray:
    from PIL import Image, ImageFilter

    return np.stack([np.asarray(Image.fromarray(im).filter(ImageFilter.GaussianBlur(sigma))) for im in images])


class Kid:
    """Inception KID against one real set (features computed once)."""

    def __init__(self, real: np.ndarray):
        from dermgan.metrics.distribution import kid_from_features
        from dermgan.metrics.features import extract_features, get_extractor

        self._kid, self._extract = kid_from_features, extract_features
        self.extractor = get_extractor("inception")
        self.real = extract_features(real, self.extractor, batch_size=50)

    def __call__(self, images: np.ndarray) -> float:
        features = self._extract(images, self.extractor, batch_size=50)
        mean, _ = self._kid(self.real, features, subset_size=min(100, len(images)), subsets=50)
        return 1e3 * mean


# ---------------------------------------------------------------------------------------------- one arm

def run_arm(name: str, steps: int, data, rows: np.ndarray, kid: Kid | None, grids: Path | None) -> dict:
    variant, changes = ARMS[name]
    cfg = dataclasses.replace(get_profile("cpu").dermgan, steps=steps, checkpoint_every=0, sample_every=0,
                              log_every=max(1, steps // 40), **changes)
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
        G, meta = dg.evaluated_generator(folder)
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
        "flat_frame": float(line_contrast(flat).max()),
        "flat_frame_at_px": int(line_contrast(flat).argmax() + 1),
        "flat_banding": anisotropy(flat),
        "d_loss": float(tail["loss_d"].mean()),
        "g_adv": float(tail["g_adv"].mean()),
        "weights": meta["evaluation"]["weights"],
    }
    if kid is not None:
        result["kid"] = kid(generated)
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
    from PIL import Image

    grid = np.concatenate([np.concatenate(list(r), axis=1) for r in rows], axis=0)
    grid = np.repeat(np.repeat(grid, zoom, 0), zoom, 1)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp.png")
    Image.fromarray(grid).save(tmp)
    tmp.replace(path)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--arms", default=",".join(ARMS), help="comma-separated names of ARMS")
    parser.add_argument("--n-eval", type=int, default=200, help="held-out test maps per arm")
    parser.add_argument("--inception", action="store_true", help="also Inception KID (slow on a CPU)")
    parser.add_argument("--grids", type=Path, default=None, help="folder for one PNG grid per arm")
    parser.add_argument("--name", default="sweep_dermgan", help="results/<name>.{json,md}")
    args = parser.parse_args(argv)
    unknown = [a for a in args.arms.split(",") if a not in ARMS]
    if unknown:
        raise SystemExit(f"unknown arm(s) {unknown}; known: {', '.join(ARMS)}")
    torch.set_num_threads(1)  # the machine is shared; one thread per process
    profile = get_profile("cpu")
    data = load_dataset("synthetic", image_size=profile.data.image_size, n_images=profile.data.n_images, seed=0,
                        cache_dir=ROOT / "runs" / "cpu" / "data")
    test = data.split("test")
    rows = np.arange(min(args.n_eval, len(test)))
    real = np.asarray(test.images[rows])
    kid = Kid(real) if args.inception else None
    results = []
    for name in args.arms.split(","):
        results.append(run_arm(name, args.steps, data, rows, kid, args.grids))
        print({k: (round(v, 4) if isinstance(v, float) else v) for k, v in results[-1].items()}, flush=True)
    notes = (f"Synthetic data (cpu profile: 64 px, 2,800 training images), {args.steps} steps of batch "
             f"{profile.dermgan.batch_size}, one torch thread, seed 0, {len(rows)} held-out maps. Real test images: "
             f"frame {line_contrast(real).max():.3g}, banding 1 by definition, hf_ratio 1 by definition.")
    if kid is not None:
        notes += f" KID x 1e3 of Gaussian-blurred (sigma 1) real images: {kid(gaussian_blur(real)):.3g}."
    columns = ["arm", "variant", "changes", "l1", "l1_lesion", "hf_ratio", "frame", "frame_at_px", "banding",
               "flat_frame", "flat_frame_at_px", "flat_banding", "d_loss", "g_adv", "s_per_step"] + (["kid"] if kid is not None else [])
    print(_report.write(args.name, f"DermGAN sweep, {args.steps} steps (synthetic data)", results, columns,
                        notes, {"steps": args.steps, "n_eval": len(rows)}))


if __name__ == "__main__":
    main()
