"""Issue 17 (e): wall time of every notebook, per executed series, read from papermill_runs/*/manifest.json.

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

ROOT = Path(__file__).resolve().parents[1]


def rows_of(manifest: Path) -> list[dict]:
    record = json.loads(manifest.read_text())
    entries = [{**e, "git_commit": record.get("git_commit")} for e in record.get("notebooks", [])]
    entries += record.get("earlier_runs", [])
    series = manifest.parent.name
    return [{"series": series, "notebook": e["notebook"].removesuffix(".ipynb"), "status": e.get("status"),
             "wall s": e.get("wall_s"), "commit": (e.get("git_commit") or "?")[:7]
             + ("+dirty" if str(e.get("git_commit", "")).endswith("+dirty") else "")}
            for e in sorted(entries, key=lambda e: e["notebook"])]


def main() -> None:
    rows = []
    for manifest in sorted((ROOT / "papermill_runs").glob("*/manifest.json")):
        series = rows_of(manifest)
        total = sum(r["wall s"] or 0 for r in series)
        rows += series + [{"series": manifest.parent.name, "notebook": "**total**", "status": "",
                           "wall s": round(total, 1), "commit": ""}]
    _report.write("notebook_times", "(e) Wall time of every notebook, from the manifests", rows,
                  ["series", "notebook", "status", "wall s", "commit"],
                  notes="Targets: the whole smoke series <= 240 s and the whole cpu series (synthetic data) "
                        "<= 5400 s on 2 cores, 05_metrics <= 600 s.")


if __name__ == "__main__":
    main()
