"""Metric feature extraction, side by side: throughput per extractor, ours against torch-fidelity's own pipeline,
and bf16 against fp32 features (speed, and how far FID / KID move compared with their bootstrap intervals).

    python benchmarks/bench_metrics.py [--sizes 8 32] [--n 32] [--image-size 64] [--precision-n 100] [--device auto]

Writes results/metrics.{json,md} (throughput), results/metrics_fidelity.{json,md} (ours vs torch-fidelity) and
results/metrics_precision.{json,md} (bf16 vs fp32). Images are rendered by the procedural renderer (synthetic).
- throughput: "inception" is the 299 px FID network (the resize included), "domain" a SkinClassifier (untrained:
  speed does not depend on the weights), "random-cnn" the fixed-seed random CNN, "pixel-stats" the cheap
  extractor; best of `--repeats` timed passes after a warm-up pass.
- torch-fidelity: the same Inception weights saved as a state dict and loaded by torch-fidelity's own extractor,
  fed by its own `get_featuresdict_from_dataset` (DataLoader, no worker processes: save_cpu_ram), same images,
  same batch size. Ratio > 1 means our extraction is faster; the features must agree.
- bf16: features of two fixed sets (real renders, and other renders blurred by 1 px) in fp32 and under bf16
  autocast. A reduced-precision default is worth adopting only where the metric moves less than half its
  bootstrap interval (95 %, fp32); the table says where that holds.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from scipy.ndimage import gaussian_filter

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _report  # noqa: E402

from dermgan.metrics import MetricOptions, extract_features, fid, get_extractor, kid  # noqa: E402
from dermgan.runtime import pick_device  # noqa: E402


def domain_network(width: int) -> torch.nn.Module:
    from dermgan.models.classifier import SkinClassifier

    return SkinClassifier(n_classes=8, width=width)


def rendered(n: int, size: int, first_index: int = 0) -> np.ndarray:
    from dermgan.data.conditions import N_CONDITIONS
    from dermgan.data.synth import render_images

    indices = range(first_index, first_index + n)
    return render_images(indices, [i % N_CONDITIONS for i in indices], size, seed=0, workers=1)["images"]


def best_time(run, device: torch.device, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        run()
        if device.type == "cuda":
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - start)
    return best


def throughput(images, extractor, batch_size, device, repeats, precision="fp32") -> float:
    extract_features(images[:batch_size], extractor, batch_size, device, precision=precision)  # warm-up
    return len(images) / best_time(lambda: extract_features(images, extractor, batch_size, device,
                                                            precision=precision), device, repeats)


# ---------------------------------------------------------------------------------------------- (d) torch-fidelity

class _UInt8Images(torch.utils.data.Dataset):
    """What torch-fidelity's pipeline consumes: uint8 CHW tensors."""

    def __init__(self, images: np.ndarray):
        self.images = torch.from_numpy(images).permute(0, 3, 1, 2).contiguous()

    def __len__(self):
        return len(self.images)

    def __getitem__(self, index):
        return self.images[index]


def torch_fidelity_features(images: np.ndarray, weights: Path, batch_size: int, device: torch.device):
    from torch_fidelity.utils import create_feature_extractor, get_featuresdict_from_dataset

    cuda = device.type == "cuda"
    net = create_feature_extractor("inception-v3-compat", ["2048"], cuda=cuda,
                                   feature_extractor_weights_path=str(weights), verbose=False)
    return lambda: get_featuresdict_from_dataset(_UInt8Images(images), net, batch_size, cuda, save_cpu_ram=True,
                                                 verbose=False)["2048"].double().numpy()


def against_torch_fidelity(images, batch_size, device, repeats) -> list[dict]:
    ours = get_extractor("inception")
    with tempfile.TemporaryDirectory() as folder:
        weights = Path(folder) / "inception.pth"
        torch.save(ours.net.state_dict(), weights)  # the same mapped weights, loaded by torch-fidelity itself
        theirs = torch_fidelity_features(images, weights, batch_size, device)
        reference = theirs()  # also the warm-up
        ways = {"dermgan fp32 (extract_features)": "fp32",
                "dermgan bf16 autocast (05's default, metrics_precision.md)": "bf16"}
        mine = {name: extract_features(images, ours, batch_size, device, precision=p) for name, p in ways.items()}
        # Interleaved passes, best of each: on a shared machine the load changes between blocks of passes.
        times = dict.fromkeys(["theirs", *ways], float("inf"))
        for _ in range(repeats):
            times["theirs"] = min(times["theirs"], best_time(theirs, device, 1))
            for name, p in ways.items():
                times[name] = min(times[name], best_time(
                    lambda: extract_features(images, ours, batch_size, device, precision=p), device, 1))
    their_speed = len(images) / times["theirs"]
    rows = [{"pipeline": "torch-fidelity (get_featuresdict_from_dataset)", "images/s": their_speed, "ratio": 1.0}]
    for name in ways:
        speed = len(images) / times[name]
        rows.append({"pipeline": name, "images/s": speed, "ratio": speed / their_speed,
                     "max |feature diff|": float(np.abs(mine[name] - reference).max())})
    return rows


