"""Run every benchmark and collect their tables into a README.md: `make benchmarks`.

    .venv/bin/python benchmarks/run_all.py [--quick] [--only SCRIPT ...] [--references]

Each benchmark runs in its own process (so memory figures are its own) and writes results/<name>.{json,md};
this script then writes README.md from those tables, with the machine they ran on. A user's run writes under
runs/benchmarks/ (git ignores it): the committed tables in benchmarks/results and benchmarks/README.md change
only with --references (`make benchmark-references`, for maintainers). It says what it runs and how long that
took last time (results/timings.json), and prints a line every minute a benchmark is silent. --quick passes
smaller sizes for a fast look; the committed README comes from a run without it.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from dermgan.runtime import REFERENCES_VARIABLE, Heartbeat, duration, write_text_atomic

HERE = Path(__file__).resolve().parent

BENCHMARKS = {  # script -> (full arguments, quick arguments); result files they write
    "bench_train_step.py": ([], ["--sizes", "64", "--steps", "4", "--rounds", "1"]),
    "bench_discriminators.py": ([], ["--steps", "4", "--rounds", "1", "--input-sizes", "64"]),
    "bench_sampling.py": ([], ["--n", "32", "--repeats", "1"]),
    "bench_data.py": ([], ["--n", "64"]),
    "bench_metrics.py": ([], []),
    "bench_render.py": ([], ["--skip-dataset", "--n", "8"]),
    "notebook_times.py": ([], []),
}
ORDER = ["train_step", "discriminators", "sampling", "data", "metrics", "render", "notebook_times"]
TIMINGS = "timings.json"  # wall time of each script in the last run, per mode (full / quick)
# Until a run has recorded its timings: what issue 27 measured for the whole set (2 CPU cores, a busy host).
UNTIMED = "not recorded yet; the whole set took about 14 min on 2 CPU cores when last timed (issue 27)"


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller sizes for a fast look (default: off)")
    parser.add_argument("--only", nargs="*", default=None, help="script names to run (default: all)")
    parser.add_argument("--references", action="store_true",
                        help="maintainers: refresh the committed benchmarks/results and README.md "
                             "(default: off)")
    args = parser.parse_args(argv)
    if args.references:  # before _report is imported: it picks the results folder from this
        os.environ[REFERENCES_VARIABLE] = "1"
    sys.path.insert(0, str(HERE))
    import _report

    results = _report.RESULTS
    scripts = [s for s in BENCHMARKS if not args.only or s in args.only]
    mode = "quick" if args.quick else "full"
    # the last run's times in this results folder, else the committed reference run's
    recorded = map(recorded_timings, (results, _report.REFERENCE_RESULTS))
    expected = next((t[mode] for t in recorded if mode in t), {})
    print(plan_text(scripts, expected, results), flush=True)
    env = {**os.environ, "DERMGAN_BATCH": "1"}
    timings = {}
    for script in scripts:
        full, quick = BENCHMARKS[script]
        about = f" (last time {duration(expected[script])})" if script in expected else ""
        print(f"== {script}{about}", flush=True)
        began = time.monotonic()
        def silent(script=script, began=began) -> str:
            return f"   still running: {script}, {duration(time.monotonic() - began)} so far"

        with Heartbeat(silent, every=60.0):
            subprocess.run([sys.executable, str(HERE / script), *(quick if args.quick else full)], check=True,
                           env=env)
        timings[script] = round(time.monotonic() - began, 1)
    record = recorded_timings(results)
    record[mode] = {**record.get(mode, {}), **timings}
    write_text_atomic(results / TIMINGS, json.dumps(record, indent=2) + "\n")
    readme = write_readme(_report, results)
    print(f"wrote {readme} (tables in {results})")


def recorded_timings(folder: Path) -> dict:
    """{mode: {script: seconds}} from a results folder's timings.json ({} when it has none)."""
    try:
        return json.loads((folder / TIMINGS).read_text())
    except (OSError, ValueError):
        return {}


def plan_text(scripts: list[str], expected: dict, results: Path) -> str:
    """What will run and for about how long, before it starts."""
    timed = [s for s in scripts if s in expected]
    total = sum(expected[s] for s in timed)
    if len(timed) == len(scripts):
        how_long = f"about {duration(total)} (their times last run)"
    elif timed:
        how_long = f"at least {duration(total)} ({len(scripts) - len(timed)} of them not timed yet)"
    else:
        how_long = UNTIMED
    return f"benchmarks: {', '.join(scripts)}\nexpected duration: {how_long}\nresults: {results}"


def write_readme(_report, results: Path) -> Path:
    """README.md beside the results folder, from every table in it."""
    tables = [results / f"{name}.md" for name in ORDER]
    extra = sorted(p for p in results.glob("*.md") if p not in tables)
    machine = _report.machine()
    text = ["# Benchmarks", "",
            "Produced by one command, `make benchmarks` (= `.venv/bin/python benchmarks/run_all.py`). Every target is a",
            "ratio of two things measured side by side in one process; absolute numbers hold only for this machine.",
            "", f"Machine: {machine['cpu']}, {machine['cores']} cores, torch {machine['torch']} with "
            f"{machine['torch_threads']} threads, GPU: {machine['cuda'] or 'none'}.", ""]
    text += [with_machine(p, machine) for p in tables + extra if p.exists()]
    readme = results.parent / "README.md"
    write_text_atomic(readme, "\n".join(text))
    return readme


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
