"""Issue 17 (c): how fast the data side delivers images, against what training consumes.

    .venv/bin/python benchmarks/bench_data.py [--size 64] [--n 256]

Measured side by side in one process: the procedural renderer (images/s, one worker), the DermGAN data loader
over the cached dataset (MapDataset + DataLoader as the training loop builds it, batch 8) and, for scale, the
rate at which a training step consumes images (batch / seconds per step of the loop at this size, measured
here on a few steps). Target: data loader >= 10x training consumption, so the data side never stalls training.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from dermgan.config import get_profile
from dermgan.data.dataset import make_synthetic
from dermgan.data.semantic import MapDataset
from dermgan.data.synth import render_images
from dermgan.models.dermgan import build, train_config
from dermgan.train import StepBatches, train

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _report  # noqa: E402

BATCH = 8


def renderer_rate(size: int, n: int) -> float:
    render_images(range(2), [0, 1], size, seed=99, workers=1)  # warm-up
    began = time.perf_counter()
    render_images(range(n), [i % 8 for i in range(n)], size, seed=0, workers=1)
    return n / (time.perf_counter() - began)


def loader_rate(dataset: MapDataset, n_batches: int) -> float:
    sampler = StepBatches(len(dataset), BATCH, seed=0, start=0, steps=n_batches)
    loader = torch.utils.data.DataLoader(dataset, batch_sampler=sampler, num_workers=0)
    next(iter(torch.utils.data.DataLoader(dataset, batch_size=BATCH)))  # warm-up
    began = time.perf_counter()
    for _ in loader:
        pass
    return n_batches * BATCH / (time.perf_counter() - began)


def training_rate(dataset: MapDataset, size: int, steps: int = 8) -> float:
    cfg = get_profile("cpu").dermgan
    config = train_config(cfg, seed=0, device="cpu")
    config = type(config)(**{**config.__dict__, "steps": steps, "checkpoint_every": 0, "sample_every": 0,
                             "log_every": steps, "batch_size": BATCH})
    stamps = []
    with tempfile.TemporaryDirectory() as folder:
        train(build("dermgan", cfg, size), dataset, config, folder, resume=False,
              on_step=lambda _: stamps.append(time.perf_counter()))
    return BATCH / float(np.median(np.diff(stamps)))


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=get_profile("cpu").data.image_size)
    parser.add_argument("--n", type=int, default=256, help="images rendered and loaded")
    args = parser.parse_args(argv)
    dataset = MapDataset(make_synthetic(args.size, args.n, seed=0), "colour")
    consumed = training_rate(dataset, args.size)
    rows = [
        {"stage": "renderer (1 worker)", "img/s": renderer_rate(args.size, min(args.n, 64))},
        {"stage": "data loader (MapDataset, batch 8, 0 workers)", "img/s": loader_rate(dataset, args.n // BATCH)},
        {"stage": "training consumes (dermgan, cpu widths)", "img/s": consumed},
    ]
    for row in rows:
        row["x training"] = row["img/s"] / consumed
    _report.write(
        "data", f"(c) Data pipeline against training consumption at {args.size} px", rows, list(rows[0]),
        notes="Target: data loader >= 10x what training consumes. The renderer runs once per dataset "
              "(then the memory-mapped cache serves every epoch), so it only needs to be fast enough to build "
              "the cache in reasonable time.")


if __name__ == "__main__":
    main()
