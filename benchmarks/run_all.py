"""Run every benchmark and collect their tables into benchmarks/README.md: `make benchmarks`.

    .venv/bin/python benchmarks/run_all.py [--quick]

Each benchmark runs in its own process (so memory figures are its own) and writes results/<name>.{json,md};
this script then writes README.md from those tables, with the machine they ran on. --quick passes smaller
sizes for a fast look; the committed README comes from a run without it.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import _report  # noqa: E402

BENCHMARKS = {  # script -> (full arguments, quick arguments); result files they write
    "bench_train_step.py": ([], ["--sizes", "64", "--steps", "4", "--rounds", "1"]),
    "bench_sampling.py": ([], ["--n", "32", "--repeats", "1"]),
    "bench_data.py": ([], ["--n", "64"]),
    "bench_metrics.py": ([], []),
    "bench_render.py": ([], ["--skip-dataset", "--n", "8"]),
    "bench_classifier.py": ([], ["--sizes", "64", "--n", "128"]),
    "notebook_times.py": ([], []),
}
ORDER = ["train_step", "sampling", "data", "metrics", "render", "classifier", "notebook_times"]


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--only", nargs="*", default=None, help="script names to run (default: all)")
    args = parser.parse_args(argv)
    env = {**os.environ, "DERMGAN_BATCH": "1"}
    for script, (full, quick) in BENCHMARKS.items():
        if args.only and script not in args.only:
            continue
        print(f"== {script}", flush=True)
        subprocess.run([sys.executable, str(HERE / script), *(quick if args.quick else full)], check=True, env=env)
    tables = [(HERE / "results" / f"{name}.md") for name in ORDER]
    extra = sorted(p for p in (HERE / "results").glob("*.md") if p not in tables)
    machine = _report.machine()
    text = ["# Benchmarks", "",
            "Produced by one command, `make benchmarks` (= `.venv/bin/python benchmarks/run_all.py`). Every target is a",
            "ratio of two things measured side by side in one process; absolute numbers hold only for this machine.",
            "", f"Machine: {machine['cpu']}, {machine['cores']} cores, torch {machine['torch']} with "
            f"{machine['torch_threads']} threads, GPU: {machine['cuda'] or 'none'}.", ""]
    text += [with_machine(p, machine) for p in tables + extra if p.exists()]
    (HERE / "README.md").write_text("\n".join(text))
    print(f"wrote {HERE / 'README.md'}")


def with_machine(table: Path, here: dict) -> str:
    """A table's Markdown, plus the machine it was measured on when that is not the machine named at the top
    (e.g. the CUDA tables, measured on a GPU machine)."""
    text = table.read_text()
    record = table.with_suffix(".json")
    if not record.exists():
        return text
    measured = json.loads(record.read_text()).get("machine") or {}
    keys = ("cpu", "cores", "cuda")
    if measured and any(measured.get(k) != here.get(k) for k in keys):
        text += (f"\nMeasured on another machine: {measured.get('cpu')}, {measured.get('cores')} cores, "
                 f"GPU: {measured.get('cuda') or 'none'}, torch {measured.get('torch')}.\n")
    return text


if __name__ == "__main__":
    main()
