"""Issue 17 (b): sampling throughput of a DermGAN generator, against a naive fp32 batch-1 forward.

    .venv/bin/python benchmarks/bench_sampling.py [--checkpoint runs/cpu/checkpoints/dermgan] [--n 128]
    python benchmarks/bench_sampling.py --device cuda --profile paper   # the CUDA path (results: sampling_cuda)

Ways of turning N semantic maps into images, measured side by side in one process on the same maps:
naive (eval mode, no_grad, one map at a time, float32), batched, batched under inference_mode, + channels_last,
+ bf16 autocast. Each faster way is also compared pixel by pixel with the float32 batched images (uint8 max and
mean absolute difference), so that a reduced-precision or re-laid-out path is adopted only where the images
change less than a stated bound (here: mean |diff| < 0.5 grey levels and max |diff| <= 8). Target: >= 3x naive.

The generator is a trained one when a checkpoint folder (with generator.pt) is given or found in runs/cpu or
runs/smoke; otherwise an untrained one of the profile's size, which the table then says.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import time
from pathlib import Path

import numpy as np
import torch

from dermgan.config import get_profile
from dermgan.data.dataset import make_synthetic
from dermgan.data.semantic import MapDataset
from dermgan.imageops import to_uint8
from dermgan.models.dermgan import build, load_generator

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _report  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
MEAN_BOUND, MAX_BOUND = 0.5, 8


def find_generator(checkpoint: str | None, profile: str):
    candidates = [Path(checkpoint)] if checkpoint else [ROOT / "runs" / p / "checkpoints" / "dermgan"
                                                        for p in dict.fromkeys((profile, "cpu", "smoke"))]
    for folder in candidates:
        if (folder / "generator.pt").is_file():
            G, meta = load_generator(folder)
            where = folder.relative_to(ROOT) if folder.is_relative_to(ROOT) else folder
            return G, meta["image_size"], meta["variant"]["encoding"], f"trained ({where})"
    size = get_profile(profile).data.image_size
    torch.manual_seed(0)
    recipe = build("dermgan", get_profile(profile).dermgan, size)
    return recipe.generator.eval(), size, recipe.variant.encoding, "untrained"


def run(G, maps, batch: int, *, inference=False, channels_last=False, bf16=False) -> tuple[float, np.ndarray]:
    """Seconds to turn `maps` into uint8 images (copied back to the host, which waits for the device)."""
    G = G.to(memory_format=torch.channels_last if channels_last else torch.contiguous_format)
    grad_off = torch.inference_mode() if inference else torch.no_grad()
    outputs = []
    began = time.perf_counter()
    bf16_autocast = torch.autocast(maps.device.type, dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()
    with grad_off, bf16_autocast:
        for i in range(0, len(maps), batch):
            x = maps[i:i + batch]
            if channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            outputs.append(to_uint8(G(x).float()))
    return time.perf_counter() - began, np.concatenate(outputs)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", default=None, help="folder with generator.pt")
    parser.add_argument("--n", type=int, default=128, help="maps per timed pass")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cpu", help="cpu | cuda")
    parser.add_argument("--profile", default="cpu", help="the untrained generator's size when no checkpoint")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    G, size, encoding, which = find_generator(args.checkpoint, args.profile)
    G.eval().to(device)
    # Real semantic maps (rendered synthetic scenes): what sampling sees in the notebooks.
    data = make_synthetic(size, max(args.n, 40), seed=1)
    maps = MapDataset(data, encoding).maps(np.arange(args.n)).to(device)
    ways = {
        "naive fp32 batch 1": dict(batch=1),
        f"batched ({args.batch})": dict(batch=args.batch),
        "+ inference_mode": dict(batch=args.batch, inference=True),
        "+ channels_last": dict(batch=args.batch, inference=True, channels_last=True),
        "+ bf16 autocast": dict(batch=args.batch, inference=True, channels_last=True, bf16=True),
        "inference_mode + bf16 (contiguous)": dict(batch=args.batch, inference=True, bf16=True),
    }
    best = {name: float("inf") for name in ways}
    images = {}
    for name, how in ways.items():  # warm-up pass for each way
        run(G, maps[: how["batch"]], **how)
    for _ in range(args.repeats):  # interleaved repeats, best of each
        for name, how in ways.items():
            seconds, images[name] = run(G, maps, **how)
            best[name] = min(best[name], seconds)
    reference = images[f"batched ({args.batch})"].astype(np.int16)
    naive = best["naive fp32 batch 1"]
    rows = []
    for name in ways:
        diff = np.abs(images[name].astype(np.int16) - reference)
        within = diff.mean() < MEAN_BOUND and diff.max() <= MAX_BOUND
        rows.append({"way": name, "img/s": args.n / best[name], "x naive": naive / best[name],
                     "mean abs diff": float(diff.mean()), "max abs diff": int(diff.max()),
                     "within bound": "yes" if within else "NO"})
    on = "" if device.type == "cpu" else f", {device.type}"
    _report.write(
        "sampling" + ("" if device.type == "cpu" else f"_{device.type}"),
        f"(b) Sampling throughput at {size} px, {which} generator{on}", rows, list(rows[0]),
        notes=f"{args.n} maps, best of {args.repeats} interleaved passes. |diff| in uint8 grey levels against the "
              f"float32 batched images; bound: mean < {MEAN_BOUND}, max <= {MAX_BOUND}. Target: >= 3x naive.")


if __name__ == "__main__":
    main()
