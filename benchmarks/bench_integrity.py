"""What checking content hashes costs on load (dermgan.integrity): a cpu-profile dataset cache (4,000 images
at 64 px) and a ~200 MB checkpoint, each read with and without `verify_digest`, side by side in one process.

`python benchmarks/bench_integrity.py [--folder /tmp/x]`. The arrays are random bytes of the cpu cache's
shapes (hashing cost depends on the number of bytes only), so nothing is rendered. Files are read warm (page
cache), as a notebook reads the cache the previous one wrote; a cold read costs the disk's time either way.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from dermgan import integrity
from dermgan.data import dataset as ds
from dermgan.train import load_checkpoint, save_atomic
from dermgan.viz import markdown_table


def best_of(n: int, fn) -> float:
    times = []
    for _ in range(n):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def cpu_cache(folder: Path, n: int = 4000, size: int = 64) -> Path:
    """A dataset cache of the cpu profile's shapes written by _write_cache (random pixels, a real table)."""
    rng = np.random.default_rng(0)
    small = ds.make_synthetic(32, 40, seed=0, workers=1).table
    table = pd.concat([small] * (n // len(small)), ignore_index=True)
    table["image_id"] = [f"syn0_{i:06d}" for i in range(n)]
    data = ds.SkinData("synthetic", tuple(str(c) for c in range(8)),
                       rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8),
                       rng.integers(0, 2, (n, size, size), dtype=np.uint8),
                       rng.integers(0, 2, (n, size, size), dtype=np.uint8), table,
                       rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8))
    target = folder / "cache"
    ds._write_cache(data, target, {"dataset": "synthetic", "image_size": size, "n_images": n})
    return target


def timed_without_hashing(fn):
    """fn with verify_digest a no-op (what loading cost before the hashes)."""
    import dermgan.train

    def run():
        real = integrity.verify_digest
        integrity.verify_digest = dermgan.train.verify_digest = lambda *a, **k: None
        try:
            fn()
        finally:
            integrity.verify_digest = dermgan.train.verify_digest = real
    return run


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--folder", default=None, help="where to write the files (default: a temp folder)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(dir=args.folder) as scratch:
        folder = Path(scratch)
        cache = cpu_cache(folder)
        cache_mb = sum(p.stat().st_size for p in cache.iterdir() if not p.name.endswith(".sha256")) / 2**20
        checkpoint = folder / "big.pt"
        save_atomic({"weights": torch.zeros(50 * 2**20, dtype=torch.float32)}, checkpoint)  # 200 MiB
        big_mb = checkpoint.stat().st_size / 2**20

        def read_cache():
            ds._read_cache(cache)

        def read_checkpoint():
            load_checkpoint(checkpoint)

        rows = []
        for what, mb, fn in (("cpu dataset cache (4,000 x 64 px)", cache_mb, read_cache),
                             ("checkpoint", big_mb, read_checkpoint)):
            fn()  # warm the page cache
            plain, hashed = [], []
            for _ in range(3):  # alternated: both see the same machine load
                plain.append(best_of(1, timed_without_hashing(fn)))
                hashed.append(best_of(1, fn))
            rows.append({"file": what, "MB": round(mb, 1), "load s": round(min(plain), 3),
                         "load + SHA-256 s": round(min(hashed), 3),
                         "hash cost s": round(min(hashed) - min(plain), 3),
                         "x load": round(min(hashed) / min(plain), 2)})
        print(markdown_table(pd.DataFrame(rows)), end="")
        print("\nbest of 3 alternated reads each; warm page cache")


if __name__ == "__main__":
    main()
