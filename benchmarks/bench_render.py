"""Renderer speed: images per second at 64, 128 and 256 px (measured side by side in one process, one worker),
and the wall time to render the cpu-profile dataset with its default worker processes.

    .venv/bin/python benchmarks/bench_render.py [--n 48] [--skip-dataset]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from dermgan.config import get_profile
from dermgan.data.conditions import N_CONDITIONS
from dermgan.data.dataset import make_synthetic
from dermgan.data.synth import render_images

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _report  # noqa: E402


def images_per_second(size: int, n: int) -> tuple[float, float]:
    """(wall, CPU) images per second for n images of every condition at `size`, in this process."""
    conditions = [i % N_CONDITIONS for i in range(n)]
    render_images(range(2), conditions[:2], size, seed=99, workers=1)  # warm caches (spline matrices, tables)
    wall, cpu = time.perf_counter(), time.process_time()
    render_images(range(n), conditions, size, seed=0, workers=1)
    return n / (time.perf_counter() - wall), n / (time.process_time() - cpu)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=48, help="images per size")
    parser.add_argument("--skip-dataset", action="store_true")
    args = parser.parse_args(argv)
    rows, base = [], None
    for size in (64, 128, 256):
        wall, cpu = images_per_second(size, args.n)
        base = base or wall
        rows.append({"size px": size, "images/s (wall)": wall, "images/s (CPU)": cpu, "vs 64 px": wall / base})
    notes = f"{args.n} images per size, every condition, one worker, in one process (synthetic renderer)."
    if not args.skip_dataset:
        cfg = get_profile("cpu").data
        start = time.perf_counter()
        make_synthetic(cfg.image_size, cfg.n_images, seed=0)
        notes += (f" The cpu-profile dataset ({cfg.n_images} images at {cfg.image_size} px, default workers) "
                  f"rendered in {time.perf_counter() - start:.1f} s wall.")
    print(_report.write("render", "Procedural renderer (images/s)", rows, list(rows[0]), notes))


if __name__ == "__main__":
    main()