# ---------------------------------------------------------------------------------------------- (d) bf16 vs fp32

def bf16_against_fp32(real, generated, batch_size, device, repeats, n_bootstrap) -> list[dict]:
    extractor = get_extractor("inception")
    speeds, features = {}, {}
    for precision in ("fp32", "bf16"):
        both = np.concatenate([real, generated])
        extract_features(both[:batch_size], extractor, batch_size, device, precision=precision)  # warm-up
        start = time.perf_counter()
        features[precision] = extract_features(both, extractor, batch_size, device, precision=precision)
        speeds[precision] = len(both) / (time.perf_counter() - start)
    options = MetricOptions(n_bootstrap=n_bootstrap, kid_subset_size=min(100, len(real)))
    rows = []
    for metric in (fid, kid):
        results = {p: metric(f[:len(real)], f[len(real):], options, "inception") for p, f in features.items()}
        ref, low = results["fp32"], results["bf16"]
        half_width = (ref.interval[1] - ref.interval[0]) / 2
        change = low.value - ref.value
        rows.append({"metric": ref.metric, "n": len(real), "fp32": ref.value, "bf16": low.value, "change": change,
                     "interval half-width": half_width, "|change| / half-width": abs(change) / half_width,
                     "moves less than interval": bool(abs(change) < half_width),
                     "bf16 / fp32 images/s": speeds["bf16"] / speeds["fp32"]})
    return rows


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[8, 32], help="batch sizes for the throughput table")
    parser.add_argument("--n", type=int, default=32, help="images per timed pass")
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--width", type=int, default=32, help="SkinClassifier width for 'domain'")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--precision-n", type=int, default=100, help="images per set for the bf16 FID/KID check")
    parser.add_argument("--n-bootstrap", type=int, default=100)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--extractors", nargs="+",
                        default=["inception", "domain", "random-cnn", "pixel-stats"])
    args = parser.parse_args(argv)

    device = pick_device(args.device)
    images = rendered(args.n, args.image_size)
    rows = []
    for name in args.extractors:
        extractor = get_extractor(name, network=domain_network(args.width) if name == "domain" else None)
        row = {"extractor": name}
        for precision in ("fp32", "bf16"):
            for batch in args.sizes:
                label = f"batch {batch} images/s" if precision == "fp32" else f"bf16 batch {batch} images/s"
                row[label] = throughput(images, extractor, batch, device, args.repeats, precision)
        # the profiles pick the batch size by speed alone, which is only safe if it leaves the features alone
        by_batch = [extract_features(images, extractor, b, device, precision="bf16") for b in args.sizes]
        row["bf16 max abs diff across batch sizes"] = float(max(np.abs(f - by_batch[0]).max() for f in by_batch))
        rows.append(row)
    base = next((r for r in rows if r["extractor"] == "inception"), None)
    for row in rows:
        if base is not None:
            row["vs inception"] = row[f"batch {max(args.sizes)} images/s"] / base[f"batch {max(args.sizes)} images/s"]
    _report.write("metrics", "Metric feature extraction (images/s)", rows, list(rows[0]),
                  f"{args.n} synthetic images of {args.image_size} px per pass, best of {args.repeats}, device "
                  f"{device}; 'bf16' = under bf16 autocast. The last column: largest difference between the bf16 features "
                  "of the same images extracted at the different batch sizes (0 = the batch size changes speed only).")

    fidelity = against_torch_fidelity(images, max(args.sizes), device, args.repeats)
    _report.write("metrics_fidelity", "Inception features: dermgan against torch-fidelity's own pipeline",
                  fidelity, ["pipeline", "images/s", "ratio", "max |feature diff|"],
                  f"Same {args.n} synthetic images of {args.image_size} px, batch {max(args.sizes)}, device {device}; "
                  "the same weights. Target: ratio >= 1. The bf16 features differ from fp32 by the max shown; 05 "
                  "uses them because FID and KID move far less than their intervals (metrics_precision.md).")

    real = rendered(args.precision_n, args.image_size, first_index=10_000)
    other = rendered(args.precision_n, args.image_size, first_index=20_000)
    generated = np.clip(gaussian_filter(other.astype(np.float32), (0, 1, 1, 0)), 0, 255).round().astype(np.uint8)
    precision = bf16_against_fp32(real, generated, max(args.sizes), device, args.repeats, args.n_bootstrap)
    adopt = all(r["moves less than interval"] for r in precision)
    _report.write("metrics_precision", "Inception features in bf16 against fp32: FID / KID change vs interval",
                  precision, list(precision[0]),
                  f"Synthetic renders at {args.image_size} px against other renders blurred by 1 px, n = "
                  f"{args.precision_n} per set, intervals from {args.n_bootstrap} bootstrap replicates (fp32), "
                  f"device {device}. Reduced precision as the default: "
                  f"{'justified here' if adopt else 'NOT justified here (a metric moves by its interval or more)'}.",
                  extra={"adopt_bf16": adopt})


if __name__ == "__main__":
    main()
