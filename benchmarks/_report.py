"""What every benchmark shares: the machine it ran on, and writing its result as JSON + a Markdown table.

Results go to <results>/<name>.json and <name>.md (written atomically); `run_all.py` collects the Markdown
tables into a README.md beside them. <results> is runs/benchmarks/results under the project root, which git
ignores, unless the run refreshes the committed references (`run_all.py --references`, `make
benchmark-references`, i.e. DERMGAN_REFERENCES=1): then benchmarks/results, collected into
benchmarks/README.md. Numbers compare only within one run on one machine: every speed target is a ratio of two
things measured side by side in the same process.
"""

from __future__ import annotations

import json
import os
import platform
from pathlib import Path

import torch

from dermgan.runtime import project_root, refreshing_references

REFERENCE_RESULTS = Path(__file__).resolve().parent / "results"  # committed: refreshed by maintainers only
LOCAL_RESULTS = project_root() / "runs" / "benchmarks" / "results"  # a user's own run
RESULTS = REFERENCE_RESULTS if refreshing_references() else LOCAL_RESULTS


def machine() -> dict:
    """Where the numbers were measured."""
    cpu = platform.processor() or platform.machine()
    try:  # the model name is more telling than the architecture
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "python": platform.python_version(),
    }


def markdown_table(rows: list[dict], columns: list[str]) -> str:
    def cell(value):
        if isinstance(value, float):
            return f"{value:.3g}" if abs(value) < 1000 else f"{value:.0f}"
        return str(value)

    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(r.get(c, "")) for c in columns) + " |" for r in rows]
    return "\n".join(lines)


def write(name: str, title: str, rows: list[dict], columns: list[str], notes: str = "", extra: dict | None = None
          ) -> str:
    """Write results/<name>.json and results/<name>.md; return the Markdown (title, table, notes)."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    record = {"name": name, "title": title, "machine": machine(), "rows": rows, "notes": notes, **(extra or {})}
    text = f"### {title}\n\n{markdown_table(rows, columns)}\n" + (f"\n{notes}\n" if notes else "")
    for suffix, content in ((".json", json.dumps(record, indent=2, default=str) + "\n"), (".md", text)):
        target = RESULTS / f"{name}{suffix}"
        tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}")
        tmp.write_text(content)
        os.replace(tmp, target)
    print(text)
    return text


def open_run(doc: str, argv=None):
    """The run directory a benchmark reads (--run-dir, --profile): its context and dataset."""
    import argparse

    import dermgan.runtime
    from dermgan.data import load_for_run

    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--run-dir", default="runs/cpu")
    parser.add_argument("--profile", default="cpu")
    args = parser.parse_args(argv)
    ctx = dermgan.runtime.start(args.profile, args.run_dir)
    return ctx, load_for_run(ctx)


def reference_rows(rng, n_samples: int, n_total: int):
    """Rows of a set as notebook 05 draws them (sorted, without replacement), so a benchmark scores 05's sets."""
    import numpy as np

    return np.sort(rng.choice(n_total, size=min(n_samples, n_total), replace=False))


def blurred(images, sigma: float = 1.0):
    """Notebook 05's "blurred real" reference: uint8 images under a Gaussian of `sigma` px (rows and columns)."""
    import numpy as np
    from scipy.ndimage import gaussian_filter

    return np.clip(gaussian_filter(images.astype(np.float32), (0, sigma, sigma, 0)), 0, 255).round().astype(np.uint8)


def kid_and_precision(real, generated, options) -> dict:
    """Whole-set Inception KID and precision as 05 reports them: {kid, kid_lo, kid_hi, precision, precision_lo,
    precision_hi} (95% bootstrap interval ends), for two metrics.ImageSet and 05's MetricOptions."""
    from dermgan import metrics as M

    table = M.results_table(M.evaluate(real, generated, options, metrics=("kid", "precision_recall")))
    overall = table[table["group"].isna()].drop_duplicates("metric").set_index("metric")
    return {key: float(overall.loc[metric, column]) for metric in ("kid", "precision")
            for key, column in ((metric, "value"), (f"{metric}_lo", "lo"), (f"{metric}_hi", "hi"))}
