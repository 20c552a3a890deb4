"""The executed series committed under papermill_runs/ are what the README reports: each must be one run of one
clean commit (no notebook left over from an older commit or made from uncommitted code), and the synthetic
series must be complete, so that `make reproduce` at that commit regenerates every reported number."""

import json
from pathlib import Path

import pytest

from dermgan import pipeline

ROOT = Path(__file__).resolve().parents[1]
SERIES = sorted(p.name for p in (ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
REPORTED = sorted(p.parent.name for p in (ROOT / "papermill_runs").glob("*/manifest.json"))
COMPLETE = {"smoke", "cpu"}  # the synthetic series: every notebook runs there


def entry(notebook, status="ok", commit=None):
    return {"notebook": notebook, "status": status, **({"git_commit": commit} if commit else {})}


def test_the_check_finds_spanned_dirty_and_incomplete_runs():
    a, b = "a" * 40, "b" * 40
    one = {"git_commit": a, "notebooks": [entry("00_x.ipynb"), entry("01_y.ipynb")], "earlier_runs": []}
    assert pipeline.reported_run_problems(one, ["00_x.ipynb", "01_y.ipynb"]) == []
    # a --only call on top of an older run: the earlier entry keeps its own commit
    spanned = {"git_commit": b, "notebooks": [entry("01_y.ipynb")], "earlier_runs": [entry("00_x.ipynb", commit=a)]}
    assert pipeline.reported_run_problems(spanned) == ["spans commits: aaaaaaa: 00; bbbbbbb: 01"]
    dirty = {**one, "git_commit": a + "+dirty"}
    assert pipeline.reported_run_problems(dirty) == ["notebooks at a commit with uncommitted changes: 00 01"]
    # a failed notebook is not a result; its good copy from before would be an earlier entry
    failed = {"git_commit": a, "notebooks": [entry("00_x.ipynb"), entry("01_y.ipynb", "failed")], "earlier_runs": []}
    assert pipeline.reported_run_problems(failed, ["00_x.ipynb", "01_y.ipynb"]) == ["not executed: 01_y.ipynb"]


@pytest.mark.parametrize("run", REPORTED)
def test_every_reported_run_is_one_clean_commit(run):
    manifest = json.loads((ROOT / "papermill_runs" / run / "manifest.json").read_text())
    assert pipeline.reported_run_problems(manifest, SERIES if run in COMPLETE else None) == []


def test_the_synthetic_series_are_reported():
    assert COMPLETE <= set(REPORTED)
