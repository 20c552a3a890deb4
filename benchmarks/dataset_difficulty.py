"""How hard is the synthetic dataset? Train the small CNN from scratch and report test scores.

A measurement, not a test: the renderer is tuned so that a profile's classifier reaches a balanced accuracy of
roughly 0.5-0.9 on the test split, with lower recall on the rare malignant classes than on the common ones.

    .venv/bin/python benchmarks/dataset_difficulty.py --profile cpu [--cache-dir runs/cpu/data] [--seed 0]
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

from dermgan.classify import evaluate, train_classifier
from dermgan.config import get_profile
from dermgan.data import load_dataset
from dermgan.data.conditions import MALIGNANT
from dermgan.runtime import seed_everything


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="cpu")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cache-dir", default=None, help="dataset cache folder (default: render in memory)")
    parser.add_argument("--epochs", type=int, default=None, help="override the profile's classifier epochs")
    parser.add_argument("--json", default=None, help="also write the scores to this file")
    args = parser.parse_args(argv)

    profile = get_profile(args.profile).replace(classifier={"epochs": args.epochs})
    seed_everything(args.seed)
    cfg = profile.data
    start = time.perf_counter()
    data = load_dataset("synthetic", image_size=cfg.image_size, n_images=cfg.n_images, seed=args.seed,
                        cache_dir=args.cache_dir, val_fraction=cfg.val_fraction,
                        test_fraction=cfg.test_fraction)
    print(f"dataset: {len(data)} images at {data.image_size} px ({time.perf_counter() - start:.1f} s)")
    start = time.perf_counter()
    print(f"training: {profile.classifier}")

    def log(row):
        print("  " + "  ".join(f"{k}={v:.3f}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items())
              + f"  ({time.perf_counter() - start:.0f} s)", flush=True)

    model, history = train_classifier(data.split("train"), data.split("val"), profile.classifier, "cpu",
                                      args.seed, log=log)
    scores = evaluate(model, data.split("test"), "cpu")
    print(f"\ntest balanced accuracy {scores['balanced_accuracy']:.3f}  accuracy {scores['accuracy']:.3f}  "
          f"macro F1 {scores['macro_f1']:.3f}")
    print(f"{'condition':<26}{'malignant':>10}{'recall':>8}{'n test':>8}")
    counts = np.asarray(scores["confusion_matrix"]).sum(axis=1)
    for (name, recall), malignant, n in zip(scores["per_class_recall"].items(), MALIGNANT, counts):
        print(f"{name:<26}{str(malignant):>10}{recall:>8.3f}{n:>8d}")
    recalls = np.array(list(scores["per_class_recall"].values()))
    print(f"mean recall: benign {recalls[~np.array(MALIGNANT)].mean():.3f}, "
          f"malignant {recalls[np.array(MALIGNANT)].mean():.3f}")
    print("confusion matrix (rows = truth):")
    print(np.array(scores["confusion_matrix"]))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"profile": args.profile, "seed": args.seed, **scores, "history": history}, f, indent=2)
    return scores


if __name__ == "__main__":
    main()
