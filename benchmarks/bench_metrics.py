"""Feature-extraction throughput (images/s) of the metric extractors at several batch sizes, side by side.

    python benchmarks/bench_metrics.py [--sizes 8 32 64] [--n 64] [--image-size 64] [--device auto]

"inception" is the 299 px FID network (the resize is included), "domain" a SkinClassifier (untrained: speed does
not depend on the weights) and "pixel-stats" the cheap weight-free extractor. Each cell is the best of
`--repeats` timed passes after one warm-up pass, so the numbers compare within one run on one machine.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from dermgan.metrics import extract_features, get_extractor
from dermgan.runtime import environment_report, pick_device


def domain_network(width: int) -> torch.nn.Module:
    from dermgan.models.classifier import SkinClassifier

    return SkinClassifier(n_classes=8, width=width)


def throughput(images: np.ndarray, extractor, batch_size: int, device, repeats: int) -> float:
    extract_features(images[:batch_size], extractor, batch_size, device)  # warm-up (allocations, kernels)
    best = float("inf")
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        extract_features(images, extractor, batch_size, device)
        if device.type == "cuda":
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - start)
    return len(images) / best


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[8, 32, 64])
    parser.add_argument("--n", type=int, default=64, help="images per timed pass")
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--width", type=int, default=32, help="SkinClassifier width for 'domain'")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--extractors", nargs="+", default=["inception", "domain", "pixel-stats"])
    args = parser.parse_args(argv)

    device = pick_device(args.device)
    env = environment_report(args.device)
    print(f"device {env['device']}, torch threads {env['torch_threads']}, torch {env['packages']['torch']}, "
          f"{args.n} images of {args.image_size} px per pass, best of {args.repeats}")
    images = np.random.default_rng(0).integers(0, 256, (args.n, args.image_size, args.image_size, 3), np.uint8)
    extractors = {name: get_extractor(name, network=domain_network(args.width) if name == "domain" else None)
                  for name in args.extractors}
    rows = {name: [throughput(images, ex, b, device, args.repeats) for b in args.sizes]
            for name, ex in extractors.items()}
    header = f"{'extractor':<12}" + "".join(f"{'batch ' + str(b):>12}" for b in args.sizes)
    print(header)
    print("-" * len(header))
    for name, speeds in rows.items():
        print(f"{name:<12}" + "".join(f"{s:>10.1f}/s" for s in speeds))
    base = rows.get("inception")
    if base:
        for name, speeds in rows.items():
            if name != "inception":
                ratios = ", ".join(f"{s / i:.0f}x" for s, i in zip(speeds, base))
                print(f"{name} vs inception (same batch sizes): {ratios}")


if __name__ == "__main__":
    main()
