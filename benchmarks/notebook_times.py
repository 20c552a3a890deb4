"""Issue 17 (e): wall time of every notebook, per executed series, read from the series' manifest.json: the
committed references (papermill_runs/*) with --references in run_all.py, else this checkout's own runs
(runs/*/executed).

    .venv/bin/python benchmarks/notebook_times.py

A manifest records the notebooks of its own run and, under `earlier_runs`, those kept from earlier partial
runs; both are listed, with the commit each ran at, so a reader sees whether a series came from one run.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _report  # noqa: E402
from dermgan.runtime import EXECUTED_FOLDER, executed_manifests  # noqa: E402


def series_of(manifest: Path) -> str:
    """papermill_runs/<series>/manifest.json or runs/<series>/executed/manifest.json -> <series>."""
    return manifest.parent.parent.name if manifest.parent.name == EXECUTED_FOLDER else manifest.parent.name


def rows_of(manifest: Path) -> list[dict]:
    record = json.loads(manifest.read_text())
    entries = [{**e, "git_commit": record.get("git_commit")} for e in record.get("notebooks", [])]
    entries += record.get("earlier_runs", [])
    return [{"series": series_of(manifest), "notebook": e["notebook"].removesuffix(".ipynb"),
             "status": e.get("status"),
             "wall s": e.get("wall_s"), "commit": (e.get("git_commit") or "?")[:7]
             + ("+dirty" if str(e.get("git_commit", "")).endswith("+dirty") else "")}
            for e in sorted(entries, key=lambda e: e["notebook"])]


def main() -> None:
    rows = []
    for manifest in executed_manifests("*"):
        series = rows_of(manifest)
        total = sum(r["wall s"] or 0 for r in series)
        rows += series + [{"series": series_of(manifest), "notebook": "**total**", "status": "",
                           "wall s": round(total, 1), "commit": ""}]
    _report.write("notebook_times", "(e) Wall time of every notebook, from the manifests", rows,
                  ["series", "notebook", "status", "wall s", "commit"],
                  notes="Targets: the whole smoke series <= 240 s and the whole cpu series (synthetic data) "
                        "<= 5400 s on 2 cores, 05_metrics <= 600 s.")


if __name__ == "__main__":
    main()
