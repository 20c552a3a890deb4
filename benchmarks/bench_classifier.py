"""Issue 26: what notebook 07's classifiers cost per epoch on HAM10000-size data, at 64, 96 and 128 px input.

    .venv/bin/python benchmarks/bench_classifier.py [--sizes 64 96 128] [--n 640] [--threads 2]

For each input size, an epoch of `dermgan.classify.train_classifier` (batch 64, flips, no validation) on
`--n` images of 64 px (the cpu profile's data; the pretrained network resizes them to the input size), scaled
to the 7,011 training images of HAM10000's split: the small CNN from scratch (its input is the data, so it
runs at the data size), EfficientNet-Lite0 fine-tuned whole (train_from 0) and with its trunk frozen before
stage 5, 6 or 7, trained from a TrunkCache. A cached recipe pays the trunk once per run (four flip variants of
every image: "cache s" is that cost for the 7,011 images), then only its top per epoch and seed.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time

import numpy as np
import torch

from dermgan.classify import TrunkCache, train_classifier
from dermgan.config import ClassifierConfig
from dermgan.data.dataset import make_synthetic
from dermgan.models.classifier import PretrainedClassifier, SkinClassifier

sys.path.insert(0, __file__.rsplit("/", 1)[0])
import _report  # noqa: E402

HAM10000_TRAIN = 7011  # images in HAM10000's training split (dermgan.data.sources: 70 % of 10,015, by lesion)
RECIPES = {"small CNN (width 16)": None, "EfficientNet-Lite0, all trained": 0,
           "EfficientNet-Lite0, from stage 5": 5, "EfficientNet-Lite0, from stage 6": 6,
           "EfficientNet-Lite0, from stage 7": 7}


def clocks() -> np.ndarray:
    return np.array([time.perf_counter(), time.process_time()])


def epoch_seconds(train, cfg, build, cache=None) -> np.ndarray:
    """(wall, CPU) seconds per epoch without the fixed costs (building the network, reading the cache): the
    difference between a 3-epoch and a 1-epoch run, halved."""
    spent = []
    for epochs in (1, 3):
        start = clocks()
        settings = dataclasses.replace(cfg, epochs=epochs)
        train_classifier(train, None, settings, seed=0, build=build, cache=cache)
        spent.append(clocks() - start)
    return (spent[1] - spent[0]) / 2


def trained_parameters(model) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def measure(size: int, train, cfg, small: bool) -> list[dict]:
    """Every recipe at input size `size` (the small CNN, whose input is the data, only when `small`)."""
    scale = HAM10000_TRAIN / len(train)
    rows = []
    for name, train_from in RECIPES.items():
        if train_from is None and not small:
            continue
        if train_from is None:
            build = lambda: SkinClassifier(len(train.classes), 16)  # noqa: E731
        else:
            build = lambda t=train_from: PretrainedClassifier(len(train.classes), size, t)  # noqa: E731
        cache, cache_s = None, np.zeros(2)
        if train_from:
            start = clocks()
            cache = TrunkCache(build(), batch_size=cfg.batch_size)
            for variant in range(4):
                cache.features(train, variant)
            cache_s = (clocks() - start) * scale
        seconds = epoch_seconds(train, cfg, build, cache) * scale
        rows.append({"input px": size if train_from is not None else 64, "recipe": name,
                     "cache s (once)": round(cache_s[0], 1), "cache CPU s": round(cache_s[1], 1),
                     "s/epoch": round(seconds[0], 1), "CPU s/epoch": round(seconds[1], 1),
                     "trained params (M)": round(trained_parameters(build()) / 1e6, 2)})
        print(rows[-1], flush=True)
    return rows


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 96, 128])
    parser.add_argument("--n", type=int, default=640)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    data = make_synthetic(64, args.n + 50, seed=0)
    train = data.select(np.arange(args.n))
    cfg = dataclasses.replace(ClassifierConfig(), epochs=1, batch_size=64, balance="none", augment=True)
    rows = [row for k, size in enumerate(args.sizes) for row in measure(size, train, cfg, small=k == 0)]
    note = (f"An epoch (a 3-epoch run minus a 1-epoch run, halved) of dermgan.classify.train_classifier on "
            f"{args.n} synthetic 64 px images (batch 64, flips, AdamW), scaled to HAM10000's "
            f"{HAM10000_TRAIN} training images; torch with {args.threads} threads. 'cache s': computing the "
            "frozen trunk's outputs for the four flip variants of every training image, paid once per run and "
            "shared by every seed and arm (then 's/epoch' is the top's training alone). Wall and process CPU seconds (all "
            "threads): on a loaded machine the CPU seconds are the steadier.")
    _report.write("classifier", "Notebook 07's classifiers: seconds per epoch by input size", rows,
                  list(rows[0]), note, {"n": args.n, "threads": args.threads, "sizes": args.sizes})


if __name__ == "__main__":
    main()
